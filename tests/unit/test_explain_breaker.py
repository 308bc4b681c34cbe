"""`devbox explain request` tells the breaker state at the moment of each pick: the SDK records it on
its ``devbox.naming.pick`` event (the chosen instance's breaker, the instances a breaker kept out), and
the explain core turns that recorded event into "orders-1 was skipped: its circuit breaker was open"."""

from __future__ import annotations

from typing import Any

import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devbox.learn.explain import request_story
from devbox.polaris.circuit import BreakerConfig, CircuitState
from devbox.sdk.naming import NamingClient
from tests.unit.test_naming_sdk_client import FakeWatch, inst


def _recorded_pick(open_first: bool) -> dict[str, Any]:
    """One real pick of orders by gateway's SDK, as the event it leaves on the span."""
    fake = FakeWatch()
    fake.set("orders", [inst(1), inst(2)])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with NamingClient("http://platform.test", service="gateway", watch_transport=httpx.MockTransport(fake.handler),
                      breaker=BreakerConfig(consecutive_errors=1, max_ejection_percent=100)) as client:
        client.wait_for("orders", lambda found: len(found) == 2, timeout=5)
        if open_first:
            one = next(i for i in client.instances("orders") if i.port == 1)
            assert client.report(one, ok=False) is CircuitState.OPEN
        with provider.get_tracer("test").start_as_current_span("GET /checkout"):
            client.pick("orders", labels={})
    (span,) = exporter.get_finished_spans()
    [event] = [e for e in span.events if e.name == "devbox.naming.pick"]
    return dict(event.attributes or {})


def _story(pick: dict[str, Any]) -> dict[str, Any]:
    def span(sid: str, parent: str | None, service: str, kind: str, **extra: Any) -> dict[str, Any]:
        return {"trace_id": "b" * 32, "span_id": sid, "parent_id": parent, "service": service, "kind": kind,
                "name": "GET /orders", "start_us": int(sid[0]) * 10, "duration_us": 100, "error": False,
                "status_message": "", "attributes": {}, "resource": {}, "events": [], "annotations": [], **extra}

    port = int(str(pick["instance"]).rsplit(":", 1)[1])
    trace = {"trace_id": "b" * 32, "spans": [
        span("1" * 16, None, "gateway", "SERVER", events=[{"name": "devbox.naming.pick", "time_us": 5,
                                                          "attributes": pick}]),
        span("2" * 16, "1" * 16, "gateway", "CLIENT"),
        span("3" * 16, "2" * 16, "orders", "SERVER", attributes={"net.host.port": port}),
    ]}
    return request_story(trace, {"failed": False}, {}, names={"i1": "orders-1", "i2": "orders-2"})


def test_a_pick_records_which_instances_an_open_breaker_kept_out_and_explain_says_so() -> None:
    pick = _recorded_pick(open_first=True)
    assert pick["instance"] == "127.0.0.1:2" and pick["breaker"] == "closed"
    assert list(pick["breaker_open"]) == ["127.0.0.1:1"] and list(pick["breaker_open_ids"]) == ["i1"]
    [hop] = _story(pick)["hops"]
    assert "orders-1 (127.0.0.1:1) was skipped: its circuit breaker was open" in hop["why"]
    assert "filtered out first" not in hop["why"]  # said once, in the breaker's own words


def test_a_pick_with_every_breaker_closed_says_the_breaker_was_closed() -> None:
    pick = _recorded_pick(open_first=False)
    assert pick["breaker"] == "closed" and list(pick["breaker_open"]) == []
    [hop] = _story(pick)["hops"]
    assert "its circuit breaker was closed" in hop["why"] and "skipped" not in hop["why"]
