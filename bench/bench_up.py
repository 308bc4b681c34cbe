"""Benchmark of `devbox up` and hot reload on the bundled example (scenarios/shop).

Figures, each with the baseline measured in the same run:
  1. `devbox up` (a real subprocess) → platform ready, and → all services ready, against the
     services' own start.sh run bare (same machine, same builds, no devbox, all in parallel);
  2. hot reload: time from a file write to a new instance serving, and the failed requests a
     steady client sees meanwhile (it resolves through devbox naming with the SDK, picking an
     instance per request, and calls it with plain httpx: no retries, no failover);
  3. platform RSS when idle, against a bare Python interpreter.

Usage: python bench/bench_up.py [--port-base 23040] [--example scenarios/shop] [--rounds 5]
Works on a copy of the example in a temp folder; stops everything it started. Bytecode is cached (as a
user has it, bench_start's build/pycache): a first pair of starts, not counted, warms it; then --rounds
pairs (bare start, devbox up) alternate and the median ratio is printed — single pairs on a shared
2-core VM vary by +-0.15.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from bench_start import PY_ENV, stop  # bytecode cached as a user has it (this VM sets PYTHONDONTWRITEBYTECODE)

REPO = Path(__file__).resolve().parent.parent
LISTENERS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(example: Path, port_base: int) -> tuple[Path, dict[str, Any]]:
    work = Path(tempfile.mkdtemp(prefix="bench-up-"))
    root = work / example.name
    shutil.copytree(example, root, ignore=shutil.ignore_patterns(".devbox", "__pycache__"))
    config = yaml.safe_load((root / "devbox.yaml").read_text())
    config.setdefault("platform", {})["ports"] = {name: port_base + i for i, name in enumerate(LISTENERS)}
    with (root / "devbox.yaml").open("w") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return root, config


def ready(service: dict[str, Any], port: int) -> bool:
    check = service.get("readiness") or {}
    try:
        if check.get("http"):
            return httpx.get(f"http://127.0.0.1:{port}{check['http']}", timeout=1).status_code < 300
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except (OSError, httpx.HTTPError):
        return False


def bare_start(root: Path, config: dict[str, Any]) -> float:
    """Every instance's start.sh with only PORT set, in parallel; seconds until all answer readiness."""
    for svc in config["services"]:
        if svc.get("build"):
            subprocess.run(svc["build"], shell=True, cwd=root / svc["path"], check=True, capture_output=True)
    procs, waiting = [], []
    started = time.monotonic()
    for svc in config["services"]:
        for _ in range(int(svc.get("replicas", 1))):
            port = free_port()
            env = {**PY_ENV, "PORT": str(port)}
            procs.append(subprocess.Popen(svc.get("start", "./start.sh"), shell=True, cwd=root / svc["path"],
                                          env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True))
            waiting.append((svc, port))
    try:
        while waiting:
            waiting = [(svc, port) for svc, port in waiting if not ready(svc, port)]
            if time.monotonic() - started > 120:
                raise RuntimeError(f"bare start: not ready after 120s: {[s['name'] for s, _ in waiting]}")
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        for proc in procs:
            with_group(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with_group(proc.pid, signal.SIGKILL)


def with_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def devbox_up(root: Path) -> tuple[subprocess.Popen[str], float, float, float]:
    """Start `devbox up`; (process, seconds to platform ready, to all services ready, platform's own start)."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env={**PY_ENV, "COLUMNS": "200"})
    platform_s = services_s = None
    inside = 0.0
    assert proc.stdout is not None
    for line in proc.stdout:
        if "platform ready in" in line and platform_s is None:
            platform_s = time.monotonic() - started
            inside = float(line.split("platform ready in", 1)[1].split("s", 1)[0].strip())
        if "service(s) ready in" in line:
            services_s = time.monotonic() - started
            break
        if "error" in line.lower():
            print(line, end="", file=sys.stderr)
    if platform_s is None or services_s is None:
        proc.kill()
        raise RuntimeError(f"devbox up did not come up (exit {proc.wait()})")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep the pipe drained
    return proc, platform_s, services_s, inside


def hot_reload(root: Path, api: str, service: str, path: str) -> dict[str, Any]:
    from devbox.sdk.naming import NamingClient

    client = NamingClient(api)
    before = {i.id for i in client.wait_for(service, lambda found: len(found) > 0)}
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0, "first_new": None, "errors": []}
    write_at: list[float] = []

    def steady() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                instance = client.pick(service)
                try:
                    http.get(f"http://{instance.address}/healthz").raise_for_status()
                    stats["ok"] += 1
                    if write_at and instance.id not in before and stats["first_new"] is None:
                        stats["first_new"] = time.monotonic() - write_at[0]
                except httpx.HTTPError as exc:
                    stats["failed"] += 1
                    stats["errors"].append(f"{instance.address}: {exc!r}")
                time.sleep(0.005)

    thread = threading.Thread(target=steady)
    thread.start()
    time.sleep(1.0)
    source = root / path
    original = source.read_text()
    events_before = len(httpx.get(api + "/api/deploy/events", params={"kind": "reloaded", "limit": 5000}).json()
                        ["events"])
    write_at.append(time.monotonic())
    source.write_text(original + "\n# touched by bench_up\n")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = httpx.get(api + "/api/deploy/events", params={"kind": "reloaded", "limit": 5000}).json()["events"]
        if len(done) > events_before:
            break
        time.sleep(0.05)
    all_replaced = time.monotonic() - write_at[0]
    time.sleep(1.0)
    stop.set()
    thread.join()
    client.close()
    source.write_text(original)
    return {**stats, "all_replaced": all_replaced}


def idle_rss(pid: int) -> int:
    """The platform's RSS after settling."""
    time.sleep(3.0)
    return int(psutil.Process(pid).memory_info().rss)


def idle_cpu(pid: int, seconds: float = 10.0) -> dict[str, float]:
    """CPU over ``seconds`` of an idle project (percent of one core): the platform's own process, its
    tracing workers, and the instances it runs (what the services do idle, probed: the baseline)."""
    root = psutil.Process(pid)
    tree = [root, *root.children(recursive=True)]

    def part(p: psutil.Process) -> str:
        if p.pid == pid:
            return "platform"
        with contextlib.suppress(psutil.Error):  # gone meanwhile: its CPU is not counted below either
            if "devbox.mocks.tracing" in " ".join(p.cmdline()):
                return "tracing workers"
        return "instances"

    def cpu() -> dict[int, float]:
        out = {}
        for p in tree:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                out[p.pid] = times.user + times.system
        return out

    parts = {p.pid: part(p) for p in tree}
    before = cpu()
    time.sleep(seconds)
    after = cpu()
    shares = {"platform": 0.0, "tracing workers": 0.0, "instances": 0.0}
    if "tracing workers" not in parts.values():
        shares["tracing workers"] = math.nan  # started with the first spans: none came
    for p, used in after.items():
        if p in before:
            shares[parts[p]] += (used - before[p]) / seconds * 100
    return shares


def bare_python_rss() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    time.sleep(0.5)
    try:
        return psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port-base", type=int, default=23040)
    parser.add_argument("--example", type=Path, default=REPO / "scenarios" / "shop")
    parser.add_argument("--reload-service", default="users")
    parser.add_argument("--rounds", type=int, default=5, help="bare/devbox start pairs after the warm-up pair")
    args = parser.parse_args()

    root, config = prepare(args.example, args.port_base)
    services = config["services"]
    instances = sum(int(s.get("replicas", 1)) for s in services)
    print(f"example: {args.example} ({len(services)} services, {instances} instances), copy in {root}")
    ratios = []
    for round_ in range(args.rounds + 1):  # round 0 warms the bytecode cache: not counted
        bare = bare_start(root, config)
        proc, platform_s, services_s, inside = devbox_up(root)
        if round_ == 0:
            stop(proc)
            continue
        ratios.append(services_s / bare)
        print(f"round {round_}: bare start.sh, all instances ready {bare:5.2f} s; devbox up -> platform ready "
              f"{platform_s:5.2f} s ({inside:.2f} s of it loading components, binding, starting; the rest "
              f"interpreter and CLI imports), -> all services ready {services_s:5.2f} s ({services_s / bare:.2f}x)")
        if round_ < args.rounds:
            stop(proc)
    print(f"devbox up -> all services ready / bare start: median {statistics.median(ratios):.2f}x "
          f"(min {min(ratios):.2f}, max {max(ratios):.2f}, {len(ratios)} rounds)")
    try:
        runtime = json.loads((root / ".devbox" / "platform.json").read_text())

        rss = idle_rss(runtime["pid"])
        python_rss = bare_python_rss()
        print(f"platform RSS idle:                        {rss / 2**20:6.1f} MiB ({rss / python_rss:.1f}x a bare "
              f"python, {python_rss / 2**20:.1f} MiB)")
        shares = idle_cpu(runtime["pid"])
        workers = shares["tracing workers"]
        devbox_share = shares["platform"] + (0.0 if math.isnan(workers) else workers)
        print(f"CPU idle, % of one core over 10 s:        platform {shares['platform']:.1f} (probes, heartbeats, "
              "alert rules), its tracing workers "
              f"{'not started (no span yet)' if math.isnan(workers) else f'{workers:.1f}'}; the {instances} "
              f"instances {shares['instances']:.1f} (devbox / instances "
              f"{devbox_share / max(shares['instances'], 0.01):.2f}x)")

        svc = next(s for s in services if s["name"] == args.reload_service)
        app = next(p.name for p in (root / svc["path"]).glob("*.py") if p.name == "app.py")
        result = hot_reload(root, runtime["api"], svc["name"], f"{svc['path']}/{app}")
        first = result["first_new"]
        print(f"hot reload ({svc['name']}, {svc.get('replicas', 1)} instances): write -> new instance serving: "
              f"{first:.2f} s; all replaced: {result['all_replaced']:.2f} s ({result['all_replaced'] / bare:.2f}x "
              "bare start)" if first is not None else "hot reload: no new instance served")
        total = result["ok"] + result["failed"]
        print(f"requests during the reload window: {total}, failed: {result['failed']}")
        for error in result["errors"][:5]:
            print("   ", error)
    finally:
        stop(proc)
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
