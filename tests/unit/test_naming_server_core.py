"""The naming registry core, its store and the Polaris protocol object: no sockets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.models import Code, NamingError
from devbox.mocks.naming.polaris import PolarisApi
from devbox.mocks.naming.service import NamingService
from devbox.mocks.naming.store import NamingStore

from devbox.polaris.routing import multi_env_rule


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> Registry:
    return Registry(clock=clock, expire_after=60.0)


def reg(registry: Registry, port: int = 8000, **kw: object) -> object:
    args: dict[str, object] = {"namespace": "default", "service": "orders", "host": "10.0.0.1", "port": port}
    args.update(kw)
    return registry.register(**args)  # type: ignore[arg-type]


def test_instance_id_is_polaris_sha1_and_register_is_idempotent(registry: Registry) -> None:
    first = reg(registry, metadata={"env": "base"})
    expected = hashlib.sha1(b"default##orders##10.0.0.1##8000").hexdigest()
    assert first.id == expected  # type: ignore[attr-defined]
    again = reg(registry, metadata={"env": "feature-x"}, weight=50)
    assert again.id == expected  # type: ignore[attr-defined]
    assert len(registry.instances("default", "orders")) == 1
    assert registry.instances("default", "orders")[0].metadata == {"env": "feature-x"}
    assert registry.instances("default", "orders")[0].weight == 50


def test_register_creates_service_and_namespace(registry: Registry) -> None:
    reg(registry, namespace="prod")
    assert [s.name for s in registry.services("prod")] == ["orders"]
    assert "prod" in [n.name for n in registry.namespaces()]


def test_heartbeat_checked_instance_unhealthy_until_first_heartbeat(registry: Registry, clock: Clock) -> None:
    instance = reg(registry, ttl=5)
    assert instance.healthy is False  # type: ignore[attr-defined]
    registry.heartbeat(instance.id)  # type: ignore[attr-defined]
    assert instance.healthy is True  # type: ignore[attr-defined]
    unchecked = reg(registry, port=8001, health_check=False)
    assert unchecked.healthy is True  # type: ignore[attr-defined]


def test_ttl_times_three_then_expiry(registry: Registry, clock: Clock) -> None:
    instance = reg(registry, ttl=5)
    registry.heartbeat(instance.id)  # type: ignore[attr-defined]
    clock.now += 14.9
    assert registry.sweep() == []
    assert instance.healthy is True  # type: ignore[attr-defined]
    clock.now += 0.2
    assert registry.sweep() == [(instance.id, "unhealthy")]  # type: ignore[attr-defined]
    assert instance.healthy is False  # type: ignore[attr-defined]
    registry.heartbeat(instance.id)  # type: ignore[attr-defined]
    assert instance.healthy is True  # type: ignore[attr-defined]
    clock.now += 61
    changes = registry.sweep()
    assert changes == [(instance.id, "expired")]  # type: ignore[attr-defined]
    assert registry.instances("default", "orders") == []


def test_instances_without_health_check_never_expire(registry: Registry, clock: Clock) -> None:
    reg(registry, health_check=False)
    clock.now += 10_000
    assert registry.sweep() == []
    assert len(registry.instances("default", "orders")) == 1


def test_revision_changes_on_instance_and_rule_changes_not_on_plain_heartbeat(registry: Registry) -> None:
    instance = reg(registry)
    revisions = [registry.revision("default", "orders")]

    def step() -> str:
        rev = registry.revision("default", "orders")
        assert rev is not None
        assert rev not in revisions
        revisions.append(rev)
        return rev

    registry.heartbeat(instance.id)  # unhealthy -> healthy
    step()
    registry.heartbeat(instance.id)  # plain heartbeat: no change
    assert registry.revision("default", "orders") == revisions[-1]
    registry.isolate(instance.id, True)
    step()
    registry.isolate(instance.id, True)  # no-op
    assert registry.revision("default", "orders") == revisions[-1]
    registry.set_weight(instance.id, 10)
    step()
    reg(registry, port=8001)
    step()
    registry.put_rule(multi_env_rule().model_dump(mode="json"))  # namespace-wide rule
    step()
    registry.deregister(instance.id)
    step()


def test_bad_input_is_refused_with_polaris_codes(registry: Registry) -> None:
    cases = [
        ({"port": 0}, Code.InvalidInstancePort),
        ({"port": 70000}, Code.InvalidInstancePort),
        ({"host": ""}, Code.InvalidInstanceHost),
        ({"service": ""}, Code.InvalidServiceName),
        ({"service": "bad name"}, Code.InvalidServiceName),
        ({"namespace": "bad ns!"}, Code.InvalidNamespaceName),
        ({"weight": -1}, Code.InvalidParameter),
        ({"weight": 10001}, Code.InvalidParameter),
        ({"ttl": 0}, Code.InvalidParameter),
        ({"ttl": 61}, Code.InvalidParameter),
        ({"metadata": {"": "x"}}, Code.InvalidMetadata),
    ]
    for kwargs, code in cases:
        with pytest.raises(NamingError) as err:
            reg(registry, **kwargs)
        assert err.value.code == code, kwargs
        assert str(err.value)
    with pytest.raises(NamingError) as err:
        registry.heartbeat("nope")
    assert err.value.code == Code.NotFoundResource
    with pytest.raises(NamingError) as err:
        registry.deregister("nope")
    assert err.value.code == Code.NotFoundResource
    unchecked = reg(registry, health_check=False)
    with pytest.raises(NamingError) as err:
        registry.heartbeat(unchecked.id)  # type: ignore[attr-defined]
    assert err.value.code == Code.HeartbeatOnDisabledIns


def test_service_token_required_only_when_the_service_says_so(registry: Registry) -> None:
    reg(registry)
    registry.check_token("default", "orders", None)
    svc = registry.create_service("default", "secure", require_token=True)
    with pytest.raises(NamingError) as err:
        registry.check_token("default", "secure", None)
    assert err.value.code == Code.Unauthorized
    with pytest.raises(NamingError) as err:
        registry.check_token("default", "secure", "wrong")
    assert err.value.code == Code.Unauthorized
    registry.check_token("default", "secure", svc.token)


def test_listeners_see_instance_changes(registry: Registry, clock: Clock) -> None:
    seen: list[tuple[str, str, str | None, str]] = []
    registry.add_listener(lambda *args: seen.append(args))
    instance = reg(registry, ttl=1)
    registry.heartbeat(instance.id)  # type: ignore[attr-defined]
    clock.now += 3.5
    registry.sweep()
    changes = [c for (_, _, iid, c) in seen if iid == instance.id]  # type: ignore[attr-defined]
    assert changes == ["registered", "healthy", "unhealthy"]


def test_rules_apply_to_their_service_and_wildcard(registry: Registry) -> None:
    reg(registry)
    reg(registry, service="payments")
    wide = multi_env_rule().model_dump(mode="json")
    own = {**multi_env_rule(name="own", service="orders").model_dump(mode="json")}
    registry.put_rule(wide)
    registry.put_rule(own)
    assert {r["name"] for r in registry.rules("default", "orders")} == {"multi-env", "own"}
    assert {r["name"] for r in registry.rules("default", "payments")} == {"multi-env"}
    registry.delete_rule("default", "orders", "own")
    assert {r["name"] for r in registry.rules("default", "orders")} == {"multi-env"}
    with pytest.raises(NamingError) as err:
        registry.delete_rule("default", "orders", "own")
    assert err.value.code == Code.NotFoundRouting


def test_store_round_trip(tmp_path: Path, clock: Clock) -> None:
    first = Registry(clock=clock)
    instance = reg(first, metadata={"env": "base"}, location={"region": "r1"})
    first.heartbeat(instance.id)  # type: ignore[attr-defined]
    first.create_service("default", "secure", require_token=True)
    first.put_rule(multi_env_rule().model_dump(mode="json"))
    first.set_circuit_breaker("default", "orders", {"consecutive_errors": 3})
    store = NamingStore(tmp_path / "naming.db")
    store.write(first.drain_dirty())
    first.deregister(reg(first, port=9999).id)  # type: ignore[attr-defined]
    store.write(first.drain_dirty())
    store.close()

    second = Registry(clock=clock)
    store = NamingStore(tmp_path / "naming.db")
    second.load(*store.load())
    store.close()
    [restored] = second.instances("default", "orders")
    assert restored.id == instance.id  # type: ignore[attr-defined]
    assert restored.metadata == {"env": "base"}
    assert restored.location == {"region": "r1"}
    assert second.revision("default", "orders") == first.revision("default", "orders")
    assert second.service("default", "secure").require_token  # type: ignore[union-attr]
    assert [r["name"] for r in second.rules("default", "orders")] == ["multi-env"]
    assert second.service("default", "orders").circuit_breaker == {"consecutive_errors": 3}  # type: ignore[union-attr]


# --- the Polaris protocol object ------------------------------------------------------------


@pytest.fixture
def polaris(registry: Registry) -> PolarisApi:
    return PolarisApi(NamingService(registry))


def discover(polaris: PolarisApi, kind: str, service: str = "orders", revision: str = "") -> object:
    pb = polaris.pb
    return polaris.discover(
        pb.request.DiscoverRequest(
            type=pb.request.DiscoverRequest.DiscoverRequestType.Value(kind),
            service={"name": {"value": service}, "namespace": {"value": "default"}, "revision": {"value": revision}},
        )
    )


def test_discover_instance_revision_handling(polaris: PolarisApi, registry: Registry) -> None:
    instance = reg(registry, metadata={"env": "base"}, health_check=False)
    full = discover(polaris, "INSTANCE")
    assert full.code.value == 200000  # type: ignore[attr-defined]
    assert full.service.name.value == "orders"  # type: ignore[attr-defined]
    assert [i.id.value for i in full.instances] == [instance.id]  # type: ignore[attr-defined]
    assert full.instances[0].weight.value == 100  # type: ignore[attr-defined]
    assert full.instances[0].healthy.value is True  # type: ignore[attr-defined]
    revision = full.service.revision.value  # type: ignore[attr-defined]
    assert revision
    same = discover(polaris, "INSTANCE", revision=revision)
    assert same.code.value == 200001  # type: ignore[attr-defined]
    assert len(same.instances) == 0  # type: ignore[attr-defined]
    assert same.service.name.value == "orders"  # type: ignore[attr-defined]
    registry.isolate(instance.id, True)  # type: ignore[attr-defined]
    changed = discover(polaris, "INSTANCE", revision=revision)
    assert changed.code.value == 200000  # type: ignore[attr-defined]
    assert changed.service.revision.value != revision  # type: ignore[attr-defined]
    assert changed.instances[0].isolate.value is True  # type: ignore[attr-defined]


def test_discover_answers_every_type_with_echo(polaris: PolarisApi, registry: Registry) -> None:
    reg(registry)
    for kind in ("ROUTING", "CIRCUIT_BREAKER", "SERVICES", "LANE", "NEARBY_ROUTE_RULE", "FAULT_DETECTOR", "RATE_LIMIT"):
        answer = discover(polaris, kind)
        assert answer.code.value == 200000, kind  # type: ignore[attr-defined]
        assert answer.type == polaris.pb.request.DiscoverRequest.DiscoverRequestType.Value(kind)  # type: ignore[attr-defined]
        assert answer.service.name.value == "orders"  # type: ignore[attr-defined]
        again = discover(polaris, kind, revision=answer.service.revision.value)  # type: ignore[attr-defined]
        assert again.code.value == 200001, kind  # type: ignore[attr-defined]
    unknown = discover(polaris, "INSTANCE", service="nobody")
    assert unknown.code.value == Code.NotFoundResource  # type: ignore[attr-defined]
    assert unknown.service.name.value == "nobody"  # type: ignore[attr-defined]
    bad = discover(polaris, "UNKNOWN")
    assert bad.code.value == Code.InvalidDiscoverResource  # type: ignore[attr-defined]


def test_discover_routing_carries_rules_as_v2_route_rules(polaris: PolarisApi, registry: Registry) -> None:
    reg(registry)
    registry.put_rule(multi_env_rule().model_dump(mode="json"))
    answer = discover(polaris, "ROUTING")
    rules = answer.routing.rules  # type: ignore[attr-defined]
    assert [r.name for r in rules] == ["multi-env"]
    config = polaris.pb.routing.RuleRoutingConfig()
    assert rules[0].routing_config.Unpack(config)
    destinations = config.rules[0].destinations
    assert [d.service for d in destinations] == ["orders", "orders"]
    assert destinations[0].labels["env"].value_type == polaris.pb.model.MatchString.PARAMETER
    revision = answer.routing.revision.value  # type: ignore[attr-defined]
    assert discover(polaris, "ROUTING", revision=revision).code.value == 200001  # type: ignore[attr-defined]
    registry.delete_rule("default", "*", "multi-env")
    assert discover(polaris, "ROUTING", revision=revision).code.value == 200000  # type: ignore[attr-defined]


def test_polaris_register_heartbeat_deregister_messages(polaris: PolarisApi, registry: Registry) -> None:
    pb = polaris.pb
    msg = pb.service.Instance(
        service={"value": "orders"},
        namespace={"value": "default"},
        host={"value": "10.0.0.9"},
        port={"value": 9000},
        health_check={"type": pb.service.HealthCheck.HEARTBEAT, "heartbeat": {"ttl": {"value": 2}}},
        metadata={"env": "base"},
    )
    answer = polaris.register(msg)
    assert answer.code.value == 200000
    iid = answer.instance.id.value
    assert registry.instance(iid).ttl == 2.0  # type: ignore[union-attr]
    by_address = pb.service.Instance(
        service={"value": "orders"}, namespace={"value": "default"}, host={"value": "10.0.0.9"}, port={"value": 9000}
    )
    assert polaris.heartbeat(by_address).code.value == 200000
    assert registry.instance(iid).healthy  # type: ignore[union-attr]
    assert polaris.heartbeat(pb.service.Instance(id={"value": "nope"})).code.value == Code.NotFoundResource
    assert polaris.deregister(by_address).code.value == 200000
    assert polaris.deregister(by_address).code.value == Code.NotFoundResource
    missing = polaris.register(pb.service.Instance(service={"value": "orders"}, host={"value": "h"}, port={"value": 1}))
    assert missing.code.value == Code.InvalidNamespaceName
    no_port = polaris.register(
        pb.service.Instance(service={"value": "orders"}, namespace={"value": "default"}, host={"value": "h"})
    )
    assert no_port.code.value == Code.InvalidInstancePort


def test_polaris_token_check(polaris: PolarisApi, registry: Registry) -> None:
    pb = polaris.pb
    svc = registry.create_service("default", "secure", require_token=True)
    msg = pb.service.Instance(
        service={"value": "secure"}, namespace={"value": "default"}, host={"value": "h"}, port={"value": 1}
    )
    assert polaris.register(msg).code.value == Code.Unauthorized
    assert polaris.register(msg, token="wrong").code.value == Code.Unauthorized
    assert polaris.register(msg, token=svc.token).code.value == 200000
    msg.service_token.value = svc.token
    assert polaris.deregister(msg).code.value == 200000


def test_system_services_answer_with_devbox_address(registry: Registry) -> None:
    polaris = PolarisApi(NamingService(registry), system_address=lambda: ("127.0.0.1", 8091))
    pb = polaris.pb
    request = pb.request.DiscoverRequest(
        type=pb.request.DiscoverRequest.DiscoverRequestType.INSTANCE,
        service={"name": {"value": "polaris.discover"}, "namespace": {"value": "Polaris"}},
    )
    answer = polaris.discover(request)
    assert answer.code.value == 200000
    [inst] = answer.instances
    assert (inst.host.value, inst.port.value, inst.metadata["protocol"]) == ("127.0.0.1", 8091, "grpc")
    request.service.revision.value = answer.service.revision.value
    assert polaris.discover(request).code.value == 200001
    assert registry.services() == []  # answered, not registered


def test_routing_also_sent_as_v1_inbounds_where_expressible(polaris: PolarisApi, registry: Registry) -> None:
    reg(registry)
    registry.put_rule(multi_env_rule().model_dump(mode="json"))
    header_rule = {
        "name": "by-header", "namespace": "default", "service": "orders", "priority": 1,
        "sources": [{"arguments": [{"type": "HEADER", "key": "x-env", "value": {"value": "a"}}]}],
        "destinations": [{"labels": {"env": {"value": "a"}}}],
    }
    registry.put_rule(header_rule)
    routing = discover(polaris, "ROUTING").routing  # type: ignore[attr-defined]
    assert [r.name for r in routing.rules] == ["multi-env", "by-header"]
    [inbound] = routing.inbounds  # HEADER arguments have no v1 form: only the v2 rule carries it
    assert inbound.sources[0].metadata["env"].value.value == "*"
    first, fallback = inbound.destinations
    assert first.metadata["env"].value_type == polaris.pb.model.MatchString.PARAMETER
    assert (fallback.metadata["env"].value.value, fallback.priority.value) == ("base", 1)
    assert {d.service.value for d in inbound.destinations} == {"orders"}


def test_restored_instances_get_a_fresh_expiry_but_honest_health(tmp_path: Path, clock: Clock) -> None:
    first = Registry(clock=clock, expire_after=60)
    instance = reg(first, ttl=5)
    first.heartbeat(instance.id)  # type: ignore[attr-defined]
    store = NamingStore(tmp_path / "naming.db")
    store.write(first.drain_dirty())
    clock.now += 600  # devbox was down for ten minutes
    second = Registry(clock=clock, expire_after=60)
    second.load(*store.load())
    store.close()
    assert second.sweep() == [(instance.id, "unhealthy")]  # type: ignore[attr-defined]
    clock.now += 30
    assert second.sweep() == []
    second.heartbeat(instance.id)  # type: ignore[attr-defined]  # its client is back in time
    assert second.instance(instance.id).healthy  # type: ignore[union-attr, attr-defined]
    clock.now += 61
    assert second.sweep() == [(instance.id, "expired")]  # type: ignore[attr-defined]
