"""The naming server through its real protocols: Polaris gRPC (official stubs), Polaris HTTP and
console APIs, and devbox's /api/naming (watch, rules, explain), on ephemeral ports."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from devbox.mocks.naming.polaris_pb import protos

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

pb = protos()
DiscoverType = pb.request.DiscoverRequest.DiscoverRequestType


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[PlatformThread]:
    with running_platform(tmp_path, components=["naming"]) as p:
        yield p


@pytest.fixture
def channel(platform: PlatformThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(platform.target("polaris_grpc")) as chan:
        yield chan


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return pb.grpcapi.PolarisGRPCStub(channel)


def instance_msg(service: str = "orders", port: int = 9000, **kw: Any) -> Any:
    return pb.service.Instance(
        service={"value": service},
        namespace={"value": "default"},
        host={"value": "127.0.0.1"},
        port={"value": port},
        **kw,
    )


# --- gRPC ---------------------------------------------------------------------------------


def test_grpc_register_heartbeat_discover_deregister(platform: PlatformThread, stub: Any) -> None:
    ttl = {"type": pb.service.HealthCheck.HEARTBEAT, "heartbeat": {"ttl": {"value": 1}}}
    msg = instance_msg(health_check=ttl, metadata={"env": "base"})
    answer = stub.RegisterInstance(msg, metadata=[("request-id", "1")])
    assert answer.code.value == 200000
    iid = answer.instance.id.value
    assert len(iid) == 40
    assert stub.Heartbeat(pb.service.Instance(id={"value": iid})).code.value == 200000

    def requests() -> Iterator[Any]:
        for kind in ("INSTANCE", "ROUTING", "LANE", "NEARBY_ROUTE_RULE", "CIRCUIT_BREAKER", "FAULT_DETECTOR"):
            yield pb.request.DiscoverRequest(
                type=DiscoverType.Value(kind), service={"name": {"value": "orders"}, "namespace": {"value": "default"}}
            )

    answers = list(stub.Discover(requests()))
    assert [DiscoverType.Name(a.type) for a in answers] == [
        "INSTANCE", "ROUTING", "LANE", "NEARBY_ROUTE_RULE", "CIRCUIT_BREAKER", "FAULT_DETECTOR"
    ]
    assert all(a.code.value == 200000 and a.service.name.value == "orders" for a in answers)
    [inst] = answers[0].instances
    assert (inst.id.value, inst.healthy.value, inst.weight.value, inst.metadata["env"]) == (iid, True, 100, "base")
    revision = answers[0].service.revision.value

    # Same revision on the same stream: the cheap 200001; a change: full data again.
    isolated = threading.Event()

    def ask_twice() -> Iterator[Any]:
        service = {"name": {"value": "orders"}, "namespace": {"value": "default"}, "revision": {"value": revision}}
        yield pb.request.DiscoverRequest(type=DiscoverType.INSTANCE, service=service)
        isolated.wait(10)  # the second ask only after the change
        yield pb.request.DiscoverRequest(type=DiscoverType.INSTANCE, service=service)

    stream = stub.Discover(ask_twice())
    assert next(stream).code.value == 200001
    platform.call(_isolate(platform, iid))
    isolated.set()
    changed = next(stream)
    assert changed.code.value == 200000 and changed.instances[0].isolate.value is True

    # The heartbeat clock: no heartbeats for 3xTTL -> unhealthy.
    registry = platform.component("naming").registry  # type: ignore[attr-defined]
    wait_for(lambda: not registry.instance(iid).healthy, timeout=10)
    assert stub.DeregisterInstance(pb.service.Instance(id={"value": iid})).code.value == 200000
    assert stub.DeregisterInstance(pb.service.Instance(id={"value": iid})).code.value == 400202
    assert stub.Heartbeat(pb.service.Instance(id={"value": iid})).code.value == 400202


async def _isolate_coro(platform: PlatformThread, iid: str) -> None:
    platform.component("naming").registry.isolate(iid, True)  # type: ignore[attr-defined]


def _isolate(platform: PlatformThread, iid: str) -> Any:
    return _isolate_coro(platform, iid)


def test_grpc_bad_input_gets_polaris_codes(stub: Any, channel: grpc.Channel) -> None:
    assert stub.RegisterInstance(pb.service.Instance(host={"value": "h"}, port={"value": 1})).code.value == 400110
    no_service = pb.service.Instance(namespace={"value": "default"}, host={"value": "h"}, port={"value": 1})
    assert stub.RegisterInstance(no_service).code.value == 400120
    assert stub.RegisterInstance(instance_msg(port=0)).code.value == 400132
    assert stub.RegisterInstance(instance_msg(port=70000)).code.value == 400132
    assert stub.RegisterInstance(instance_msg(weight={"value": 20000})).code.value == 400103
    assert stub.Heartbeat(pb.service.Instance()).code.value == 400130
    # Undecodable bytes on the wire: a Polaris ParseException answer, and the server keeps serving.
    raw = channel.unary_unary("/v1.PolarisGRPC/RegisterInstance", response_deserializer=pb.response.Response.FromString)
    assert raw(b"\xff\xff\xff", timeout=5).code.value == 400001
    raw_stream = channel.stream_stream(
        "/v1.PolarisGRPC/Discover", response_deserializer=pb.response.DiscoverResponse.FromString
    )
    [answer] = list(raw_stream(iter([b"\xff\xff"]), timeout=5))
    assert answer.code.value == 400001
    assert stub.RegisterInstance(instance_msg()).code.value == 200000


def test_grpc_service_token(platform: PlatformThread, stub: Any) -> None:
    api = platform.url("api")
    created = httpc.post(api + "/api/naming/services", json={"name": "secure", "require_token": True})
    assert created.status_code == 201
    token = created.json()["token"]
    msg = instance_msg(service="secure")
    assert stub.RegisterInstance(msg).code.value == 401000
    assert stub.RegisterInstance(msg, metadata=[("x-polaris-token", "wrong")]).code.value == 401000
    assert stub.RegisterInstance(msg, metadata=[("x-polaris-token", token)]).code.value == 200000
    msg.service_token.value = token
    assert stub.DeregisterInstance(msg).code.value == 200000


def test_grpc_services_and_report_client(stub: Any) -> None:
    stub.RegisterInstance(instance_msg(service="a"))
    stub.RegisterInstance(instance_msg(service="b"))
    request = pb.request.DiscoverRequest(type=DiscoverType.SERVICES, service={"namespace": {"value": "default"}})
    [answer] = list(stub.Discover(iter([request])))
    assert answer.code.value == 200000
    assert {s.name.value for s in answer.services} == {"a", "b"}
    client = pb.client.Client(host={"value": "127.0.0.1"}, type=pb.client.Client.SDK, version={"value": "1.6.1"})
    assert stub.ReportClient(client).code.value == 200000


# --- Polaris HTTP --------------------------------------------------------------------------


def test_polaris_http_client_api(platform: PlatformThread) -> None:
    base = platform.url("polaris_http")
    body = {"service": "orders", "namespace": "default", "host": "127.0.0.1", "port": 9100,
            "weight": 50, "health_check": {"type": "HEARTBEAT", "heartbeat": {"ttl": 5}}}
    r = httpc.post(base + "/v1/RegisterInstance", json=body)
    assert r.status_code == 200 and r.json()["code"] == 200000
    iid = r.json()["instance"]["id"]
    assert httpc.post(base + "/v1/Heartbeat", json={"id": iid}).json()["code"] == 200000
    service = {"name": "orders", "namespace": "default"}
    r = httpc.post(base + "/v1/Discover", json={"type": "INSTANCE", "service": service})
    assert r.status_code == 200
    data = r.json()
    assert data["type"] == "INSTANCE"
    assert [(i["id"], i["weight"], i["healthy"]) for i in data["instances"]] == [(iid, 50, True)]
    revision = data["service"]["revision"]
    r = httpc.post(base + "/v1/Discover", json={"type": "INSTANCE", "service": {
        "name": "orders", "namespace": "default", "revision": revision}})
    assert r.json()["code"] == 200001
    r = httpc.post(base + "/v1/ReportClient", json={"host": "127.0.0.1", "type": "SDK"})
    assert r.json()["code"] == 200000
    r = httpc.post(base + "/v1/DeregisterInstance", json={"id": iid})
    assert r.json()["code"] == 200000


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/RegisterInstance", b"{not json", 400, 400001),
        ("/v1/RegisterInstance", b"", 400, 400002),
        ("/v1/RegisterInstance", b'{"service": "x", "namespace": "default", "host": "h", "port": "abc"}', 400, 400001),
        ("/v1/RegisterInstance", b'{"service": "x", "namespace": "default", "host": "h", "weight": -1}', 400, 400001),
        ("/v1/RegisterInstance", b'{"namespace": "default", "host": "h", "port": 1}', 400, 400120),
        ("/v1/Heartbeat", b'{"id": "unknown"}', 400, 400202),
        ("/v1/Discover", b'{"type": "INSTANCE", "service": {"namespace": "default"}}', 400, 400120),
        ("/v1/Discover", b'{"type": 77}', 400, 400004),
        ("/v1/Discover", b"[1,2", 400, 400001),
    ],
)
def test_polaris_http_bad_input(platform: PlatformThread, path: str, body: bytes, status: int, code: int) -> None:
    r = httpc.post(platform.url("polaris_http") + path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == status
    assert r.headers["x-polaris-code"] == str(code)
    assert r.json()["code"] == code
    assert r.json()["info"]


def test_polaris_console_api(platform: PlatformThread) -> None:
    base = platform.url("polaris_http") + "/naming/v1"
    r = httpc.post(base + "/services", json=[{"name": "svc", "namespace": "default", "owners": "me"}])
    assert r.status_code == 200 and r.json()["responses"][0]["service"]["token"]
    r = httpc.post(base + "/instances", json=[
        {"service": "svc", "namespace": "default", "host": "10.0.0.1", "port": 1},
        {"service": "svc", "namespace": "default", "host": "10.0.0.2", "port": 2},
    ])
    assert r.json()["code"] == 200000 and r.json()["size"] == 2
    r = httpc.get(base + "/instances", params={"service": "svc", "namespace": "default"})
    assert r.json()["amount"] == 2
    r = httpc.put(base + "/instances", json=[{"service": "svc", "namespace": "default", "host": "10.0.0.1",
                                              "port": 1, "isolate": True}])
    assert r.json()["code"] == 200000
    r = httpc.get(base + "/instances", params={"service": "svc", "namespace": "default"})
    assert [i.get("isolate", False) for i in r.json()["instances"]] == [True, False]
    assert httpc.get(base + "/services", params={"namespace": "default"}).json()["services"][0]["name"] == "svc"
    assert "default" in [n["name"] for n in httpc.get(base + "/namespaces").json()["namespaces"]]
    r = httpc.post(base + "/services/delete", json=[{"name": "svc", "namespace": "default"}])
    assert r.status_code == 400 and r.json()["responses"][0]["code"] == 400204
    r = httpc.post(base + "/instances/delete", json=[
        {"service": "svc", "namespace": "default", "host": "10.0.0.1", "port": 1},
        {"service": "svc", "namespace": "default", "host": "10.0.0.2", "port": 2},
    ])
    assert r.json()["code"] == 200000
    assert httpc.get(base + "/instances", params={"service": "svc"}).status_code == 400
    assert httpc.post(base + "/instances", content=b"{").status_code == 400


# --- devbox API ----------------------------------------------------------------------------


def test_devbox_api_lifecycle_and_events(platform: PlatformThread) -> None:
    api = platform.url("api") + "/api/naming"
    seen: list[dict[str, Any]] = []
    platform.platform.events.instance_changed.add_listener(lambda **kw: seen.append(kw))  # type: ignore[union-attr]
    r = httpc.post(api + "/instances", json={"service": "orders", "host": "127.0.0.1", "port": 8001,
                                             "metadata": {"env": "base"}, "ttl": 20})
    assert r.status_code == 201
    inst = r.json()
    assert inst["healthy"] is False
    assert httpc.post(api + f"/instances/{inst['id'][:10]}/heartbeat").status_code == 204
    assert httpc.get(api + "/instances/127.0.0.1:8001").json()["healthy"] is True
    r = httpc.put(api + "/instances/127.0.0.1:8001/isolate", json={"isolated": True})
    assert r.json()["isolated"] is True
    r = httpc.put(api + f"/instances/{inst['id']}/weight", json={"weight": 7})
    assert r.json()["weight"] == 7
    shown = httpc.get(api + "/services/default/orders").json()
    assert shown["instances"][0]["weight"] == 7 and shown["routing"] == []
    assert httpc.get(api + "/services").json()[0]["name"] == "orders"
    assert httpc.delete(api + f"/instances/{inst['id']}").status_code == 204
    assert [e["change"] for e in seen] == ["registered", "healthy", "isolated", "updated", "deregistered"]
    assert {e["instance_id"] for e in seen} == {inst["id"]}
    assert httpc.get(platform.url("api") + "/openapi.json").json()["paths"]["/api/naming/watch"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/instances", {"service": "x", "host": "h", "port": 0}, 400),
        ("post", "/instances", {"service": "x", "host": "h", "port": 1, "weight": -5}, 400),
        ("post", "/instances", {"host": "h", "port": 1}, 400),
        ("post", "/instances", {"service": "x", "host": "h", "port": 1, "colour": "red"}, 400),
        ("post", "/instances/nope/heartbeat", None, 404),
        ("delete", "/instances/nope", None, 404),
        ("put", "/instances/nope/weight", {"weight": 1}, 404),
        ("post", "/rules", {"name": "r", "destinations": [{"labels": {}}], "surprise": 1}, 400),
        ("post", "/rules", {"name": "r", "destinations": [{"labels": {"env": {"type": "REGEX", "value": "("}}}]}, 400),
        ("put", "/rules/default/orders", [{"destinations": []}], 400),
        ("put", "/rules/default/bad%20name!", [{"name": "r", "destinations": [{"labels": {}}]}], 400),
        ("post", "/rules", {"name": "r", "namespace": "bad ns", "destinations": [{"labels": {}}]}, 400),
        ("put", "/circuit-breakers/default/orders", {"error_rate": 2}, 400),
        ("put", "/circuit-breakers/default/orders", {"half_open_probes": 1, "success_to_close": 3}, 400),
        ("get", "/services/default/nobody", None, 404),
        ("get", "/explain?service=orders&label=novalue", None, 400),
        ("get", "/watch?service=orders&timeout=-1", None, 400),
    ],
)
def test_devbox_api_bad_input(platform: PlatformThread, method: str, path: str, body: Any, status: int) -> None:
    url = platform.url("api") + "/api/naming" + path
    r = httpc.request(method, url, json=body) if body is not None else httpc.request(method, url)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["error"]
    assert data.get("reason") or data.get("reasons")


def test_malformed_json_body_on_devbox_api(platform: PlatformThread) -> None:
    r = httpc.post(platform.url("api") + "/api/naming/instances", content=b"{oops",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_watch_long_poll_wakes_on_change(platform: PlatformThread) -> None:
    api = platform.url("api") + "/api/naming"
    first = httpc.get(api + "/watch", params={"service": "orders", "timeout": 0}).json()
    assert first == {"namespace": "default", "service": "orders", "revision": "", "instances": [],
                     "routing": [], "circuit_breaker": None}
    result: dict[str, Any] = {}

    def watcher() -> None:
        result["answer"] = httpc.get(api + "/watch", params={"service": "orders", "revision": "", "timeout": 20},
                                     timeout=30).json()

    naming = platform.component("naming").service  # type: ignore[attr-defined]
    thread = threading.Thread(target=watcher)
    thread.start()
    # the change must come while the long poll waits (not before it was made): wait for it to wait
    wait_for(lambda: naming.watching == 1, what="the watch to be waiting")
    httpc.post(api + "/instances", json={"service": "orders", "host": "127.0.0.1", "port": 8002,
                                         "health_check": False, "metadata": {"env": "base"}})
    thread.join(timeout=20)
    answer = result["answer"]
    assert answer["revision"]
    assert [(i["port"], i["healthy"], i["metadata"]) for i in answer["instances"]] == [(8002, True, {"env": "base"})]
    # Unchanged revision: waits out the timeout and answers the same revision.
    again = httpc.get(api + "/watch", params={"service": "orders", "revision": answer["revision"], "timeout": 0.3})
    assert again.json()["revision"] == answer["revision"]
    # Rules and circuit-breaker settings are part of the watched state.
    rule = {"name": "feature-env", "service": "*", "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
            "destinations": [{"labels": {"env": "$env"}}, {"labels": {"env": {"type": "IN", "value": "base,"}},
                                                           "priority": 1}]}
    assert httpc.post(api + "/rules", json=rule).status_code == 201
    assert httpc.put(api + "/circuit-breakers/default/orders", json={"consecutive_errors": 2}).status_code == 200
    changed = httpc.get(api + "/watch", params={"service": "orders", "revision": answer["revision"]}).json()
    assert changed["revision"] != answer["revision"]
    assert [r["name"] for r in changed["routing"]] == ["feature-env"]
    assert changed["circuit_breaker"] == {"consecutive_errors": 2}


def test_rules_crud_and_explain(platform: PlatformThread) -> None:
    api = platform.url("api") + "/api/naming"
    for port, env in ((8010, "base"), (8011, "feature-x")):
        httpc.post(api + "/instances", json={"service": "orders", "host": "127.0.0.1", "port": port,
                                             "health_check": False, "metadata": {"env": env}})
    httpc.post(api + "/instances", json={"service": "payments", "host": "127.0.0.1", "port": 8020,
                                         "health_check": False, "metadata": {"env": "base"}})
    rule = {"name": "feature-env", "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
            "destinations": [{"labels": {"env": "$env"}}, {"labels": {"env": {"type": "IN", "value": "base,"}},
                                                           "priority": 1}]}
    r = httpc.put(api + "/rules/default/*", json=[rule])
    assert r.status_code == 200 and r.json()[0]["service"] == "*"
    assert [x["name"] for x in httpc.get(api + "/rules", params={"service": "payments"}).json()] == ["feature-env"]

    feature = httpc.get(api + "/explain", params={"service": "orders", "label": "env=feature-x"}).json()
    assert feature["rule"] == "feature-env"
    assert feature["candidates"] == ["127.0.0.1:8011"]
    assert feature["pick"]["instance"] == "127.0.0.1:8011"
    fallback = httpc.post(api + "/explain", json={"service": "payments", "labels": {"env": "feature-x"}}).json()
    assert fallback["failover"] is True and fallback["candidates"] == ["127.0.0.1:8020"]
    plain = httpc.get(api + "/explain", params={"service": "orders"}).json()
    assert plain["rule"] is None and len(plain["candidates"]) == 2

    assert httpc.delete(api + "/rules/default/*/feature-env").status_code == 204
    assert httpc.delete(api + "/rules/default/*/feature-env").status_code == 404
    assert httpc.get(api + "/rules").json() == []


def test_state_survives_restart(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["naming"]) as p:
        api = p.url("api") + "/api/naming"
        httpc.post(api + "/services", json={"name": "secure", "require_token": True})
        httpc.post(api + "/instances", json={"service": "orders", "host": "127.0.0.1", "port": 8030,
                                             "health_check": False, "metadata": {"env": "base"}})
        rule = {"name": "r1", "service": "orders", "destinations": [{"labels": {"env": "base"}}]}
        assert httpc.post(api + "/rules", json=rule).status_code == 201
        revision = httpc.get(api + "/watch", params={"service": "orders", "timeout": 0}).json()["revision"]
    with running_platform(tmp_path, components=["naming"]) as p:
        api = p.url("api") + "/api/naming"
        watched = httpc.get(api + "/watch", params={"service": "orders", "revision": revision, "timeout": 0}).json()
        assert watched["revision"] == revision
        assert [i["port"] for i in watched["instances"]] == [8030]
        assert [r["name"] for r in watched["routing"]] == ["r1"]
        assert httpc.get(api + "/services/default/secure").json()["require_token"] is True


def test_polaris_v2_routing_console_round_trip(platform: PlatformThread) -> None:
    base = platform.url("polaris_http") + "/naming/v2/routings"
    rule = {
        "name": "feature-env", "namespace": "default", "enable": True, "routing_policy": "RulePolicy",
        "routing_config": {"@type": "type.googleapis.com/v1.RuleRoutingConfig", "rules": [{
            "name": "feature-env",
            "sources": [{"service": "*", "namespace": "*", "arguments": [
                {"type": "CUSTOM", "key": "env", "value": {"type": "EXACT", "value": "*"}}]}],
            "destinations": [
                {"service": "orders", "namespace": "default", "priority": 0, "weight": 100,
                 "labels": {"env": {"type": "EXACT", "value": "env", "value_type": "PARAMETER"}}},
                {"service": "orders", "namespace": "default", "priority": 1, "weight": 100, "name": "base",
                 "labels": {"env": {"type": "IN", "value": "base,"}}},
            ]}]},
    }
    r = httpc.post(base, json=[rule])
    assert r.status_code == 200 and r.json()["code"] == 200000, r.text
    stored = httpc.get(platform.url("api") + "/api/naming/rules", params={"service": "orders"}).json()
    summary = [(s["name"], s["service"], s["destinations"][1]["name"]) for s in stored]
    assert summary == [("feature-env", "orders", "base")]
    assert stored[0]["destinations"][0]["labels"]["env"]["value_type"] == "PARAMETER"
    listed = httpc.get(base, params={"service": "orders"}).json()
    assert listed["amount"] == 1
    assert listed["data"][0]["@type"] == "type.googleapis.com/v1.RouteRule"
    assert listed["data"][0]["name"] == "feature-env"
    # What devbox lists can be posted back unchanged.
    assert httpc.post(base, json=listed["data"]).json()["code"] == 200000

    unsupported = {**rule, "routing_policy": "MetadataPolicy"}
    r = httpc.post(base, json=[unsupported])
    assert r.status_code == 400 and "RulePolicy" in r.json()["responses"][0]["info"]
    ranged = json.loads(json.dumps(rule))
    ranged["routing_config"]["rules"][0]["destinations"][0]["labels"]["env"]["type"] = "RANGE"
    assert "not supported" in httpc.post(base, json=[ranged]).json()["responses"][0]["info"]
    assert httpc.post(base, content=b"{").status_code == 400

    r = httpc.post(base + "/delete", json=[{"id": "default/orders/feature-env"}])
    assert r.json()["code"] == 200000
    assert httpc.get(base).json()["amount"] == 0


def test_config_declares_services_and_rules(tmp_path: Path) -> None:
    from devbox.config import parse_config

    config = parse_config(
        "naming:\n"
        "  services: [{name: secure, require_token: true, token: fixed-token-1}]\n"
        "  rules:\n"
        "    - name: multi-env\n"
        "      service: '*'\n"
        "      sources: [{arguments: [{key: env, value: '*'}]}]\n"
        "      destinations: [{labels: {env: $env}}, {labels: {env: {type: IN, value: 'base,'}}, priority: 1}]\n",
        root=tmp_path,
    )
    config = config.model_copy(update={"platform": config.platform.model_copy(
        update={"ports": type(config.platform.ports).ephemeral()})})
    revisions = []
    for _ in range(2):  # applying the same config again changes nothing
        with running_platform(config=config, components=["naming"]) as p:
            api = p.url("api") + "/api/naming"
            secure = httpc.get(api + "/services/default/secure").json()
            assert secure["require_token"] is True and secure["token"] == "fixed-token-1"
            assert [r["name"] for r in httpc.get(api + "/rules").json()] == ["multi-env"]
            revisions.append(secure["revision"])
            with grpc.insecure_channel(p.target("polaris_grpc")) as chan:
                stub = pb.grpcapi.PolarisGRPCStub(chan)
                msg = instance_msg(service="secure")
                assert stub.RegisterInstance(msg).code.value == 401000
                assert stub.RegisterInstance(msg, metadata=[("x-polaris-token", "fixed-token-1")]).code.value == 200000
            revisions.append(httpc.get(api + "/services/default/secure").json()["revision"])
    # The restart re-applied the same config: the revision clients cached is still current.
    assert revisions[1] == revisions[2]
