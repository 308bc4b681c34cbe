"""RPC counters derived from spans in the trace indexer (tracing/rpcstats.py): the fast path reads
the same calls as the general decoder, and peers are resolved across batches within the wait."""

from __future__ import annotations

import random
import time

from devbox.mocks.tracing import convert, fastpath
from devbox.mocks.tracing.models import Span
from devbox.mocks.tracing.rpcstats import PEER_WAIT, RpcDeriver, aggregate_spans, calls_of_spans

NOW = time.time_ns() // 1000
BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1]


def _random_span(r: random.Random, i: int, ids: list[str]) -> Span:
    attrs: dict = {}
    for key, values in (("rpc.method", ["Get", ""]), ("rpc.service", ["Svc"]), ("http.route", ["/a"]),
                        ("http.request.method", ["GET"]), ("http.method", ["POST"]),
                        ("http.response.status_code", [200, 500, ""]), ("rpc.grpc.status_code", [0, 2]),
                        ("peer.service", ["pay", ""]), ("server.address", ["orders", "10.0.0.1"]),
                        ("devbox.caller", ["gw"]), ("devbox.span.source", ["proxy"])):
        if r.random() < 0.25:
            attrs[key] = r.choice(values)
    span_id = f"{i + 1:016x}"
    parent = r.choice(ids) if ids and r.random() < 0.8 else None
    ids.append(span_id)
    resource = {"service.name": r.choice(["gw", "orders", "pay"])}
    if r.random() < 0.3:
        resource["devbox.version"] = r.choice(["v1", "v2"])
    error = r.random() < 0.2
    return Span(trace_id=f"{r.randrange(1, 5):032x}", span_id=span_id, parent_id=parent, name=r.choice(["op", ""]),
                kind=r.choice(["CLIENT", "SERVER", "INTERNAL", "PRODUCER"]), service=resource["service.name"],
                start_us=NOW - 1000, duration_us=r.choice([0, 1, 5000, 5001, r.randrange(0, 200_000)]),
                error=error, status_message="bad" if error else "", attributes=attrs, resource=resource)


def test_the_fast_path_reads_the_calls_and_own_services_the_general_decoder_does() -> None:
    r = random.Random(7)
    for _ in range(40):
        ids: list[str] = []
        spans = [_random_span(r, i, ids) for i in range(r.randrange(1, 60))]
        body = convert.to_otlp_request(spans).SerializeToString()
        calls: list = []
        own: set[str] = set()
        rows = fastpath.otlp_rows(body, now_us=NOW + 1, max_future_us=0, indexed_keys=(), calls=calls, own=own)
        decoded = convert.from_otlp_protobuf(body, now_us=NOW + 1, max_future_us=0).spans
        assert rows is not None
        assert calls == calls_of_spans(decoded)
        assert own == {s.service for s in decoded if "devbox.span.source" not in s.attributes}


def _span(span_id: str, kind: str, service: str, *, parent: str | None = None, ms: int = 20,
          attrs: dict | None = None) -> Span:
    return Span(trace_id="a" * 32, span_id=span_id, parent_id=parent, name="op", kind=kind, service=service,
                start_us=NOW, duration_us=ms * 1000, attributes=attrs or {})


def test_peers_are_resolved_across_batches_within_the_wait() -> None:
    deriver = RpcDeriver(BUCKETS)
    # the server span arrives first: it waits for its parent client span
    deriver.observe(calls_of_spans([_span("2" * 16, "SERVER", "orders", parent="1" * 16, ms=7)]), 100.0)
    assert deriver.settle(100.5) == {} and deriver.pending == 1
    deriver.observe(calls_of_spans([_span("1" * 16, "CLIENT", "gateway", ms=9,
                                          attrs={"http.response.status_code": 200})]), 101.0)
    got = deriver.settle(101.0)
    base = (("callee", "orders"), ("caller", "gateway"), ("method", "op"))
    assert got == {("server", base): [{("ok", "ok"): 1}, [0, 1, 0, 0, 0], 1, 7000],
                   ("client", base): [{("200", "ok"): 1}, [0, 1, 0, 0, 0], 1, 9000]}
    # a client span nobody answers is counted after the wait, against its attributes' peer
    deriver.observe(calls_of_spans([_span("3" * 16, "CLIENT", "gateway", ms=999,
                                          attrs={"server.address": "10.0.0.9", "peer.service": "ledger"})]), 200.0)
    assert deriver.settle(200.0 + PEER_WAIT / 2) == {}
    ((key, value),) = deriver.settle(200.0 + PEER_WAIT).items()
    assert key == ("client", (("callee", "ledger"), ("caller", "gateway"), ("method", "op")))
    assert value == [{("ok", "ok"): 1}, [0, 0, 0, 0, 0], 1, 999_000]  # above the last bound: only counted
    assert deriver.pending == 0


def test_aggregate_spans_counts_everything_at_once() -> None:
    spans = [_span("1" * 16, "CLIENT", "web"), _span("2" * 16, "SERVER", "stock", parent="1" * 16),
             _span("3" * 16, "INTERNAL", "web")]
    got = aggregate_spans(spans, BUCKETS)
    assert sorted(side for side, _ in got) == ["client", "server"]
    assert all(dict(base)["caller"] == "web" and dict(base)["callee"] == "stock" for _, base in got)


def _settle_by_definition(deriver: RpcDeriver, pending: list, now: float, force: bool) -> tuple[dict, list]:
    """RpcDeriver.settle's rule, one call at a time: each call's labels built and counted in turn."""
    out: dict = {}
    keep = []
    for arrived, call in pending:
        kind, span_id, parent_id, service, remote, peer, method, code, error, version, duration_us = call
        if kind == "SERVER":
            caller = deriver._client_service.get(parent_id or "")
            if caller is None and not force and now - arrived < PEER_WAIT and parent_id:
                keep.append((arrived, call))
                continue
            side, caller, callee = "server", caller or remote or peer or "unknown", service
        else:
            callee = remote or deriver._server_service.get(span_id)
            if callee is None and not force and now - arrived < PEER_WAIT:
                keep.append((arrived, call))
                continue
            side, caller, callee = "client", service, callee or peer or "unknown"
        base: tuple = (("callee", callee), ("caller", caller), ("method", method))
        if version:
            base = (*base, ("version", version))
        entry = out.setdefault((side, base), [{}, [0] * len(deriver.buckets), 0, 0])
        outcome = (code, "error" if error else "ok")
        entry[0][outcome] = entry[0].get(outcome, 0) + 1
        duration = max(duration_us, 0)
        index = next((i for i, bound in enumerate(deriver.buckets) if duration / 1e6 <= bound), None)
        if index is not None:
            entry[1][index] += 1
        entry[2] += 1
        entry[3] += duration
    return out, keep


def test_settle_counts_what_counting_each_call_by_the_rule_counts() -> None:
    r = random.Random(11)
    deriver = RpcDeriver(BUCKETS)
    now = 1000.0
    for step in range(30):
        ids: list[str] = []
        spans = [_random_span(r, 100 * step + i, ids) for i in range(r.randrange(1, 40))]
        calls = calls_of_spans(spans)
        calls += [(*c[:9], "", c[10]) for c in calls[:2]]  # an empty version is no label, as None is
        deriver.observe(calls, now)
        now += r.choice([0.1, 0.5, PEER_WAIT])
        force = r.random() < 0.1
        want, keep = _settle_by_definition(deriver, deriver.pending_calls(), now, force)
        assert deriver.settle(now, force=force) == want
        assert deriver.pending_calls() == keep and deriver.pending == len(keep)


def test_settle_matches_the_rule_when_peers_arrive_batches_apart_in_any_order() -> None:
    """Parents and children across batches, shuffled: a call waits, its peer comes batches later (found
    by span id), or its wait runs out; each settle counts what the rule over every pending call counts."""
    for seed in range(20):
        r = random.Random(seed)
        ids: list[str] = []
        spans = [_random_span(r, i, ids) for i in range(300)]
        r.shuffle(spans)
        deriver = RpcDeriver(BUCKETS)
        now = 1000.0
        while spans:
            cut = r.randrange(1, 30)
            batch, spans = spans[:cut], spans[cut:]
            deriver.observe(calls_of_spans(batch), now)
            now += r.choice([0.0, 0.3, 0.7, PEER_WAIT / 2, PEER_WAIT])
            force = r.random() < 0.05
            want, keep = _settle_by_definition(deriver, deriver.pending_calls(), now, force)
            assert deriver.settle(now, force=force) == want
            assert deriver.pending_calls() == keep and deriver.pending == len(keep)
        assert deriver.settle(now + PEER_WAIT) is not None and deriver.pending == 0


def _call_by_definition(kind: str, span_id: str, parent_id: str | None, service: str, remote: str | None, name: str,
                        error: bool, attrs: dict, resource: dict | None, duration_us: int) -> tuple:
    """call_of's rules written out key by key."""
    peer = None
    for key in ("peer.service", "server.address", "net.peer.name") if kind == "CLIENT" else ("devbox.caller",):
        if attrs.get(key):
            peer = str(attrs[key])
            break
    if attrs.get("rpc.method"):
        service_part = f"{attrs['rpc.service']}/" if attrs.get("rpc.service") else ""
        method = f"{service_part}{attrs['rpc.method']}"
    elif attrs.get("http.route"):
        verb = attrs.get("http.request.method") or attrs.get("http.method")
        method = f"{verb} {attrs['http.route']}" if verb else str(attrs["http.route"])
    else:
        method = name or "unknown"
    code = None
    for key in ("rpc.grpc.status_code", "http.response.status_code", "http.status_code"):
        if key in attrs and attrs[key] not in (None, ""):
            code = str(attrs[key])
            break
    if code is None:
        code = "error" if error else "ok"
    version = (resource or {}).get("devbox.version") if kind == "SERVER" else None
    return (kind, span_id, parent_id, service, remote, peer, method, code, bool(error),
            str(version) if version else None, duration_us)


def test_call_of_follows_the_rules_key_by_key() -> None:
    from devbox.mocks.tracing.rpcstats import call_of

    r = random.Random(13)
    values = ["", "x", 0, 200, None, False, True, 2.5, ["a"]]
    keys = ["peer.service", "server.address", "net.peer.name", "devbox.caller", "rpc.method", "rpc.service",
            "http.route", "http.request.method", "http.method", "rpc.grpc.status_code", "http.response.status_code",
            "http.status_code", "other"]
    for _ in range(3000):
        attrs = {k: r.choice(values) for k in r.sample(keys, r.randint(0, len(keys)))}
        resource = r.choice([None, {}, {"devbox.version": r.choice(["v1", "", 3, None])}])
        args = (r.choice(["CLIENT", "SERVER"]), "s1", r.choice([None, "p1"]), "svc", r.choice([None, "peer"]),
                r.choice(["", "op"]), r.random() < 0.3, attrs, resource, r.choice([-1, 0, 5000]))
        assert call_of(*args) == _call_by_definition(*args)
