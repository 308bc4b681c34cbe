"""naming's NamingPort: what other components (deploy, faults, scenarios) may ask of the registry."""

from __future__ import annotations

import pytest
from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.service import NamingPortImpl, NamingService

from devbox.platform import ports


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def registry(clock: Clock) -> Registry:
    return Registry(clock=clock)


@pytest.fixture
def port(registry: Registry) -> NamingPortImpl:
    return NamingPortImpl(NamingService(registry), "default")


def registration(**kw: object) -> ports.Registration:
    fields: dict[str, object] = {"namespace": "default", "service": "orders", "host": "127.0.0.1", "port": 9000,
                                 "ttl": 1.0}
    fields.update(kw)
    return ports.Registration(**fields)  # type: ignore[arg-type]


def test_is_a_naming_port(port: NamingPortImpl) -> None:
    assert isinstance(port, ports.NamingPort)
    assert port.namespace == "default"


def test_register_heartbeat_deregister(port: NamingPortImpl) -> None:
    instance = port.register(registration(metadata={"env": "base"}, id="fixed-id"))
    assert (instance.id, instance.healthy, dict(instance.metadata)) == ("fixed-id", False, {"env": "base"})
    port.heartbeat("fixed-id")
    assert [i.healthy for i in port.instances("default", "orders")] == [True]
    port.set_isolated("fixed-id", True)
    assert port.all_instances()[0].isolated  # type: ignore[attr-defined]
    port.deregister("fixed-id")
    with pytest.raises(ports.UnknownInstance):
        port.heartbeat("fixed-id")
    with pytest.raises(ports.UnknownInstance):
        port.set_healthy("fixed-id", False)


def test_refusals_are_port_errors(port: NamingPortImpl) -> None:
    with pytest.raises(ports.PortError, match="port"):
        port.register(registration(port=0))


def test_dropped_heartbeats_succeed_but_count_for_nothing(port: NamingPortImpl, registry: Registry,
                                                          clock: Clock) -> None:
    instance = port.register(registration())
    port.heartbeat(instance.id)
    port.drop_heartbeats(instance.id)
    clock.now += 3.5  # more than TTL x 3 since the last heartbeat that counted
    port.heartbeat(instance.id)  # the sender sees success ...
    registry.sweep()
    assert not registry.instance(instance.id).healthy  # type: ignore[union-attr]  # ... naming saw nothing
    port.drop_heartbeats(instance.id, drop=False)
    port.heartbeat(instance.id)
    assert registry.instance(instance.id).healthy  # type: ignore[union-attr]
    with pytest.raises(ports.UnknownInstance):
        port.drop_heartbeats("nope")
    port.drop_heartbeats("nope", drop=False)  # lifting a drop that is not there is no error


def test_routing_rules(port: NamingPortImpl) -> None:
    rule = {"name": "r1", "namespace": "default", "service": "orders", "destinations": [{"labels": {}}]}
    port.replace_routing_rules("default", "orders", [rule])
    assert [r["name"] for r in port.routing_rules("default", "orders")] == ["r1"]
    with pytest.raises(ports.PortError):
        port.replace_routing_rules("default", "bad name!", [rule])
