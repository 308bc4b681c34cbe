"""devbox explain reads every pick a caller recorded — OTel ``devbox.naming.pick`` events or the
Zipkin annotations they become — so each hop of a span that picked several times gets its own
decision; only a span with no pick event falls back to the attributes (its last pick)."""

from __future__ import annotations

import json
from typing import Any

from devbox.learn.explain import request_story

PICKS = [
    {"service": "orders", "instance": "127.0.0.1:7001", "reason": "no routing rule", "balancer": "weighted_random",
     "candidates": 2, "filtered": [], "rule": "", "destination": "", "failover": False},
    {"service": "orders", "instance": "127.0.0.1:7002", "reason": "rule matched", "balancer": "weighted_random",
     "candidates": 1, "filtered": ["env=base"], "rule": "feature-x", "destination": "env=feature-x",
     "failover": False},
]


def _span(sid: str, parent: str | None, service: str, kind: str, start: int, **extra: Any) -> dict[str, Any]:
    return {"trace_id": "a" * 32, "span_id": sid, "parent_id": parent, "service": service, "kind": kind,
            "name": "GET /orders", "start_us": start, "duration_us": 100, "error": False, "status_message": "",
            "attributes": {}, "resource": {}, "events": [], "annotations": [], **extra}


def _trace(root_extra: dict[str, Any]) -> dict[str, Any]:
    """A gateway request that called orders twice, one pick per call recorded on its server span."""
    return {"trace_id": "a" * 32, "spans": [
        _span("1" * 16, None, "gateway", "SERVER", 0, duration_us=1000, **root_extra),
        _span("2" * 16, "1" * 16, "gateway", "CLIENT", 10),
        _span("3" * 16, "2" * 16, "orders", "SERVER", 20, attributes={"net.host.port": 7001}),
        _span("4" * 16, "1" * 16, "gateway", "CLIENT", 200),
        _span("5" * 16, "4" * 16, "orders", "SERVER", 210, attributes={"net.host.port": 7002}),
    ]}


def _hops(root_extra: dict[str, Any]) -> list[dict[str, Any]]:
    return list(request_story(_trace(root_extra), {"failed": False}, {})["hops"])


def test_every_pick_from_zipkin_annotations_gives_each_hop_its_own_decision() -> None:
    annotations = [[5 + i, f"devbox.naming.pick: {json.dumps(p, sort_keys=True)}"] for i, p in enumerate(PICKS)]
    last = {f"devbox.naming.{k}": v for k, v in PICKS[-1].items()}  # as the SDK sets them: the last pick
    hops = _hops({"annotations": annotations, "attributes": last})
    assert [h["pick_source"] for h in hops] == ["event", "event"]
    assert [h["address"] for h in hops] == ["127.0.0.1:7001", "127.0.0.1:7002"]
    assert "routing rule 'feature-x' → env=feature-x" in hops[1]["why"] and "feature-x" not in hops[0]["why"]
    assert all("only its last pick" not in h["why"] for h in hops)


def test_every_pick_from_otel_events_gives_each_hop_its_own_decision() -> None:
    events = [{"name": "devbox.naming.pick", "time_us": 5 + i, "attributes": p} for i, p in enumerate(PICKS)]
    hops = _hops({"events": events})
    assert [(h["pick_source"], h["address"]) for h in hops] == [("event", "127.0.0.1:7001"),
                                                                ("event", "127.0.0.1:7002")]


def test_a_span_without_pick_events_falls_back_to_its_last_pick_and_says_so() -> None:
    last = {f"devbox.naming.{k}": v for k, v in PICKS[-1].items()}
    hops = _hops({"attributes": last})
    assert [h["pick_source"] for h in hops] == ["attributes", "attributes"]
    assert all("no pick events, so only its last pick is known" in h["why"] for h in hops)


def test_a_call_left_without_a_recorded_pick_is_not_given_another_calls_pick() -> None:
    annotations = [[5, f"devbox.naming.pick: {json.dumps(PICKS[0], sort_keys=True)}"]]
    hops = _hops({"annotations": annotations})
    assert [(h["pick_source"], h["address"]) for h in hops] == [("event", "127.0.0.1:7001"), ("unmatched", None)]
    assert "another of its calls" in hops[1]["why"]
