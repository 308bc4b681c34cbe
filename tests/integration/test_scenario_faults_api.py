"""The faults component's HTTP API (/api/faults) and its proxy, on a real platform."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx

from devbox.platform.ports import FaultFront
from devbox.testing import running_platform
from tests import httpc


def test_a_fault_is_refused_while_faults_are_disabled(tmp_path: Path) -> None:
    # issue 14: it answered 201 and then did nothing (no proxy stands in front of any instance)
    with running_platform(tmp_path, components=["naming", "faults"]) as p:
        api = p.url("api") + "/api/faults"
        refused = httpc.post(api, json={"service": "payment", "error_rate": 0.5})
        assert refused.status_code == 409 and "faults.enabled is false" in refused.json()["reason"]
        assert httpc.get(api).json() == {"enabled": False, "faults": [], "dropped_heartbeats": []}


def test_faults_crud_and_bad_input(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["naming", "faults"], faults={"enabled": True}) as p:
        api = p.url("api") + "/api/faults"
        created = httpc.post(api, json={"service": "payment", "caller": "orders", "error_rate": 0.5, "status": 502})
        assert created.status_code == 201, created.text
        rule = created.json()
        assert rule["caller"] == "orders" and rule["stats"]["hits"] == 0
        assert httpc.get(f"{api}/{rule['id']}").json()["status"] == 502
        listed = httpc.get(api).json()
        assert [f["id"] for f in listed["faults"]] == [rule["id"]] and listed["enabled"] is True

        bad = httpc.post(api, json={"service": "payment"})
        assert bad.status_code == 400 and "needs latency_ms, error_rate or abort_rate" in bad.json()["reason"]
        bad = httpc.post(api, json={"service": "payment", "error_rate": 3, "colour": "red"})
        assert bad.status_code == 400 and "error_rate" in bad.json()["reason"] and "colour" in bad.json()["reason"]
        assert httpc.post(api, content=b"{not json", headers={"content-type": "application/json"}).status_code == 400

        assert httpc.delete(f"{api}/{rule['id']}").json() == {"removed": rule["id"]}
        assert httpc.delete(f"{api}/{rule['id']}").status_code == 404
        assert httpc.get(f"{api}/nope").status_code == 404
        missing = httpc.put(f"{api}/heartbeats/nope", json={"drop": True})
        assert missing.status_code == 404
        assert httpc.put(f"{api}/circuits/nope", json={"drop": True}).status_code == 404
        httpc.post(api, json={"service": "x", "latency_ms": 5})
        assert httpc.delete(api).json() == {"removed": 1}
        assert httpc.get(p.url("api") + "/api/platform").json()["components"]["faults"]["rules"] == 0


async def _upstream() -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_front_proxies_and_applies_rules_by_path(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["naming", "faults"], faults={"enabled": True}) as p:
        assert p.platform is not None
        faults = p.platform.ctx.lookup(FaultFront)
        assert faults is not None
        server, port = p.call(_upstream())
        host, front = p.call(faults.front("web", "web-1", "127.0.0.1", port))
        assert front != port
        url = f"http://{host}:{front}"
        assert httpc.get(url + "/a").text == "ok"
        assert p.call(faults.front("web", "web-1", "127.0.0.1", port)) == (host, front)  # idempotent
        rule = {"service": "web", "path": "/pay", "error_rate": 1, "status": 418}
        assert httpc.post(p.url("api") + "/api/faults", json=rule).status_code == 201
        assert httpc.get(url + "/a").status_code == 200
        answer = httpc.get(url + "/pay/1")
        assert answer.status_code == 418 and answer.headers["x-devbox-fault"] == "418"
        proxies = httpc.get(p.url("api") + "/api/faults/proxies").json()
        assert proxies[0]["upstream"] == f"127.0.0.1:{port}" and proxies[0]["mode"] == "http"
        # the instance dies: the proxy refuses like it would, so callers fail over
        server.close()
        p.call(server.wait_closed())
        try:
            httpc.get(url + "/a")
        except httpx.HTTPError:
            pass
        with socket.socket() as probe:
            assert probe.connect_ex((host, front)) != 0
