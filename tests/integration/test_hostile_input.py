"""Hostile input against the non-tracing listeners (issue 14, §3 items 6, 7 and 10): refused
with a 4xx in the protocol's own shape, never a 500, and the API stays responsive."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from devbox.mocks.naming.polaris_pb import protos

from devbox.testing import PlatformThread, running_platform
from tests import httpc

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
pb = protos()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root: Path = tmp_path_factory.mktemp("hostile")
    with running_platform(root, components=["naming", "metrics", "alerting"], platform={"read_timeout": 1.0}) as p:
        yield p


@pytest.mark.parametrize(("listener", "path"), [
    ("alertmanager", "/api/v2/silences"),
    ("alertmanager", "/api/v2/alerts"),
    ("api", "/api/metrics/custom"),
    ("polaris_http", "/v1/RegisterInstance"),
])
def test_json_nested_100000_deep_is_a_400(platform: PlatformThread, listener: str, path: str) -> None:
    answer = httpc.post(platform.url(listener) + path, content=DEEP, headers={"Content-Type": "application/json"})
    assert answer.status_code == 400, answer.text[:300]


def test_a_10000_character_instance_id_is_refused(platform: PlatformThread) -> None:
    long_id = "x" * 10_000
    with grpc.insecure_channel(platform.target("polaris_grpc")) as channel:
        answer = pb.grpcapi.PolarisGRPCStub(channel).RegisterInstance(
            pb.service.Instance(id={"value": long_id}, service={"value": "long"}, namespace={"value": "default"},
                                host={"value": "127.0.0.1"}, port={"value": 9000}), timeout=10)
    assert answer.code.value == 400130  # InvalidInstanceID
    api = platform.url("api")
    refused = httpc.post(api + "/api/naming/instances",
                         json={"service": "long", "host": "127.0.0.1", "port": 9001, "id": long_id})
    assert refused.status_code == 400
    assert all(len(i["id"]) <= 128 for i in httpc.get(api + "/api/naming/instances").json())


@pytest.mark.parametrize("name", ["1-bad", "a b", "", "x-y"])
def test_a_silence_matcher_that_is_not_a_label_name_is_refused(platform: PlatformThread, name: str) -> None:
    silence = {"matchers": [{"name": name, "value": "v", "isRegex": False}], "startsAt": "2030-01-01T00:00:00Z",
               "endsAt": "2030-01-02T00:00:00Z", "createdBy": "t", "comment": "c"}
    answer = httpc.post(platform.url("alertmanager") + "/api/v2/silences", json=silence)
    assert answer.status_code == 400, answer.text
    listed = httpc.get(platform.url("alertmanager") + "/api/v2/silences", params={"filter": "1-bad=v"})
    assert listed.status_code == 400


def test_prometheus_refuses_unknown_methods_in_its_envelope(platform: PlatformThread) -> None:
    prom = platform.url("prometheus")
    for method, path in [("POST", "/api/v1/admin/tsdb/delete_series"), ("PUT", "/api/v1/query"),
                         ("GET", "/api/v1/admin/tsdb/snapshot")]:
        answer = httpc.request(method, prom + path)
        assert answer.status_code in (404, 405), (method, path, answer.status_code)
        body = answer.json()
        assert body["status"] == "error" and body["errorType"] and body["error"], body


def test_alertmanager_answers_carry_a_content_type(platform: PlatformThread) -> None:
    am = platform.url("alertmanager") + "/api/v2"
    posted = httpc.post(am + "/alerts", json=[{"labels": {"alertname": "Hostile"}}])
    assert posted.status_code == 200 and posted.headers["content-type"].startswith("application/json")
    silence = {"matchers": [{"name": "alertname", "value": "Hostile", "isRegex": False}],
               "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-02T00:00:00Z", "createdBy": "t", "comment": "c"}
    sid = httpc.post(am + "/silences", json=silence).json()["silenceID"]
    deleted = httpc.delete(f"{am}/silence/{sid}")
    assert deleted.status_code == 200 and deleted.headers["content-type"].startswith("application/json")


def test_devbox_openapi_documents_400_not_422(platform: PlatformThread) -> None:
    api = platform.url("api")
    spec = httpc.get(api + "/openapi.json").json()
    validation = [(path, method) for path, ops in spec["paths"].items() for method, op in ops.items()
                  if "HTTPValidationError" in str(op.get("responses", {}).get("422", ""))]
    assert validation == []
    register = spec["paths"]["/api/naming/instances"]["post"]["responses"]
    assert "400" in register
    # and what it documents is what it answers
    assert httpc.post(api + "/api/naming/instances", json={"service": 5}).status_code == 400
    assert httpc.put(api + "/api/naming/instances").status_code == 405


def test_half_sent_bodies_are_timed_out_and_the_api_stays_responsive(platform: PlatformThread) -> None:
    host, port = platform.target("api").rsplit(":", 1)
    stalled = []
    for _ in range(200):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(b"POST /api/metrics/custom HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n{\"name\":")
        stalled.append(sock)
    try:
        took = []
        for _ in range(20):
            t0 = time.monotonic()
            assert httpc.get(platform.url("api") + "/healthz", timeout=5).status_code == 200
            took.append(time.monotonic() - t0)
        # generous bounds for a busy shared runner: stalled bodies must not hold the loop at all
        assert sorted(took)[len(took) // 2] < 0.25, f"/healthz median {sorted(took)[10]:.2f}s with stalled bodies"
        # each stalled request is answered 408 and its connection closed after the read timeout
        stalled[0].settimeout(10)
        answer = b""
        while chunk := stalled[0].recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        for sock in stalled[1:]:
            sock.settimeout(10)
            while sock.recv(4096):
                pass  # closed by the server: recv returns b""
    finally:
        for sock in stalled:
            sock.close()
