"""The SDK's self-registration (devbox.sdk.naming.register) and its Polaris discovery, against a fake
Polaris HTTP client API (httpx.MockTransport): when it registers and when not (DEVBOX_REGISTER), the
bodies it sends (valid ``v1.Instance`` protobuf-JSON of polarismesh-specification, nothing unknown),
register → first heartbeat → heartbeats → register again when forgotten → deregister, the
advertised address for a wildcard bind, and the NamingClient reading ``/v1/Discover`` when no devbox
API is given. No sockets except one loopback listener standing in for the instance's own port."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from devbox.mocks.naming.polaris_pb import protos
from fastapi import FastAPI
from google.protobuf import json_format

from devbox import envvars
from devbox.polaris.ids import instance_id
from devbox.sdk.naming import NamingClient
from devbox.sdk.naming.register import InstanceSpec, SelfRegistration, _wrap_lifespan, advertised_host, self_register
from devbox.testing import wait_for

ENV = {
    envvars.DEVBOX_REGISTER: "self", envvars.DEVBOX_NAMING_HTTP: "http://127.0.0.1:8090",
    envvars.DEVBOX_SERVICE: "orders", envvars.PORT: "18081", envvars.DEVBOX_NAMESPACE: "default",
    envvars.DEVBOX_TAGS: "env=base,version=v2", envvars.DEVBOX_HOST: "127.0.0.1", envvars.DEVBOX_PROTOCOL: "http",
}


class FakePolaris:
    """Polaris's HTTP client API over a dict: every body must parse as the official message, strictly."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.instances: dict[str, dict[str, Any]] = {}
        self.heartbeats: dict[str, int] = {}
        self.lock = threading.Lock()
        self.revision = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        body = json.loads(request.content)
        pb = protos()
        message = pb.request.DiscoverRequest() if path == "/v1/Discover" else pb.service.Instance()
        json_format.ParseDict(body, message)  # strict: an unknown field or a wrong type raises
        with self.lock:
            self.calls.append((path, body))
            if path == "/v1/RegisterInstance":
                iid = instance_id(body["namespace"], body["service"], body["host"], body["port"])
                existed = iid in self.instances
                self.instances[iid] = {**body, "id": iid, "healthy": False, "isolate": False}
                self.revision += 1
                return self.answer(400201 if existed else 200000, instance={"id": iid})
            iid = body.get("id", "")
            if iid not in self.instances and path != "/v1/Discover":
                return self.answer(400202)
            if path == "/v1/Heartbeat":
                self.heartbeats[iid] = self.heartbeats.get(iid, 0) + 1
                self.instances[iid]["healthy"] = True
                return self.answer(200000)
            if path == "/v1/DeregisterInstance":
                del self.instances[iid]
                self.revision += 1
                return self.answer(200000)
            name = body["service"]["name"]
            found = [i for i in self.instances.values() if i["service"] == name]
            if not found:
                return self.answer(400202)
            revision = f"r{self.revision}"
            if body["service"].get("revision") == revision:
                return self.answer(200001)
            return self.answer(200000, service={"name": name, "revision": revision}, instances=found)

    @staticmethod
    def answer(code: int, **payload: Any) -> httpx.Response:
        return httpx.Response(code // 1000, json={"code": code, "info": "x", **payload})

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.calls]


@pytest.fixture
def polaris() -> FakePolaris:
    return FakePolaris()


@pytest.fixture
def port() -> Iterator[int]:
    """A listening loopback port: the instance's own server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _registration(polaris: FakePolaris, port: int, ttl: int = 5) -> SelfRegistration:
    spec = InstanceSpec.from_env({**ENV, envvars.PORT: str(port)})
    assert spec is not None
    return SelfRegistration(dataclasses.replace(spec, ttl=ttl), transport=httpx.MockTransport(polaris.handler))


def test_only_register_self_registers() -> None:
    assert InstanceSpec.from_env({**ENV, envvars.DEVBOX_REGISTER: "auto"}) is None  # devbox registers it
    assert InstanceSpec.from_env({k: v for k, v in ENV.items() if k != envvars.DEVBOX_REGISTER}) is None
    assert InstanceSpec.from_env({**ENV, envvars.DEVBOX_NAMING_HTTP: ""}) is None  # nowhere to register
    assert self_register(None, environ={**ENV, envvars.DEVBOX_REGISTER: "auto"}) is None
    spec = InstanceSpec.from_env(ENV)
    assert spec is not None and spec.port == 18081 and spec.metadata == {"env": "base", "version": "v2"}


def test_registers_heartbeats_and_deregisters(polaris: FakePolaris, port: int) -> None:
    reg = _registration(polaris, port, ttl=1)  # a heartbeat every 0.5 s
    reg.start()
    try:
        assert reg.registered.wait(10), polaris.calls
        iid = instance_id("default", "orders", "127.0.0.1", port)
        assert reg.id == iid
        sent = polaris.calls[0][1]
        assert sent["host"] == "127.0.0.1" and sent["port"] == port and sent["version"] == "v2"
        assert sent["health_check"] == {"type": "HEARTBEAT", "heartbeat": {"ttl": 1}} and sent["enable_health_check"]
        assert sent["metadata"]["env"] == "base"
        # routable at once: the first heartbeat follows the registration
        assert polaris.paths()[:2] == ["/v1/RegisterInstance", "/v1/Heartbeat"]
        assert polaris.instances[iid]["healthy"]
        # the server forgets it (a restart): the next heartbeat's 400202 makes it register again
        with polaris.lock:
            polaris.instances.clear()
        wait_for(lambda: iid in polaris.instances, timeout=10, what="registered again after being forgotten")
    finally:
        reg.stop()
    assert polaris.paths()[-1] == "/v1/DeregisterInstance" and reg.deregistered
    assert not polaris.instances


def test_waits_for_the_port_before_registering(polaris: FakePolaris) -> None:
    listening = threading.Event()
    reg = SelfRegistration(InstanceSpec.from_env(ENV),  # type: ignore[arg-type]
                           transport=httpx.MockTransport(polaris.handler),
                           is_listening=lambda host, port: listening.is_set())
    reg.start()
    try:
        assert not reg.registered.wait(0.3) and polaris.calls == []  # nothing listens: not discoverable yet
        listening.set()
        assert reg.registered.wait(10)
    finally:
        reg.stop()


def test_refused_registration_retries_without_raising(port: int) -> None:
    refusals = {"left": 2}
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        if request.url.path == "/v1/RegisterInstance" and refusals["left"]:
            refusals["left"] -= 1
            return httpx.Response(500, json={"code": 500000, "info": "store busy"})
        return httpx.Response(200, json={"code": 200000})

    spec = InstanceSpec.from_env({**ENV, envvars.PORT: str(port)})
    assert spec is not None
    reg = SelfRegistration(spec, transport=httpx.MockTransport(handler))
    reg.start()
    try:
        assert reg.registered.wait(10)
        assert seen[:3] == ["/v1/RegisterInstance"] * 3
    finally:
        reg.stop()


def test_wildcard_bind_advertises_the_address_on_the_route_to_naming() -> None:
    assert advertised_host("127.0.0.1", "http://polaris:8090") == "127.0.0.1"
    assert advertised_host("10.1.2.3", "http://polaris:8090") == "10.1.2.3"
    # a bind to every interface registers the local address that reaches the naming server
    assert advertised_host("0.0.0.0", "http://127.0.0.1:8090") == "127.0.0.1"
    spec = InstanceSpec.from_env({**ENV, envvars.DEVBOX_HOST: "0.0.0.0"})
    assert spec is not None and spec.probe_host == "127.0.0.1"


def test_naming_client_discovers_through_polaris_without_a_devbox_api(polaris: FakePolaris, port: int) -> None:
    client = NamingClient.from_env({envvars.DEVBOX_NAMING_HTTP: "http://127.0.0.1:8090",
                                    envvars.DEVBOX_SERVICE: "gateway"},
                                   watch_transport=httpx.MockTransport(polaris.handler), refresh=0.05)
    try:
        assert client.api_url is None and client.naming_http == "http://127.0.0.1:8090"
        assert client.resolves("orders")
        assert client.instances("orders") == []  # 400202: nothing registered under that name yet
        reg = _registration(polaris, port)
        reg.start()
        try:
            found = client.wait_for("orders", lambda got: any(i.healthy for i in got), timeout=10)
            assert found[0].address == f"127.0.0.1:{port}" and found[0].metadata["env"] == "base"
            assert client.pick("orders").port == port

            def revisions_sent() -> list[str]:
                with polaris.lock:
                    return [b["service"]["revision"] for p, b in polaris.calls
                            if p == "/v1/Discover" and b["service"].get("revision")]

            # later polls send the cached revision (and get 200001, unchanged, with no payload)
            assert wait_for(revisions_sent, timeout=10, what="a Discover poll carrying the cached revision")
            assert client.pick("orders").port == port
        finally:
            reg.stop()
    finally:
        client.close()


def test_an_apps_registration_lives_inside_its_lifespan() -> None:
    """Registered after the app's own startup, withdrawn before its own shutdown (callers stop
    picking the instance while it can still answer)."""
    events: list[str] = []

    @asynccontextmanager
    async def own(app: FastAPI) -> AsyncIterator[None]:
        events.append("app up")
        yield
        events.append("app down")

    class Recorder:
        def start(self) -> None:
            events.append("register")

        def stop(self) -> None:
            if "deregister" not in events:
                events.append("deregister")

    app = FastAPI(lifespan=own)
    assert _wrap_lifespan(app, Recorder())  # type: ignore[arg-type]

    async def serve() -> None:  # what Starlette's router does with the lifespan on startup/shutdown
        async with app.router.lifespan_context(app):
            events.append("serving")

    asyncio.run(serve())
    assert events == ["app up", "register", "serving", "deregister", "app down"]
