"""RPC counters derived from spans, worked out where the spans are decoded: in the indexer process.

Metrics counts every CLIENT span as a caller report and every SERVER span as a callee report
(007's interceptor reports): ``rpc_{client,server}_requests_total`` {caller, callee, method, code,
status} and ``rpc_{client,server}_duration_seconds`` histograms ({caller, callee, method}, plus
``version`` on the server side when the instance's resource has ``devbox.version``). Doing that in
the platform process needed one :class:`~devbox.mocks.tracing.models.Span` per span shipped back
from the indexer (pickled, unpickled, ~14 µs a span of the platform's GIL) — and it kept the indexer
off its fast path (:mod:`~devbox.mocks.tracing.fastpath`). Here the indexer reads each CLIENT/SERVER
span into a :data:`Call` tuple (from a Span or straight from the decoded attributes), resolves the
peers with :class:`RpcDeriver` and ships per-batch :data:`Aggregates` to the platform, which fires
``events.rpc_aggregates``; metrics adds them to its cumulative series.

The rules are the ones metrics applied to spans: the caller of a SERVER span is its parent CLIENT
span's service when that span arrives within :data:`PEER_WAIT` seconds (else the SERVER span's
``remote_service``, else its ``devbox.caller`` attribute, else ``unknown``); the callee of a CLIENT
span is its ``remote_service``, else the service of a SERVER span whose parent it is (within the
wait), else ``peer.service`` / ``server.address`` / ``net.peer.name``, else ``unknown``.

LIMITATIONS: spans waiting for their peer live in the indexer process: when it restarts (crash),
those not yet counted are lost, as they were when the platform stopped.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from typing import Any

#: How long a span waits for its peer span (to learn the caller/callee) before it is counted.
PEER_WAIT = 2.0
PEER_CACHE = 50_000

#: What the deriver reads of one CLIENT or SERVER span: kind, span_id, parent_id, service,
#: remote_service, the peer its attributes name, method, code, error, version, duration_us.
Call = tuple[str, str, str | None, str, str | None, str | None, str, str, bool, str | None, int]

#: Per (side, base labels) — side "server"/"client", base the sorted (name, value) pairs of caller,
#: callee, method and (server side) version — a list: ``{(code, status): calls}``, calls per
#: latency bucket (``len(buckets)`` ints, a call in the first bucket whose bound is >= its latency
#: in seconds; calls above the last bound are only in the count), calls, sum of latencies in µs.
Aggregates = dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]]

_CODE_KEYS = ("rpc.grpc.status_code", "http.response.status_code", "http.status_code")


def call_of(kind: str, span_id: str, parent_id: str | None, service: str, remote_service: str | None, name: str,
            error: bool, attrs: dict[str, Any], resource: dict[str, Any] | None, duration_us: int) -> Call:
    """The :data:`Call` of one CLIENT or SERVER span, from its decoded fields."""
    get = attrs.get
    # the first truthy of the keys, in order (the indexer calls this for every CLIENT/SERVER span)
    if kind == "CLIENT":
        peer = get("peer.service") or get("server.address") or get("net.peer.name")
    else:
        peer = get("devbox.caller")
    rpc_method = get("rpc.method")
    if rpc_method:
        rpc_service = get("rpc.service")
        method = f"{rpc_service}/{rpc_method}" if rpc_service else str(rpc_method)
    else:
        route = get("http.route")
        if route:
            verb = get("http.request.method") or get("http.method")
            method = f"{verb} {route}" if verb else str(route)
        else:
            method = name or "unknown"
    code = None
    for key in _CODE_KEYS:
        value = get(key)
        if value is not None and value != "":
            code = str(value)
            break
    if code is None:
        code = "error" if error else "ok"
    version = resource.get("devbox.version") if kind == "SERVER" and resource else None
    return (kind, span_id, parent_id, service, remote_service, str(peer) if peer else None, method, code, bool(error),
            str(version) if version else None, duration_us)


def calls_of_spans(spans: Iterable[Any]) -> list[Call]:
    """The calls of :class:`~devbox.mocks.tracing.models.Span` objects (CLIENT and SERVER ones)."""
    return [call_of(s.kind, s.span_id, s.parent_id, s.service, s.remote_service, s.name, s.error,
                    s.attributes or {}, s.resource, s.duration_us)
            for s in spans if s.kind == "CLIENT" or s.kind == "SERVER"]


class RpcDeriver:
    """The peer resolution: remembers which service sent each CLIENT span (and which service
    answered each one, from SERVER spans' parents), holds calls whose peer is not known yet, and
    counts settled calls into :data:`Aggregates`.

    A settle looks only at the calls it can count: those observed since the last one, the waiting
    ones whose peer arrived since (found by span id), and the ones whose wait ran out (the front of
    an arrival-ordered queue). Scanning every waiting call at every settle was ~20 % of the lead
    indexer lane's CPU at 50k spans/s, where ~2 s of calls wait."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = [float(b) for b in buckets]
        self._client_service: OrderedDict[str, str] = OrderedDict()  # client span id -> caller
        self._server_service: OrderedDict[str, str] = OrderedDict()  # parent (client) span id -> callee
        #: calls observed since the last settle, each a [arrived, call, waiting] list
        self._new: list[list[Any]] = []
        #: the waiting calls in arrival order; one counted meanwhile (its peer came) has waiting False
        self._queue: deque[list[Any]] = deque()
        #: waiting SERVER calls by their parent's span id; waiting CLIENT calls by their own span id
        self._for_client: dict[str, list[list[Any]]] = {}
        self._for_server: dict[str, list[list[Any]]] = {}
        self._pending = 0

    @property
    def pending(self) -> int:
        """Calls observed and not counted yet."""
        return self._pending

    def pending_calls(self) -> list[tuple[float, Call]]:
        """(arrived, call) of the calls not counted yet, in arrival order."""
        return [(item[0], item[1]) for item in self._queue if item[2]] + [(item[0], item[1]) for item in self._new]

    def observe(self, calls: Iterable[Call], now: float) -> None:
        new = self._new
        before = len(new)
        for call in calls:
            if call[0] == "CLIENT":
                _remember(self._client_service, call[1], call[3])
            elif call[2]:
                _remember(self._server_service, call[2], call[3])
            new.append([now, call, False])
        self._pending += len(new) - before

    def settle(self, now: float, *, force: bool = False) -> Aggregates:
        """Count the calls whose peer is known, or that waited long enough (all with ``force``).

        Calls are counted under a flat key (side, caller, callee, method, version) first, each
        turned into its :data:`Aggregates` key once: building the label tuples per call was most
        of the cost of settling."""
        candidates = self._candidates(now, force)
        flat: dict[tuple[str, str, str, str, str | None], list[Any]] = {}
        clients, servers = self._client_service, self._server_service
        buckets, nb = self.buckets, len(self.buckets)
        bisect_left = bisect.bisect_left
        for item in candidates:
            arrived, call, waiting = item
            kind, span_id, parent_id, service, remote, peer, method, code, error, version, duration_us = call
            if kind == "SERVER":
                caller = clients.get(parent_id or "")
                if caller is None and not force and now - arrived < PEER_WAIT and parent_id:
                    self._wait(item, self._for_client, parent_id)
                    continue
                key = ("server", caller or remote or peer or "unknown", service, method, version)
            else:
                callee = remote or servers.get(span_id)
                if callee is None and not force and now - arrived < PEER_WAIT:
                    self._wait(item, self._for_server, span_id)
                    continue
                key = ("client", service, callee or peer or "unknown", method, version)
            if waiting:
                item[2] = False  # counted: its place in the queue is skipped when it reaches the front
            self._pending -= 1
            entry = flat.get(key)
            if entry is None:
                entry = flat[key] = [{}, [0] * nb, 0, 0]
            outcome = (code, "error" if error else "ok")
            outcomes = entry[0]
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            duration = duration_us if duration_us > 0 else 0
            index = bisect_left(buckets, duration / 1e6)  # first bound >= value: le semantics
            if index < nb:
                entry[1][index] += 1
            entry[2] += 1
            entry[3] += duration
        out: Aggregates = {}
        for (side, caller, callee, method, version), entry in flat.items():
            base: tuple[tuple[str, str], ...] = (("callee", callee), ("caller", caller), ("method", method))
            if version:
                base = (*base, ("version", version))
            same = out.get((side, base))
            if same is None:
                out[(side, base)] = entry
            else:  # a version that is not a label ("" and None both are none)
                for outcome, n in entry[0].items():
                    same[0][outcome] = same[0].get(outcome, 0) + n
                same[1] = [a + b for a, b in zip(same[1], entry[1], strict=True)]
                same[2] += entry[2]
                same[3] += entry[3]
        return out

    def _candidates(self, now: float, force: bool) -> list[list[Any]]:
        """The calls a settle at ``now`` may count: waiting ones whose wait ran out (all with ``force``),
        waiting ones a newly observed call is the peer of, then the newly observed ones."""
        candidates: list[list[Any]] = []
        queue = self._queue
        while queue and (force or not queue[0][2] or now - queue[0][0] >= PEER_WAIT):
            item = queue.popleft()
            if item[2]:
                self._unindex(item)
                candidates.append(item)
        new, self._new = self._new, []
        for _, call, _ in new:
            if call[0] == "CLIENT":
                candidates.extend(self._for_client.pop(call[1], ()))
            elif call[2]:
                candidates.extend(self._for_server.pop(call[2], ()))
        candidates.extend(new)
        return candidates

    def _wait(self, item: list[Any], index: dict[str, list[list[Any]]], key: str) -> None:
        """``item`` keeps waiting for its peer: queued once, findable by the span id it waits for."""
        index.setdefault(key, []).append(item)
        if not item[2]:
            item[2] = True
            self._queue.append(item)

    def _unindex(self, item: list[Any]) -> None:
        call = item[1]
        index, key = (self._for_client, call[2]) if call[0] == "SERVER" else (self._for_server, call[1])
        waiting = index.get(key)
        if waiting is not None:
            with contextlib.suppress(ValueError):
                waiting.remove(item)
            if not waiting:
                del index[key]


def aggregate_spans(spans: Iterable[Any], buckets: Sequence[float]) -> Aggregates:
    """Every CLIENT/SERVER span counted at once, peers resolved within ``spans`` (tests, tools)."""
    deriver = RpcDeriver(buckets)
    deriver.observe(calls_of_spans(spans), 0.0)
    return deriver.settle(0.0, force=True)


def _remember(cache: OrderedDict[str, str], key: str, value: str) -> None:
    cache[key] = value
    if len(cache) > PEER_CACHE:
        cache.popitem(last=False)
