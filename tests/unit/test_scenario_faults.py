"""Fault rules (pure): scoping, seeded draws, caller and trace context from headers, HTTP heads."""

from __future__ import annotations

import pytest
from devbox.mocks.faults.proxy import error_response, parse_head
from devbox.mocks.faults.rules import FaultSpec, Rule, caller_of, decide, parse_traceparent
from pydantic import ValidationError


def test_scoping_by_callee_caller_method_and_path() -> None:
    rule = Rule(FaultSpec(service="payment", caller="orders", method="post", path="/charge", error_rate=1))
    assert rule.applies(service="payment", caller="orders", method="POST", path="/charge/1")
    assert not rule.applies(service="payment", caller="gateway", method="POST", path="/charge")
    assert not rule.applies(service="payment", caller="orders", method="GET", path="/charge")
    assert not rule.applies(service="payment", caller="orders", method="POST", path="/refund")
    assert not rule.applies(service="users", caller="orders", method="POST", path="/charge")


def test_seeded_error_rate_is_repeatable_and_near_the_rate() -> None:
    def draws(seed: int) -> list[int | None]:
        rule = Rule(FaultSpec(service="s", error_rate=0.3, status=502, seed=seed))
        return [decide([rule], service="s").status for _ in range(1000)]

    first, again = draws(5), draws(5)
    assert first == again
    assert 250 < sum(1 for s in first if s == 502) < 350


def test_latencies_add_up_and_first_abort_wins() -> None:
    rules = [Rule(FaultSpec(service="s", latency_ms=100)), Rule(FaultSpec(service="s", latency_ms=50, abort_rate=1)),
             Rule(FaultSpec(service="s", error_rate=1))]
    decision = decide(rules, service="s")
    assert decision.latency_ms == 150 and decision.abort and decision.status is None
    assert rules[2].hits == 1 and rules[2].errors == 0
    assert not decide(rules, service="other").any


def test_spec_needs_a_fault() -> None:
    with pytest.raises(ValidationError, match="needs latency_ms, error_rate or abort_rate"):
        FaultSpec(service="s")
    with pytest.raises(ValidationError):
        FaultSpec(service="s", error_rate=2)


def test_caller_and_traceparent_from_headers() -> None:
    assert caller_of({"x-devbox-caller": "orders", "baggage": "caller=gateway"}) == "orders"
    assert caller_of({"baggage": "env=feature-x, caller=gateway;prop=1"}) == "gateway"
    assert caller_of({"baggage": "env=feature-x"}) is None
    tid, sid = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    assert parse_traceparent(f"00-{tid}-{sid}-01") == (tid, sid)
    assert parse_traceparent("garbage") is None


def test_http_head_round_trip_forces_close() -> None:
    head = parse_head(b"POST /charge?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n")
    assert (head.method, head.path, head.header("content-length")) == ("POST", "/charge?x=1", "2")
    encoded = head.encode().decode()
    assert "keep-alive" not in encoded and encoded.endswith("Connection: close\r\n\r\n")
    with pytest.raises(ValueError, match="not an HTTP/1 request line"):
        parse_head(b"\x16\x03\x01 hello\r\n\r\n")
    assert error_response(503, "x").startswith(b"HTTP/1.1 503 ")
