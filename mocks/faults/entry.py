"""Stable entry ports: one devbox-owned listener per service that forwards to its current instances.

An instance's own port changes on every reload, restart or release (a new process takes a new
port); a user's curl, a browser tab or a load generator holds one address. The entry port is
opened once per ``up`` (or at the service's ``port:`` in devbox.yaml) and lives until ``down``;
for every connection it asks naming for the service's healthy, non-isolated instances and picks
one by weight (the weights a gray release shifts), so a rolling replacement is invisible to it.
A connection that an instance refuses (it is stopping) is retried on another instance before
anything is sent, so a reload under a steady client fails no request.

It reuses :class:`~devbox.mocks.faults.proxy.FaultProxy`'s forwarding (one request per upstream
connection in HTTP mode, so every request is balanced on its own; per-connection in TCP mode for
gRPC) but injects no fault itself: the registered addresses it forwards to are the per-instance
fault proxies when faults are enabled, so a rule applies once. Likewise for zero-code tracing: given
``on_span``, it makes the server span of a request only when the instance it picked has no tracing
proxy in front (``traced_behind``), so one request through the entry is one server span.

LIMITATIONS: the instance list is naming's (instances devbox does not register, e.g. a service
with ``register: self`` that never registered, cannot be reached through it).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from devbox.mocks.faults.proxy import MAX_HEAD, FaultProxy, _reset, error_response
from devbox.mocks.faults.rules import Decision

from devbox.platform.ports import InstanceView

LOG = logging.getLogger(__name__)

#: How many instances one connection tries before it answers 503.
ATTEMPTS = 4


async def _no_fault(*_: object) -> Decision:
    return Decision()


class EntryProxy(FaultProxy):
    """The stable front of one service: forwards each connection to one of its live instances."""

    def __init__(self, *, service: str, mode: str, candidates: Callable[[], Sequence[InstanceView]],
                 rng: random.Random | None = None,
                 traced_behind: Callable[[tuple[str, int]], bool] | None = None) -> None:
        super().__init__(service=service, instance_id=f"{service}:entry", upstream=("", 0), mode=mode,
                         decide=_no_fault)
        self.candidates = candidates
        self.rng = rng or random.Random()
        #: Whether an upstream address is an instance proxy that makes the server span itself.
        self.traced_behind = traced_behind
        #: Requests forwarded, and those answered 503 because no instance took them.
        self.forwarded = 0
        self.unavailable = 0

    def _pick(self, tried: set[tuple[str, int]]) -> tuple[str, int] | None:
        usable = [i for i in self.candidates()
                  if i.healthy and not i.isolated and i.weight > 0 and (i.host, i.port) not in tried]
        if not usable:
            return None
        chosen = self.rng.choices(usable, weights=[i.weight for i in usable])[0]
        return chosen.host, chosen.port

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        tried: set[tuple[str, int]] = set()
        last: OSError = ConnectionRefusedError(f"no healthy instance of {self.service}")
        for _ in range(ATTEMPTS):
            address = self._pick(tried)
            if address is None:
                break
            tried.add(address)
            try:
                connection = await asyncio.open_connection(*address, limit=MAX_HEAD)
            except OSError as exc:  # stopping or gone: nothing was sent, another instance is safe
                last = exc
                continue
            self.upstream = address
            self.forwarded += 1
            return connection
        raise last

    def _makes_span(self, upstream: Any) -> bool:
        if self.on_span is None:
            return False
        return not (upstream and self.traced_behind is not None and self.traced_behind(tuple(upstream[:2])))

    def _upstream_gone(self, writer: asyncio.StreamWriter) -> None:
        """No instance took the connection: say so (HTTP) or reset it; keep listening."""
        self.unavailable += 1
        if self.mode == "http":
            answer = error_response(503, f"devbox entry port: no healthy instance of {self.service}")
            answer = answer.replace(b"Injected Fault", b"Service Unavailable")
            writer.write(answer.replace(b"x-devbox-fault", b"x-devbox-entry"))
        else:
            _reset(writer)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen on ``port`` (0: a free one); OSError when it is taken."""
        if self.address is None and port:
            self.address = (host, port)
        return await super().start(host)
