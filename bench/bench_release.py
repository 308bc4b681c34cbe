"""Release figures: failed requests at a stable entry port during hot reloads of the entry service,
and how long a release batch takes to switch traffic (the weight writes, and until the client sees it).

A fake stdlib service (tests/deploy_fakes.py) runs behind its entry port on a platform in this
process (naming, faults, deploy; ephemeral ports). A steady client (one new connection per request,
as a curl loop) calls the entry port while the service's code changes ``--reloads`` times; then a
release with batches 50,100 measures the switch time.

Run: ``python bench/bench_release.py [--reloads 3]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.reload import DEBOUNCE_S

from devbox.testing import running_platform

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.deploy_fakes import write_service


def _wait(check: Any, timeout: float = 60.0, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError("condition not met")


def cold_start(folder: Path) -> float:
    """The service's bare cold start: ``start.sh`` spawned on a free port until /healthz answers 200."""
    import os
    import socket
    import subprocess

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    proc = subprocess.Popen(["sh", "start.sh"], cwd=folder, env={**os.environ, "PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _wait(up, every=0.01)
        return time.monotonic() - started
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reloads", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        folder = write_service(root / "gw")
        cold = sorted(cold_start(folder) for _ in range(3))[1]
        svc = ServiceConfig(name="gateway", path="gw", readiness={"http": "/healthz"})
        with running_platform(root, components=["naming", "faults", "deploy"], services=[svc]) as p:
            p.call(p.component("deploy").wait_deployed(60), timeout=70)  # type: ignore[attr-defined]

            def services() -> dict[str, Any]:
                return {d["key"]: d for d in httpx.get(p.url() + "/api/deploy/services").json()["services"]}

            entry = services()["gateway"]["front_port"]
            stop, counts, seen, first = threading.Event(), {"ok": 0, "failed": 0}, {}, {}

            def client() -> None:
                with httpx.Client(timeout=5) as http:
                    while not stop.is_set():
                        try:
                            answer = http.get(f"http://127.0.0.1:{entry}/")
                            answer.raise_for_status()
                            counts["ok"] += 1
                            body = answer.json()
                            seen[body["version"] + body["tags"]] = time.monotonic()
                            first.setdefault(body["version"], seen[body["version"] + body["tags"]])
                        except (httpx.HTTPError, ValueError):
                            counts["failed"] += 1

            thread = threading.Thread(target=client)
            thread.start()
            reload_s: list[float] = []
            first_ready: list[float] = []  # the reload's start -> its new instance ready and registered
            try:
                for n in range(args.reloads):
                    events = p.url() + "/api/deploy/events"
                    before = len(httpx.get(events, params={"kind": "reloaded"}).json()["events"])
                    saved = time.monotonic()
                    (folder / "VERSION").write_text(f"{n + 2}\n")
                    reload_s.append(_wait(lambda v=str(n + 2): first.get(v), every=0.01) - saved)
                    _wait(lambda b=before: len(httpx.get(p.url() + "/api/deploy/events",
                                                         params={"kind": "reloaded"}).json()["events"]) > b)
                    first_ready.append(services()["gateway"]["last_reload"]["first_ready_s"])
                reloads_ok, reloads_failed = counts["ok"], counts["failed"]
                started = time.monotonic()
                body = {"service": "gateway", "version": "v9", "batches": [50, 100], "pause": 1}
                httpx.post(p.url() + "/api/deploy/releases", json=body).raise_for_status()
                _wait(lambda: any("version=v9" in k for k in seen))
                first_seen = min(t for k, t in seen.items() if "version=v9" in k) - started
                rel = _wait(lambda: (r := httpx.get(p.url() + "/api/deploy/releases/current").json())["state"]
                            in ("succeeded", "rolled_back", "failed") and r)
            finally:
                stop.set()
                thread.join()
            print(f"entry reloads: {args.reloads}; requests during them {reloads_ok + reloads_failed}, "
                  f"failed {reloads_failed}")
            print("file save -> the new code answering at the entry: "
                  + ", ".join(f"{r:.2f} s" for r in reload_s)
                  + f"; the service's bare cold start (start.sh -> /healthz 200, median of 3) {cold:.2f} s: "
                  + ", ".join(f"{r / cold:.1f}x" for r in reload_s)
                  + f" (the watcher waits {DEBOUNCE_S} s for saves to settle; of that, reload start -> new "
                  + "instance ready and registered " + ", ".join(f"{r:.2f} s" for r in first_ready) + ")")
            print(f"release {rel['state']}: batch switch (weight writes) "
                  + ", ".join(f"{s * 1000:.1f} ms" for s in rel["switch_seconds"])
                  + f"; first v9 answer at the entry {first_seen:.2f}s after the release request (includes start)")
            print(f"all requests: {counts['ok'] + counts['failed']}, failed {counts['failed']}")


if __name__ == "__main__":
    main()
