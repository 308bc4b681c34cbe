"""``devbox naming ...`` as a subprocess against a running platform (found through DEVBOX_API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox import envvars
from devbox.testing import PlatformThread, running_platform
from tests import httpc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> PlatformThread:
    root = tmp_path_factory.mktemp("naming-cli")
    with running_platform(root, components=["naming"]) as p:
        api = p.url("api") + "/api/naming"
        for port, env in ((8101, "base"), (8102, "feature-x")):
            httpc.post(api + "/instances", json={"service": "orders", "host": "127.0.0.1", "port": port,
                                                 "health_check": False, "metadata": {"env": env}})
        yield p


def devbox(platform: PlatformThread, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, envvars.DEVBOX_API: platform.url("api"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "devbox", "naming", *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def test_ls_show_isolate(platform: PlatformThread) -> None:
    listed = devbox(platform, "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [(s["name"], s["instances"]) for s in json.loads(listed.stdout)] == [("orders", 2)]

    isolated = devbox(platform, "isolate", "127.0.0.1:8102", "--json")
    assert isolated.returncode == 0, isolated.stderr
    assert json.loads(isolated.stdout)["isolated"] is True
    shown = devbox(platform, "show", "orders")
    assert shown.returncode == 0 and "isolated" in shown.stdout and "env=feature-x" in shown.stdout
    back = devbox(platform, "unisolate", json.loads(isolated.stdout)["id"][:10])
    assert back.returncode == 0 and "back in rotation" in back.stdout

    missing = devbox(platform, "isolate", "10.9.9.9:1")
    assert missing.returncode == 1 and "no instance" in missing.stderr


def test_rules_set_ls_explain(platform: PlatformThread, tmp_path: Path) -> None:
    rule_file = tmp_path / "rule.yaml"
    rule_file.write_text(
        "name: feature-env\nservice: '*'\nsources: [{arguments: [{key: env, value: '*'}]}]\n"
        "destinations:\n  - {labels: {env: $env}}\n  - {labels: {env: {type: IN, value: 'base,'}}, priority: 1}\n"
    )
    set_ = devbox(platform, "rules", "set", str(rule_file))
    assert set_.returncode == 0, set_.stderr
    listed = devbox(platform, "rules", "ls", "orders", "--json")
    assert [r["name"] for r in json.loads(listed.stdout)] == ["feature-env"]

    explained = devbox(platform, "explain", "orders", "--label", "env=feature-x", "--json")
    assert explained.returncode == 0, explained.stderr
    data = json.loads(explained.stdout)
    assert data["rule"] == "feature-env" and data["candidates"] == ["127.0.0.1:8102"]
    text = devbox(platform, "explain", "orders", "--label", "env=nowhere")
    assert text.returncode == 0 and "fell back" in text.stdout and "127.0.0.1:8101" in text.stdout

    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("name: r\ndestinations: [{labels: {}}]\nunknown_field: 1\n")
    bad = devbox(platform, "rules", "set", str(bad_file))
    assert bad.returncode == 1 and "unknown_field" in bad.stderr

    removed = devbox(platform, "rules", "rm", "feature-env")
    assert removed.returncode == 0, removed.stderr
    assert json.loads(devbox(platform, "rules", "ls", "--json").stdout) == []
