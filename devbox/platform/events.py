"""Typed event hooks: the seam components talk through (after Locust's ``events``).

A component fires an event; any other component may listen without either importing the other's
internals. Listeners run synchronously in the firing thread, in registration order; one failing
listener is logged and does not stop the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LOG = logging.getLogger(__name__)


class EventHook:
    """A list of listeners called with keyword arguments by :meth:`fire`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._listeners: list[Callable[..., Any]] = []

    def add_listener(self, listener: Callable[..., Any]) -> Callable[..., Any]:
        self._listeners.append(listener)
        return listener

    def remove_listener(self, listener: Callable[..., Any]) -> None:
        self._listeners.remove(listener)

    def listening(self) -> bool:
        """Whether any listener is registered (a producer may skip building what nobody reads)."""
        return bool(self._listeners)

    def fire(self, **kwargs: Any) -> None:
        for listener in list(self._listeners):
            try:
                listener(**kwargs)
            except Exception:
                LOG.exception("listener %r of event %s failed", listener, self.name)


class Events:
    """Every event of the platform. Each docstring lists the keyword arguments it is fired with."""

    def __init__(self) -> None:
        self.spans_ingested = EventHook("spans_ingested")
        """Spans were accepted by the trace collector. ``spans``: list of :class:`devbox.mocks.tracing.models.Span`.
        Listening costs: the collector then ships every span back from its indexer process as an
        object (~15 µs a span of the platform's CPU) — prefer ``rpc_aggregates`` where it serves."""

        self.rpc_aggregates = EventHook("rpc_aggregates")
        """RPC counter increments the trace collector derived from a batch of spans it indexed
        (CLIENT spans: caller reports, SERVER spans: callee reports, peers resolved as described in
        :mod:`devbox.mocks.tracing.rpcstats`). ``aggregates``: ``{(side, base_labels): [{(code,
        status): calls}, calls_per_latency_bucket, calls, latency_sum_us]}`` with latency buckets
        bounded by the project's ``metrics.rpc_buckets`` (:data:`devbox.mocks.tracing.rpcstats.Aggregates`)."""

        self.instance_changed = EventHook("instance_changed")
        """An instance was registered, deregistered or changed health. ``service``, ``namespace``,
        ``instance_id``, ``change`` (registered|deregistered|healthy|unhealthy|isolated|updated)."""

        self.deploy_event = EventHook("deploy_event")
        """A lifecycle event of a user-service instance. ``event``: :class:`devbox.mocks.deploy.models.DeployEvent`."""

        self.alert_transition = EventHook("alert_transition")
        """An alert changed state. ``transition``: :class:`devbox.mocks.alerting.models.Transition`."""
