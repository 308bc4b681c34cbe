"""The naming SDK client against an in-memory watch API (httpx MockTransport, no sockets)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry import baggage, context, trace
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devbox import envvars
from devbox.polaris.circuit import BreakerConfig, CircuitState
from devbox.polaris.routing import multi_env_rule
from devbox.sdk.naming import (
    HASH_KEY,
    AsyncNamingTransport,
    NamingClient,
    NamingTransport,
    NamingUnavailable,
    NoInstanceError,
    UnresolvedService,
    current_labels,
    parse_baggage,
    routing_labels,
)


class FakeWatch:
    """The watch contract of COMMON.md, held in memory; ``down`` simulates a platform restart."""

    def __init__(self) -> None:
        self.services: dict[str, dict[str, Any]] = {}
        self.down = False
        self.calls = 0
        self.traced_calls = 0
        self._rev = itertools.count(1)

    def set(self, service: str, instances: list[dict[str, Any]], routing: list[dict[str, Any]] | None = None,
            circuit_breaker: dict[str, Any] | None = None) -> None:
        self.services[service] = {"revision": f"r{next(self._rev)}", "instances": instances,
                                  "routing": routing or [], "circuit_breaker": circuit_breaker}

    async def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if is_instrumentation_enabled() or trace.get_current_span().get_span_context().is_valid:
            self.traced_calls += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        params = request.url.params
        service = params["service"]
        deadline = time.monotonic() + min(float(params.get("timeout", 30)), 0.5)
        while time.monotonic() < deadline:
            data = self.services.get(service)
            if data is None or data["revision"] != params.get("revision") or self.down:
                break
            await asyncio.sleep(0.01)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        data = self.services.get(service)
        if data is None:
            return httpx.Response(404, json={"error": "not_found", "reason": f"no service {service}"})
        return httpx.Response(200, json={"namespace": "default", "service": service, **data})


def inst(port: int, env: str = "base", **kw: Any) -> dict[str, Any]:
    return {"id": f"i{port}", "host": "127.0.0.1", "port": port, "protocol": "http", "version": "",
            "weight": 100, "healthy": True, "isolated": False, "metadata": {"env": env}, "location": None, **kw}


RULE = multi_env_rule().model_dump()


@pytest.fixture
def fake() -> FakeWatch:
    watch = FakeWatch()
    watch.set("orders", [inst(1), inst(2), inst(3, "feature-x")], routing=[RULE])
    return watch


@pytest.fixture
def client(fake: FakeWatch) -> Iterator[NamingClient]:
    c = NamingClient("http://platform.test", service="gateway", metadata={"env": "base"},
                     watch_transport=httpx.MockTransport(fake.handler), watch_timeout=5)
    yield c
    c.close()


def test_pick_routes_by_label_and_explains(client: NamingClient) -> None:
    assert {client.pick("orders", labels={"env": "feature-x"}).port for _ in range(20)} == {3}
    assert {client.pick("orders", labels={"env": "feature-q"}).port for _ in range(40)} == {1, 2}
    assert {client.pick("orders", labels={}).port for _ in range(60)} == {1, 2, 3}
    why = client.explain("orders", {"env": "feature-q"})
    assert why["rule"] == "multi-env" and why["failover"] is True
    assert why["candidates"] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert why["chosen"] in why["candidates"] and why["caller"] == "gateway"
    assert why["filters"][-1]["filter"] == "metadata"


def test_labels_come_from_baggage_and_routing_labels(client: NamingClient) -> None:
    token = context.attach(baggage.set_baggage("env", "feature-x"))
    try:
        assert current_labels() == {"env": "feature-x"}
        assert client.pick("orders").port == 3
        with routing_labels(env="feature-q"):
            assert client.pick("orders").port in (1, 2)
    finally:
        context.detach(token)
    assert current_labels() == {}
    assert parse_baggage("env=feature-x;prop=1, set=a%20b") == {"env": "feature-x", "set": "a b"}


def test_ring_hash_by_key_is_sticky(client: NamingClient) -> None:
    first = client.pick("orders", labels={}, key="user-42")
    assert all(client.pick("orders", labels={}, key="user-42") == first for _ in range(10))


def test_watch_updates_cache_and_breaker_config(client: NamingClient, fake: FakeWatch) -> None:
    client.pick("orders", labels={})
    fake.set("orders", [inst(7)], circuit_breaker={"consecutive_errors": 1})
    client.wait_for("orders", lambda insts: [i.port for i in insts] == [7], timeout=5)
    picked = client.pick("orders")
    assert client.report(picked, ok=False) is CircuitState.OPEN


def test_breaker_removes_failing_instance(fake: FakeWatch) -> None:
    with NamingClient("http://platform.test", watch_transport=httpx.MockTransport(fake.handler),
                      breaker=BreakerConfig(consecutive_errors=2, max_ejection_percent=100)) as client:
        bad = next(i for i in client.instances("orders") if i.port == 1)
        client.report(bad, ok=False)
        assert client.report(bad, ok=False) is CircuitState.OPEN
        assert 1 not in {client.pick("orders", labels={}).port for _ in range(60)}
        why = client.explain("orders", {})
        assert why["filters"][2] == {"filter": "circuit_breaker", "removed": ["127.0.0.1:1"]}
        assert why["circuit_breakers"]["127.0.0.1:1"]["state"] == "open"


def test_platform_down_serves_cache_then_resyncs(client: NamingClient, fake: FakeWatch) -> None:
    client.pick("orders", labels={})
    fake.down = True
    calls = fake.calls
    deadline = time.monotonic() + 5
    while fake.calls <= calls + 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.explain("orders", {})["cache"]["stale"] is True
    assert client.pick("orders", labels={}).port in (1, 2, 3)  # still served from cache
    fake.set("orders", [inst(9)])  # the restarted platform knows a different fleet
    fake.down = False
    client.wait_for("orders", lambda insts: [i.port for i in insts] == [9], timeout=10)
    assert client.explain("orders", {})["cache"]["stale"] is False


def test_empty_answer_keeps_the_cache(client: NamingClient, fake: FakeWatch) -> None:
    client.pick("orders", labels={})
    fake.set("orders", [])
    deadline = time.monotonic() + 5
    while client.explain("orders", {})["revision"] != fake.services["orders"]["revision"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert client.explain("orders", {})["cache"]["empty_protected"] is True
    assert client.pick("orders", labels={}).port in (1, 2, 3)


def test_unknown_service_and_no_platform(client: NamingClient) -> None:
    with pytest.raises(NoInstanceError):
        client.pick("nobody")
    offline = NamingClient(None)
    with pytest.raises(NamingUnavailable, match=envvars.DEVBOX_API_URL):
        offline.pick("orders")
    assert not offline.resolves("orders")
    assert not client.resolves("127.0.0.1") and not client.resolves("example.com")
    assert client.resolves("orders")


def test_from_env() -> None:
    env = {envvars.DEVBOX_API_URL: "http://127.0.0.1:1/", envvars.DEVBOX_NAMESPACE: "ns",
           envvars.DEVBOX_SERVICE: "orders", envvars.DEVBOX_TAGS: "env=feature-x, set=a",
           envvars.DEVBOX_NAMING_BALANCER: "round_robin"}
    client = NamingClient.from_env(env)
    assert (client.api_url, client.namespace, client.service) == ("http://127.0.0.1:1", "ns", "orders")
    assert client.metadata == {"env": "feature-x", "set": "a"} and client.balancer_name == "round_robin"
    from devbox.sdk import naming

    assert naming.default_client() is client
    assert NamingClient.from_env(env) is client  # bootstrap twice: the same client
    other = NamingClient.from_env({**env, envvars.DEVBOX_SERVICE: "payment"})
    assert other is not client and naming.default_client() is other
    other.close()
    client.close()
    with pytest.raises(ValueError, match="unknown balancer"):
        NamingClient.from_env({envvars.DEVBOX_NAMING_BALANCER: "fastest"})


def _backend(seen: list[httpx.Request], dead: set[int]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.port in dead:
            raise httpx.ConnectError("refused", request=request)
        seen.append(request)
        return httpx.Response(200, json={"port": request.url.port})

    return httpx.MockTransport(handle)


def test_sync_transport_resolves_propagates_and_fails_over(client: NamingClient) -> None:
    seen: list[httpx.Request] = []
    dead = {3}
    with httpx.Client(transport=NamingTransport(client, _backend(seen, dead))) as http:
        with routing_labels(env="feature-x"):
            answer = http.get("http://orders/orders/1?x=1")
        # feature-x's only instance is dead: one failover, to what routing allows without it (base)
        assert answer.json()["port"] in (1, 2)
        assert parse_baggage(seen[-1].headers["baggage"]) == {"env": "feature-x"}
        assert seen[-1].url.path == "/orders/1" and seen[-1].url.params["x"] == "1"
        assert http.get("http://127.0.0.1:5/direct").json()["port"] == 5  # not a service name


def test_async_transport_and_span_attributes(fake: FakeWatch) -> None:
    client = NamingClient("http://platform.test", watch_transport=httpx.MockTransport(fake.handler))
    seen: list[httpx.Request] = []
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=AsyncNamingTransport(client, _backend(seen, set()))) as http:
            with tracer.start_as_current_span("handler"), routing_labels(env="feature-x"):
                return await http.get("http://orders/x")

    answer = asyncio.run(call())
    assert fake.traced_calls == 0  # the watch's long-polls never join a trace nor get instrumented
    assert answer.json()["port"] == 3
    (span,) = exporter.get_finished_spans()
    assert span.attributes["devbox.naming.rule"] == "multi-env"
    assert span.attributes["devbox.naming.instance"] == "127.0.0.1:3"
    assert "metadata:127.0.0.1:1" in span.attributes["devbox.naming.filtered"]
    assert [e.name for e in span.events] == ["devbox.naming.pick"]
    client.close()


def test_every_pick_of_a_span_is_an_event(client: NamingClient) -> None:
    # a gateway span picks once per downstream call: each decision stays, not only the last one
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("gateway"):
        client.pick("orders", labels={"env": "feature-x"})
        client.pick("orders", labels={"env": "base"})
    (span,) = exporter.get_finished_spans()
    picks = [dict(e.attributes or {}) for e in span.events if e.name == "devbox.naming.pick"]
    assert len(picks) == 2 and picks[0]["instance"] == "127.0.0.1:3"
    assert picks[1]["instance"] in ("127.0.0.1:1", "127.0.0.1:2")
    for p in picks:
        assert p["service"] == "orders" and p["rule"] == "multi-env" and p["balancer"] and p["reason"]
    assert span.attributes["devbox.naming.instance"] == picks[-1]["instance"]  # the attribute: last pick


def test_transport_naming_failures_are_httpx_errors(client: NamingClient, fake: FakeWatch) -> None:
    seen: list[httpx.Request] = []
    with httpx.Client(transport=NamingTransport(client, _backend(seen, {1, 2, 3}))) as http:
        with pytest.raises(UnresolvedService) as err:
            http.get("http://nobody/")
        assert isinstance(err.value, httpx.HTTPError) and isinstance(err.value.__cause__, NoInstanceError)
        with pytest.raises(httpx.ConnectError) as err:  # two dead instances: the connect error surfaces
            http.get("http://orders/")
        assert not isinstance(err.value, UnresolvedService)
    fake.set("solo", [inst(4)])
    with httpx.Client(transport=NamingTransport(client, _backend(seen, {4}))) as http:
        with pytest.raises(httpx.ConnectError) as err:  # nothing to fail over to
            http.get("http://solo/")
        assert not isinstance(err.value, UnresolvedService)
    offline_watch = FakeWatch()
    offline_watch.down = True
    offline = NamingClient("http://platform.test", first_sync_timeout=0.5,
                           watch_transport=httpx.MockTransport(offline_watch.handler))
    try:
        with httpx.Client(transport=NamingTransport(offline, _backend(seen, set()))) as http:
            with pytest.raises(UnresolvedService, match="unreachable"):
                http.get("http://orders/")
    finally:
        offline.close()


def test_idempotent_requests_fail_over_on_a_dropped_connection(fake: FakeWatch) -> None:
    fake.set("pair", [inst(5), inst(6)])
    never_open = BreakerConfig(consecutive_errors=10**6, min_requests=10**6)  # keep port 5 in play
    client = NamingClient("http://platform.test", watch_transport=httpx.MockTransport(fake.handler),
                          breaker=never_open)
    hits: list[tuple[str, int | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        hits.append((request.method, request.url.port))
        if request.url.port == 5:
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        return httpx.Response(200, json={"port": request.url.port})

    with httpx.Client(transport=NamingTransport(client, httpx.MockTransport(handle))) as http:
        for _ in range(200):  # random picks: until port 5 has been tried (8 tries missed it 1 time in 256)
            assert http.get("http://pair/").json()["port"] == 6
            if ("GET", 5) in hits:
                break
        assert ("GET", 5) in hits  # it was tried, and the call still succeeded
        hits.clear()
        with pytest.raises(httpx.RemoteProtocolError):
            for _ in range(40):
                http.post("http://pair/", content=b"x")  # not idempotent: never replayed
        assert hits[-1] == ("POST", 5) and all(m == "POST" for m, _ in hits)
    client.close()


def test_bad_watch_answers_do_not_break_the_cache(fake: FakeWatch) -> None:
    answers = iter([
        httpx.Response(200, content=b"not json"),
        httpx.Response(500, json={"error": "boom"}),
    ])

    async def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("service") == "orders" and request.url.params.get("revision"):
            for answer in answers:
                return answer
        return await fake.handler(request)

    fake.set("orders", [inst(1)], routing=[RULE, {"name": "future", "destinations": [{}], "lane": "x"}])
    with NamingClient("http://platform.test", watch_transport=httpx.MockTransport(flaky)) as client:
        assert client.pick("orders", labels={}).port == 1
        assert client.explain("orders", {"env": "feature-x"})["rule"] == "multi-env"  # unknown rule skipped
        fake.set("orders", [inst(2)])
        client.wait_for("orders", lambda insts: [i.port for i in insts] == [2], timeout=15)


def test_header_rules_are_evaluated_per_request_and_breakers_per_moment(fake: FakeWatch) -> None:
    canary = {"name": "canary", "sources": [{"arguments": [{"type": "HEADER", "key": "x-canary", "value": "1"}]}],
              "destinations": [{"labels": {"env": "feature-x"}}]}
    fake.set("orders", [inst(1), inst(3, "feature-x")], routing=[canary])
    seen: list[httpx.Request] = []
    with NamingClient("http://platform.test", watch_transport=httpx.MockTransport(fake.handler),
                      breaker=BreakerConfig(consecutive_errors=1, max_ejection_percent=100)) as client, \
            httpx.Client(transport=NamingTransport(client, _backend(seen, set()))) as http:
        for _ in range(5):
            assert http.get("http://orders/", headers={"X-Canary": "1"}).json()["port"] == 3
        assert {http.get("http://orders/").json()["port"] for _ in range(40)} == {1, 3}
        fake.set("orders", [inst(1), inst(3, "feature-x")], routing=[RULE])  # label-only: memoized routes
        client.wait_for("orders", lambda _: client.explain("orders", {})["revision"]
                        == fake.services["orders"]["revision"])
        three = next(i for i in client.instances("orders") if i.port == 3)
        assert client.pick("orders", labels={"env": "feature-x"}).port == 3
        client.report(three, ok=False)  # breaker opens: the memoized route must not be reused
        assert client.pick("orders", labels={"env": "feature-x"}).port == 1
        client.report(three, ok=True)  # (late success while open: no effect)
        assert client.pick("orders", labels={"env": "feature-x"}).port == 1


def test_first_pick_waits_for_a_platform_that_is_still_starting(fake: FakeWatch) -> None:
    fake.down = True
    timer = threading.Timer(0.5, lambda: setattr(fake, "down", False))
    timer.start()
    with NamingClient("http://platform.test", first_sync_timeout=10,
                      watch_transport=httpx.MockTransport(fake.handler)) as client:
        assert client.pick("orders", labels={}).port in (1, 2, 3)
    timer.join()


def test_transport_hash_key_extension_is_sticky(client: NamingClient) -> None:
    seen: list[httpx.Request] = []
    with httpx.Client(transport=NamingTransport(client, _backend(seen, set()))) as http:
        ports = {http.get("http://orders/", extensions={HASH_KEY: "user-7"}).json()["port"] for _ in range(15)}
    assert len(ports) == 1
    assert ports == {client.pick("orders", labels={}, key="user-7").port}
