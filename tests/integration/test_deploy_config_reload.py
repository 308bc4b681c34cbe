"""devbox.yaml edited while the platform runs (issue 14 §2): services added, removed and changed are
applied as a rolling change; what only a restart applies is said; a broken edit changes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from devbox.config import Ports, load_config
from devbox.testing import PlatformThread, running_platform, wait_for
from tests.deploy_fakes import write_service
from tests.integration.test_deploy_pipeline import alive, deployed, events, registry_view, services


def _service(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "path": name, "readiness": {"http": "/healthz"}, "reload": False, "drain": 0.1, **fields}


def _write(path: Path, services: list[dict[str, Any]], **platform: Any) -> None:
    """Save as an editor does: a temporary file renamed over the old one."""
    doc = {"project": "reload", "platform": {"ports": dict.fromkeys(Ports.model_fields, 0), **platform},
           "services": services}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    os.replace(tmp, path)


def _platform(tmp_path: Path, services: list[dict[str, Any]]) -> tuple[Path, Any]:
    for svc in services:
        write_service(tmp_path / svc["name"])
    path = tmp_path / "devbox.yaml"
    _write(path, services)
    return path, running_platform(config=load_config(path), components=["naming", "deploy"])


def _pids(p: PlatformThread, service: str) -> list[int]:
    return [i["pid"] for i in services(p)[service]["instances"] if i["pid"]]


def _env(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if item)


def test_services_added_removed_and_changed_are_applied_rolling(tmp_path: Path) -> None:
    path, running = _platform(tmp_path, [_service("a", env={"V": "1"}), _service("b")])
    write_service(tmp_path / "c")
    with running as p:
        assert deployed(p) == []
        [old_a], [old_b] = _pids(p, "a"), _pids(p, "b")
        _write(path, [_service("a", env={"V": "2"}), _service("c")])

        def applied() -> bool:
            now = services(p)
            return ("b" not in now and now.get("c", {}).get("ready") == 1 and now["a"]["ready"] == 1
                    and bool(events(p, service="a", kind="reloaded")))

        wait_for(applied, 60, "b stopped, c ready and a replaced")
        said = events(p, service="devbox.yaml", kind="config_changed")
        assert len(said) == 1 and "added c; removed b; changed a (env)" in said[0]["message"], said
        [new_a] = services(p)["a"]["instances"]
        assert new_a["pid"] != old_a and _env(new_a["pid"])["V"] == "2"
        assert not alive(old_a) and not alive(old_b)
        assert registry_view(p, "a") == [(new_a["port"], True)]
        assert registry_view(p, "b") == []
        assert registry_view(p, "c") == [(services(p)["c"]["instances"][0]["port"], True)]
        # rolling: the new instance was ready before the old one was deregistered and stopped
        order = [(e["kind"], e["instance"]) for e in sorted(events(p, service="a"), key=lambda e: e["id"])]
        old_name = next(name for kind, name in order if kind == "started")
        assert order.index(("ready", new_a["name"])) < order.index(("deregistered", old_name))
        assert order.index(("deregistered", old_name)) < order.index(("stopped", old_name))
        b_kinds = [e["kind"] for e in events(p, service="b")]
        assert "deregistered" in b_kinds and "stopped" in b_kinds


def test_restart_only_keys_are_said_and_a_broken_edit_keeps_what_runs(tmp_path: Path) -> None:
    path, running = _platform(tmp_path, [_service("a")])
    with running as p:
        assert deployed(p) == []
        [pid] = _pids(p, "a")
        _write(path, [_service("a")], max_body_bytes=1000)
        changed = wait_for(lambda: events(p, service="devbox.yaml", kind="config_changed"), 30, "config_changed")
        assert changed[0]["message"] == "devbox.yaml changed platform: restart `devbox up` to apply"
        assert _pids(p, "a") == [pid]

        _write(path, [_service("a", replicas="many")])
        text = path.read_text().splitlines()
        line = next(n for n, row in enumerate(text, 1) if "replicas" in row)
        errors = wait_for(lambda: events(p, service="devbox.yaml", kind="config_error"), 30, "config_error")
        assert f"{path.resolve()}:{line}:" in errors[0]["message"] and "replicas" in errors[0]["message"]
        assert "the running services are kept" in errors[0]["message"]
        assert _pids(p, "a") == [pid] and services(p)["a"]["ready"] == 1

        # fixed: only the count changed, so the running instance stays and one more starts
        _write(path, [_service("a", replicas=2)], max_body_bytes=1000)
        # scale says 'scaled' once its new instance is ready and registered: wait for both, not the first
        wait_for(lambda: services(p)["a"]["ready"] == 2 and events(p, service="a", kind="scaled"), 30,
                 "a second instance of a, and its scaled event")
        assert pid in _pids(p, "a")
        assert [e["kind"] for e in events(p, service="a", kind="scaled")] == ["scaled"]
