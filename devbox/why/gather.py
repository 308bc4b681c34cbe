"""Gather the evidence ``devbox why`` ranks, through the platform's HTTP API (like every CLI read).

A target is an alert rule (its name or ``group/name`` id) or a service. For an alert, the moment
is its last firing at or before ``--at`` (default now) and the service is taken from the firing
alert's labels (``callee``, ``service``, ``job``) or from the rule's expression; the windows are
``[at - window, at]`` and the one before it. Besides the spans (whose pick events carry the callers'
circuit-breaker state), it reads the deploy events, fault rules, routing rules, instances, and the
breaker settings of each registered service.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from devbox.diff.profile import span_of
from devbox.snapshot.collect import Collector, Platform
from devbox.why.rank import Case, rank

SERVICE_LABELS = ("callee", "service", "job", "service_name")


def parse_at(text: str | None, now: float) -> float:
    if text is None:
        return now
    for parse in (float, lambda t: datetime.fromisoformat(t).timestamp()):
        try:
            return float(parse(text))
        except ValueError:
            pass
    from devbox.cli.release import parse_duration

    return now - parse_duration(text)


def _alert_service(rule: dict[str, Any], transition: dict[str, Any] | None) -> str | None:
    labels = (transition or {}).get("labels") or {}
    for key in SERVICE_LABELS:
        if labels.get(key):
            return str(labels[key])
    if transition and transition.get("service"):
        return str(transition["service"])
    m = re.search(r'(?:callee|service|job)\s*=~?\s*"([\w.-]+)"', str(rule.get("expr") or ""))
    return m.group(1) if m else None


def resolve_target(c: Collector, target: str, at: float, explicit_at: bool) -> tuple[str, float, str]:
    """``(service, at, headline)`` for an alert rule or a service name. LookupError when neither."""
    rules = (c._maybe("/api/alerts/rules") or {}).get("rules", [])
    rule = next((r for r in rules if target in (r.get("name"), r.get("id"))), None)
    if rule is not None:
        history = (c._maybe("/api/alerts/history", rule=rule["id"], limit=200) or {}).get("transitions", [])
        fired = [t for t in history if t.get("to") == "firing" and float(t.get("at") or 0) <= at]
        last = max(fired, key=lambda t: float(t["at"])) if fired else None
        service = _alert_service(rule, last)
        if service is None and last is None:
            raise LookupError(f"alert {target} has not fired (up to {time.strftime('%H:%M:%S', time.localtime(at))})"
                              ": nothing to explain yet; for a service's trouble now, ask `devbox why SERVICE`")
        if service is None:
            raise LookupError(f"alert {target}: cannot tell which service it is about (no callee/service label); "
                              "ask `devbox why SERVICE`")
        when = at if explicit_at or last is None else float(last["at"])
        state = f"fired at {time.strftime('%H:%M:%S', time.localtime(when))}" if last else "has not fired"
        return service, when, f"alert {rule['name']} ({service}) {state}; likely causes:"
    services = {str(s.get("name")) for s in c._maybe("/api/naming/services") or []}
    services |= set((c._maybe("/api/traces/services") or {}).get("services", []))
    if target not in services and target.lower() not in {s.lower() for s in services}:
        known = ", ".join(sorted(services))
        raise LookupError(f"{target!r} is neither an alert rule nor a service (services: {known})")
    return target, at, f"{target} at {time.strftime('%H:%M:%S', time.localtime(at))}; likely causes:"


def breaker_settings(c: Collector, instances: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The circuit-breaker settings naming hands the callers of each registered service, for those that
    have their own (the breakers' state is the callers': the ranking reads it from their spans)."""
    out: dict[str, dict[str, Any]] = {}
    for namespace, service in sorted({(str(i.get("namespace") or "default"), str(i.get("service")))
                                      for i in instances}):
        settings = (c._maybe(f"/api/naming/services/{namespace}/{service}") or {}).get("circuit_breaker")
        if settings:
            out[service.lower()] = dict(settings)
    return out


def gather(platform: Platform, target: str, *, at: str | None = None, window: float = 120.0) -> dict[str, Any]:
    """The ranked suspects for ``target`` (see the module docstring), as JSON with a headline."""
    now = time.time()
    with Collector(platform) as c:
        service, moment, headline = resolve_target(c, target, parse_at(at, now), at is not None)
        start = moment - window
        spans_now = c.spans(c.trace_ids(start, moment))
        spans_before = c.spans(c.trace_ids(start - window, start))
        deploy = (c._maybe("/api/deploy/events", limit=5000) or {}).get("events", [])
        instances = c._maybe("/api/naming/instances") or []
        case = Case(
            service=service.lower(), at=moment, window=window,
            now=[span_of(r) for r in spans_now], before=[span_of(r) for r in spans_before],
            deploy_events=[e for e in deploy if start - window <= float(e.get("ts") or 0) <= moment],
            faults=(c._maybe("/api/faults") or {}).get("faults", []),
            routing_rules=c._maybe("/api/naming/rules") or [],
            instances=instances,
            breakers=breaker_settings(c, instances),
        )
    report = rank(case)
    report["headline"] = headline
    report["notes"] = [f"read {report['traces']} traces in the {window:g} s before and {report['traces_before']} "
                       f"in the {window:g} s before that; path: {', '.join(report['path'])}"]
    return report
