"""An acknowledged naming write survives ``kill -9`` (issue 14, §3 item 3).

A real ``devbox up`` (naming only, loopback, ephemeral ports) takes a bounded registration and
deregistration load from a few client threads; it is killed with SIGKILL while writes are in
flight, twice, restarting on the same state. Then every registration that was acknowledged (and
not later asked to be deregistered) is in naming.db and served after a restart, and no
acknowledged deregistration comes back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from devbox.testing import running_platform, wait_for
from tests import httpc

WRITERS = 4
SERVICE = "durable"


@dataclass
class Ledger:
    """What the clients were told (acknowledged) and what they asked for, per instance port."""

    registered: set[int] = field(default_factory=set)
    deregister_sent: set[int] = field(default_factory=set)
    deregistered: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _start(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    runtime = root / ".devbox" / "platform.json"
    runtime.unlink(missing_ok=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(root / "cache")}
    env.pop("DEVBOX_TOKEN", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devbox", "up", "-f", str(root / "devbox.yaml"), "--components", "naming"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )

    def api() -> str | None:
        try:
            data = json.loads(runtime.read_text())
        except (OSError, ValueError):
            return None
        return str(data["api"]) if data.get("pid") == proc.pid else None

    return proc, wait_for(api, 60, what="devbox up to write its runtime file")


def _writer(api: str, ledger: Ledger, first_port: int, stop: threading.Event) -> None:
    """Register instances one after another; deregister every third one once it was acknowledged."""
    port = first_port
    with httpx.Client(base_url=api, timeout=5) as client:
        while not stop.is_set():
            body = {"service": SERVICE, "host": "127.0.0.1", "port": port, "ttl": 60}
            try:
                answer = client.post("/api/naming/instances", json=body)
            except httpx.HTTPError:
                return  # the platform was killed
            if answer.status_code == 201:
                with ledger.lock:
                    ledger.registered.add(port)
                if port % 3 == 0:
                    with ledger.lock:
                        ledger.deregister_sent.add(port)
                    try:
                        gone = client.delete(f"/api/naming/instances/127.0.0.1:{port}")
                    except httpx.HTTPError:
                        return
                    if gone.status_code == 204:
                        with ledger.lock:
                            ledger.deregistered.add(port)
            port += 1


def _load_then_kill(root: Path, ledger: Ledger, base_port: int) -> None:
    proc, api = _start(root)
    stop = threading.Event()
    threads = [
        threading.Thread(target=_writer, args=(api, ledger, base_port + i * 5000, stop), daemon=True)
        for i in range(WRITERS)
    ]
    before = len(ledger.registered)
    for thread in threads:
        thread.start()
    try:
        # kill mid-load: once a good number of writes were acknowledged in this round
        wait_for(lambda: len(ledger.registered) - before >= 60, 60, what="60 acknowledged registrations")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        stop.set()
        for thread in threads:
            thread.join(10)


def test_acknowledged_registrations_and_deregistrations_survive_kill_9(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text(
        "project: durable\nplatform:\n  ports: {api: 0, polaris_http: 0, polaris_grpc: 0}\n"
    )
    ledger = Ledger()
    for round_ in range(2):
        _load_then_kill(tmp_path, ledger, 1000 + round_ * 20000)

    assert ledger.deregistered, "the load deregistered nothing: the test proves nothing"
    must_exist = ledger.registered - ledger.deregister_sent
    with running_platform(tmp_path, components=["naming"]) as platform:
        listed = httpc.get(platform.url("api") + "/api/naming/instances", params={"service": SERVICE}).json()
    served = {i["port"] for i in listed}
    lost = must_exist - served
    back = ledger.deregistered & served
    assert not lost, f"{len(lost)} of {len(must_exist)} acknowledged registrations lost: {sorted(lost)[:10]}"
    assert not back, f"{len(back)} acknowledged deregistrations came back: {sorted(back)[:10]}"
