"""Start-up figures of issue 15 ("platform up <= 1 s", "`devbox status` <= 0.3 s"), each next to a
baseline measured in the same run.

  1. `devbox up` of an empty project: seconds until every listener answers (HTTP: any response,
     e.g. the 503 "starting" a listener gives while components start; gRPC: an HTTP/2 handshake),
     and until every listener serves for real (api /healthz 200 "ok", the other HTTP listeners no
     longer 503 "starting"); the CPU the process used by then;
  2. `devbox status` against that running platform, shell to exit, and `python -X importtime`'s
     total import time of it, against `python -c pass` (best of --runs each).

Usage: python bench/bench_start.py [--runs 5]
Bytecode is cached (as a user has it) under build/pycache.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
LISTENERS = ("api", "otlp_http", "otlp_grpc", "zipkin", "polaris_grpc", "polaris_http", "prometheus", "alertmanager")
GRPC_LISTENERS = ("otlp_grpc", "polaris_grpc")
PY_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
PY_ENV["PYTHONPYCACHEPREFIX"] = str(ROOT / "build" / "pycache")
POLL = httpx.Client(timeout=1, verify=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(name: str, port: int, *, handshake: bool = True) -> bool:
    """Any answer at all: what a client sees instead of 'connection refused'. Without ``handshake``
    a gRPC listener answers once it accepts a connection (grpc is loaded by a client's first bytes,
    so a handshake would load it: the idle memory figure probes without)."""
    if name in GRPC_LISTENERS:
        if not handshake:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        return http2_answers(port)
    return POLL.get(f"http://127.0.0.1:{port}/healthz").status_code > 0


def http2_answers(port: int) -> bool:
    """The server answers an HTTP/2 connection preface with its SETTINGS frame. A raw socket, not a
    grpc channel: a channel that tried before the port was bound waits out its reconnect backoff
    (~1 s), which would be counted as devbox's start."""
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        return len(sock.recv(9)) > 0


def serves(name: str, port: int, *, handshake: bool = True) -> bool:
    """Served by the real app: api /healthz says ok; other HTTP listeners no longer answer 'starting'."""
    if name in GRPC_LISTENERS:
        return answers(name, port, handshake=handshake)
    response = POLL.get(f"http://127.0.0.1:{port}/healthz")
    if name == "api":
        return response.status_code == 200
    return not (response.status_code == 503 and "starting" in response.text)


def up_empty(project: Path, *, handshake: bool = True,
             ports: dict[str, int] | None = None) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
    ports = ports or {n: free_port() for n in LISTENERS}
    (project / "devbox.yaml").write_text("project: empty\nplatform:\n  ports:\n"
                                         + "".join(f"    {n}: {p}\n" for n, p in ports.items()) + "services: []\n")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "devbox", "up"], cwd=project, env=PY_ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first: dict[str, float] = {}
    real: dict[str, float] = {}
    cpu_answer = 0.0
    while len(real) < len(ports) and time.monotonic() - started < 60:
        for name, port in ports.items():
            with contextlib.suppress(Exception):
                if name not in first and answers(name, port, handshake=handshake):
                    first[name] = time.monotonic() - started
                    if len(first) == len(ports):
                        times = psutil.Process(proc.pid).cpu_times()
                        cpu_answer = times.user + times.system
                if name in first and name not in real and serves(name, port, handshake=handshake):
                    real[name] = time.monotonic() - started
        time.sleep(0.005)
    if len(real) < len(ports):
        proc.kill()
        raise RuntimeError(f"devbox up: {set(ports) - set(real)} not serving after 60 s")
    cpu = psutil.Process(proc.pid).cpu_times()
    return proc, {"answer_s": max(first.values()), "serve_s": max(real.values()), "cpu_s": cpu.user + cpu.system,
                  "cpu_answer_s": cpu_answer}


def wall(argv: list[str], cwd: Path) -> float:
    started = time.monotonic()
    subprocess.run(argv, cwd=cwd, env=PY_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.monotonic() - started


def import_us(argv: list[str], cwd: Path) -> int:
    """Sum of the top-level cumulative import times `-X importtime` reports, microseconds."""
    out = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=cwd, env=PY_ENV, capture_output=True,
                         text=True, check=False).stderr
    return sum(int(m.group(1)) for m in re.finditer(r"^import time:\s+\d+ \|\s+(\d+) \| (\S.*)$", out, re.M)
               if not m.group(2).startswith(" "))


def stop(proc: subprocess.Popen[Any]) -> None:
    """Ctrl-C a `devbox up`, as a user stops it (it stops its services)."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; best of {args.runs}")
    subprocess.run([sys.executable, "-m", "devbox", "--help"], env=PY_ENV, capture_output=True, check=False)  # pycache
    ups: list[dict[str, float]] = []
    status_s: list[float] = []
    status_imp: list[int] = []
    bare_s: list[float] = []
    bare_imp: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-start-") as tmp:
        for run in range(args.runs):
            project = Path(tmp) / f"empty{run}"
            project.mkdir()
            proc, figures = up_empty(project)
            try:
                ups.append(figures)
                status_s.append(wall([sys.executable, "-m", "devbox", "status"], project))
                bare_s.append(wall([sys.executable, "-c", "pass"], project))
                status_imp.append(import_us(["-m", "devbox", "status"], project))
                bare_imp.append(import_us(["-c", "pass"], project))
            finally:
                stop(proc)
    best = {key: min(u[key] for u in ups) for key in ups[0]}
    print(f"empty project, devbox up -> every listener answers:  {best['answer_s']:.2f} s "
          f"(runs: {', '.join(format(u['answer_s'], '.2f') for u in ups)}); CPU by then {best['cpu_answer_s']:.2f} s")
    print(f"empty project, devbox up -> every listener serving:  {best['serve_s']:.2f} s "
          f"(runs: {', '.join(format(u['serve_s'], '.2f') for u in ups)}); CPU by then {best['cpu_s']:.2f} s")
    print(f"devbox status, shell to exit:  {min(status_s):.3f} s vs python -c pass {min(bare_s):.3f} s "
          f"({min(status_s) / min(bare_s):.1f}x)")
    print(f"devbox status, import time:    {min(status_imp) / 1e6:.3f} s vs python -c pass "
          f"{min(bare_imp) / 1e6:.3f} s ({min(status_imp) / max(1, min(bare_imp)):.1f}x)")


if __name__ == "__main__":
    main()
