"""Polaris fidelity (issue 13): a v2 rule with two sub-rules (feature env, then base) posted on the
Polaris console routes the real polaris-go client; the console's instance filters (host, port,
healthy, isolate, protocol, version, keys/values) and the heartbeat answer on an instance without
health check (400141) are Polaris's."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from devbox.mocks.naming.models import Code

from devbox.testing import PlatformThread, running_platform
from tests import httpc
from tests.integration.test_naming_server_polaris_go import probe  # noqa: F401  (the polaris-go build fixture)

TWO_SUB_RULES = {
    "name": "feature-x", "namespace": "default", "enable": True, "routing_policy": "RulePolicy",
    "routing_config": {"@type": "type.googleapis.com/v1.RuleRoutingConfig", "rules": [
        {"name": "feature", "sources": [{"service": "*", "namespace": "*", "arguments": [
            {"type": "CUSTOM", "key": "env", "value": {"type": "EXACT", "value": "feature-x"}}]}],
         "destinations": [{"service": "go-provider", "namespace": "default", "priority": 0, "weight": 100,
                           "labels": {"env": {"type": "EXACT", "value": "feature-x"}}}]},
        {"name": "base", "sources": [{"service": "*", "namespace": "*"}],
         "destinations": [{"service": "go-provider", "namespace": "default", "priority": 0, "weight": 100,
                           "labels": {"env": {"type": "EXACT", "value": "base"}}}]},
    ]},
}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_sub_rule_rule_routes_polaris_go(probe: Path, tmp_path: Path) -> None:  # noqa: F811
    with running_platform(tmp_path, components=["naming"]) as platform:
        console = platform.url("polaris_http") + "/naming/v1/instances"
        r = httpc.post(console, json=[
            {"service": "go-provider", "namespace": "default", "host": "127.0.0.2", "port": 18081,
             "metadata": {"env": "base"}},
            {"service": "go-provider", "namespace": "default", "host": "127.0.0.3", "port": 18082,
             "metadata": {"env": "feature-x"}},
        ])
        assert r.json()["code"] == 200000, r.text
        r = httpc.post(platform.url("polaris_http") + "/naming/v2/routings", json=[TWO_SUB_RULES])
        assert r.status_code == 200 and r.json()["code"] == 200000, r.text
        workdir = tmp_path / "run"
        workdir.mkdir()
        result = subprocess.run(
            [str(probe), "-addr", platform.target("polaris_grpc"), "-service", "go-provider", "-port", "18080",
             "-expect", "1", "-wait", "30s", "-route-values", "feature-x,other"],
            cwd=workdir, capture_output=True, text=True, timeout=90,
        )
        assert result.returncode == 0, f"polaris-go probe failed: {result.stderr[-4000:]}"
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        # sub-rule 2 takes any request, so even the probe's plain GetInstances (no caller metadata) is
        # routed to base; sub-rule 1 takes env=feature-x
        assert seen["all"] == ["127.0.0.2:18081"]
        assert seen["routed"] == {"feature-x": ["127.0.0.3:18082"], "other": ["127.0.0.2:18081"]}


def _instances(platform: PlatformThread, **params: str) -> list[tuple[str, int]]:
    r = httpc.get(platform.url("polaris_http") + "/naming/v1/instances",
                  params={"service": "svc", "namespace": "default", **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert int(body["amount"]) == len(body.get("instances", [])), body
    return sorted((i["host"], i["port"]) for i in body.get("instances", []))


def test_console_instance_filters_and_heartbeat_code(tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["naming"]) as platform:
        base = platform.url("polaris_http")
        r = httpc.post(base + "/naming/v1/instances", json=[
            {"service": "svc", "namespace": "default", "host": "10.0.0.1", "port": 1, "protocol": "grpc",
             "version": "v1", "metadata": {"env": "base"}},
            {"service": "svc", "namespace": "default", "host": "10.0.0.1", "port": 2, "version": "v2",
             "metadata": {"env": "feature-x"}},
            {"service": "svc", "namespace": "default", "host": "10.0.0.2", "port": 1, "isolate": True},
            {"service": "svc", "namespace": "default", "host": "10.0.0.3", "port": 3, "healthy": False},
        ])
        assert r.json()["code"] == 200000, r.text
        assert _instances(platform, port="1") == [("10.0.0.1", 1), ("10.0.0.2", 1)]
        assert _instances(platform, host="10.0.0.1") == [("10.0.0.1", 1), ("10.0.0.1", 2)]
        assert _instances(platform, host="10.0.0.1,10.0.0.3") == [("10.0.0.1", 1), ("10.0.0.1", 2), ("10.0.0.3", 3)]
        assert _instances(platform, host="10.0.0.1", port="2") == [("10.0.0.1", 2)]
        assert _instances(platform, isolate="true") == [("10.0.0.2", 1)]
        assert _instances(platform, healthy="false") == [("10.0.0.3", 3)]
        assert _instances(platform, healthy="true", isolate="false") == [("10.0.0.1", 1), ("10.0.0.1", 2)]
        assert _instances(platform, keys="env", values="feature-x") == [("10.0.0.1", 2)]
        assert _instances(platform, keys="env") == [("10.0.0.1", 1), ("10.0.0.1", 2)]
        assert _instances(platform, protocol="grpc") == [("10.0.0.1", 1)]
        assert _instances(platform, version="v2") == [("10.0.0.1", 2)]
        assert _instances(platform, port="9") == []
        r = httpc.get(base + "/naming/v1/instances", params={"service": "svc", "namespace": "default", "port": "x"})
        assert r.status_code == 400 and r.json()["code"] == int(Code.InvalidParameter), r.text
        paged = httpc.get(base + "/naming/v1/instances",
                          params={"service": "svc", "namespace": "default", "limit": "1"}).json()
        assert int(paged["amount"]) == 4 and int(paged["size"]) == 1  # amount counts before paging

        # an instance registered without a health check: Polaris answers HeartbeatOnDisabledIns
        r = httpc.post(base + "/v1/RegisterInstance",
                       json={"service": "svc", "namespace": "default", "host": "10.0.0.9", "port": 9})
        iid = r.json()["instance"]["id"]
        r = httpc.post(base + "/v1/Heartbeat", json={"id": iid})
        assert r.json()["code"] == 400141, r.text


def test_console_writes_refuse_an_item_that_is_not_an_object(tmp_path: Path) -> None:
    """[5] was a 500 on every console write (a probe's finding) and ["x"] was read as {}."""
    with running_platform(tmp_path, components=["naming"]) as platform:
        base = platform.url("polaris_http") + "/naming/v1/"
        for item in (5, None, True, "x", [1]):
            for path in ("instances", "services", "namespaces", "instances/delete", "services/delete"):
                r = httpc.post(base + path, json=[item])
                assert r.status_code == 400, (item, path, r.text)
                assert r.json()["code"] == int(Code.ParseException) and "item 0 is not a" in r.json()["info"], r.text
