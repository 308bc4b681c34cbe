"""What a pick leaves on the current OTel span, and how the watch keeps out of the caller's trace.

Owns :func:`record_pick` — every pick adds a ``devbox.naming.pick`` span event (so a span that picks
several times, a gateway's, keeps every decision) and sets the ``devbox.naming.*`` attributes
(which say the last pick) —, :func:`record_unresolved` — a pick that found no instance adds a
``devbox.naming.unresolved`` event: the call is never sent, so no CLIENT span says it was tried —
and :func:`untraced`, which detaches the watch's long-polls from the
request that first asked for a service.
"""

from __future__ import annotations

from typing import Any

from devbox.polaris.routing import RouteResult
from devbox.sdk.naming.instance import Instance
from devbox.sdk.naming.labels import otel_api


def untraced() -> None:
    """Detach the current task from any trace and switch OTel instrumentation off in it.

    Tasks copy their creator's context, so without this the watch's long-polls would show up
    as CLIENT spans inside whatever request first asked for the service."""
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY
    except ImportError:  # pragma: no cover
        return
    otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, otel_context.Context()))


def record_pick(service: str, chosen: Instance, result: RouteResult, balancer: str, breaker: str = "") -> None:
    """Record one pick on the current span, if it records.

    The ``devbox.naming.pick`` event is the record of each decision: a span that picks more than
    once (a gateway, a failover) keeps them all, in order. The ``devbox.naming.*`` attributes are
    kept for filtering and for readers that want the span's outcome; they say the last pick only.
    ``breaker`` is the chosen instance's breaker state at the pick; the instances its breaker kept
    out are listed too (by address and id), so `devbox explain` can say what the breakers did *then*
    — the breaker state read later is another moment's. When every instance was out and recover-all
    kept them, none was skipped, so none is listed.
    """
    otel = otel_api()
    if otel is None:  # pragma: no cover
        return
    span = otel[1].get_current_span()
    if not span.is_recording():
        return
    skipped = [] if result.recovered_all else [
        i for step in result.steps if step.filter == "circuit_breaker" for i in step.removed_instances]
    pick: dict[str, Any] = {
        "service": service,
        "instance": chosen.address,
        "instance_id": chosen.id,
        "rule": result.rule or "",
        "destination": result.destination or "",
        "reason": result.reason,
        "balancer": balancer,
        "filtered": list(result.removed_labels()),
        "candidates": len(result.instances),
        "failover": result.failover,
        "breaker": breaker,
        "breaker_open": [f"{i.host}:{i.port}" for i in skipped],
        "breaker_open_ids": [str(i.id) for i in skipped],
    }
    span.add_event("devbox.naming.pick", pick)
    span.set_attributes({f"devbox.naming.{key}": value for key, value in pick.items()})


def record_unresolved(service: str, reason: str) -> None:
    """Record on the current span that a call to ``service`` found no instance (health, breakers and
    routing left none), so trace readers (``devbox why``) see where the call stopped and why."""
    otel = otel_api()
    if otel is None:  # pragma: no cover
        return
    span = otel[1].get_current_span()
    if span.is_recording():
        span.add_event("devbox.naming.unresolved", {"service": service, "reason": reason[:300]})
