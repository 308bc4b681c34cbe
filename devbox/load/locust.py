"""Locust as subprocesses: a headless master (or a lone runner) and N local workers.

Locust monkey-patches the standard library with gevent on import, so it never enters a devbox
process: everything here builds command lines, starts ``python -m locust`` and reads the files it
writes. While a run goes, :class:`LiveStats` reads ``<prefix>_stats_history.csv`` (written every
second with ``--csv-full-history``) and computes req/s from the request counts itself — Locust's own
"current" rate stays 0 for the first seconds. The final figures come from ``--json`` (printed on
stdout at exit; it holds every response-time bucket, so any percentile is exact).

A stop (Ctrl-C, the deadline) sends SIGTERM to the master: Locust stops its users, writes its
CSV and JSON, then exits — what was measured is kept (its HTML report is written only by a run
that reaches its end).
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.load.config import LoadError

LOG = logging.getLogger(__name__)

#: Percentiles shown live and kept per entry.
PERCENTILES = (0.5, 0.95, 0.99)
INSTALL_HINT = "pip install 'devbox[load]'  (or: pip install locust)"


def available() -> bool:
    """Whether Locust is installed for this interpreter (found without importing it)."""
    return importlib.util.find_spec("locust") is not None


def require_locust() -> None:
    if not available():
        raise LoadError(f"Locust is not installed for {sys.executable}; it runs devbox's load tests: {INSTALL_HINT}")


def check_locustfile(path: Path, *, timeout: float = 60.0) -> list[str]:
    """Import the locustfile in a Locust subprocess (``--list``); its user classes, or LoadError
    with the import error's last lines."""
    require_locust()
    if not path.is_file():
        raise LoadError(f"locustfile {path} does not exist")
    proc = subprocess.run([sys.executable, "-m", "locust", "-f", str(path), "--list"], capture_output=True,
                          text=True, timeout=timeout, cwd=path.parent, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise LoadError(f"locustfile {path} does not import:\n{tail}")
    return [line.strip() for line in proc.stdout.splitlines()[1:] if line.strip()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Plan:
    """What one Locust run does: the command lines follow from it."""

    locustfile: Path
    host: str
    users: int
    spawn_rate: float
    seconds: float
    out_dir: Path
    tags: Sequence[str] = ()
    exclude_tags: Sequence[str] = ()
    workers: int = 0
    #: workers that join from other machines (``devbox load worker --master HOST``)
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int = 0
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def csv_prefix(self) -> Path:
        return self.out_dir / "locust"

    def master_command(self) -> list[str]:
        cmd = [sys.executable, "-m", "locust", "-f", str(self.locustfile), "--headless", "-u", str(self.users),
               "-r", f"{self.spawn_rate:g}", "-t", f"{max(1, round(self.seconds))}s", "--host", self.host,
               "--csv", str(self.csv_prefix), "--csv-full-history", "--html", str(self.out_dir / "report.html"),
               "--json", "--stop-timeout", "5", "--exit-code-on-error", "0"]
        if self.tags:
            cmd += ["--tags", *self.tags]
        if self.exclude_tags:
            cmd += ["--exclude-tags", *self.exclude_tags]
        if self.workers or self.remote_workers:
            expected = self.workers + self.remote_workers
            cmd += ["--master", "--expect-workers", str(expected), "--expect-workers-max-wait", "120",
                    "--master-bind-host", self.master_bind, "--master-bind-port", str(self.master_port)]
        return cmd

    def worker_command(self, master_host: str = "127.0.0.1") -> list[str]:
        return worker_command(self.locustfile, master_host, self.master_port)


def worker_command(locustfile: Path, master_host: str, master_port: int = 5557) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker", "--master-host", master_host,
            "--master-port", str(master_port)]


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LocustRun:
    """A running Locust: the master's process and its local workers; :meth:`stop` keeps the output."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self._files: list[Any] = []

    def start(self) -> None:
        plan = self.plan
        plan.out_dir.mkdir(parents=True, exist_ok=True)
        if (plan.workers or plan.remote_workers) and not plan.master_port:
            plan.master_port = free_port() if not plan.remote_workers else 5557
        env = child_env(plan.env)
        out = open(plan.out_dir / "locust.json", "wb")
        log = open(plan.out_dir / "locust.log", "wb")
        self._files += [out, log]
        # own session: a Ctrl-C in the terminal reaches devbox only, which then stops Locust cleanly
        self.master = subprocess.Popen(plan.master_command(), stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                       cwd=plan.locustfile.parent, env=env, start_new_session=True)
        for i in range(plan.workers):
            wlog = open(plan.out_dir / f"worker-{i + 1}.log", "wb")
            self._files.append(wlog)
            self.workers.append(subprocess.Popen(plan.worker_command(), stdout=wlog, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL, cwd=plan.locustfile.parent, env=env,
                                                 start_new_session=True))

    def running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def stop(self) -> None:
        """Ask Locust to stop now (SIGTERM): it writes its CSV and JSON (not its HTML) before exiting."""
        if self.running():
            assert self.master is not None
            with contextlib.suppress(ProcessLookupError):
                self.master.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for the master (then the workers); kill what outlives the timeout. Its exit code."""
        assert self.master is not None
        deadline = time.monotonic() + timeout
        try:
            code = self.master.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            LOG.warning("locust master did not stop in %.0fs; killing it", timeout)
            self.master.kill()
            code = self.master.wait()
        for w in self.workers:
            try:
                w.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.send_signal(signal.SIGTERM)
                try:
                    w.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
        for f in self._files:
            f.close()
        self._files.clear()
        return code

    def kill(self) -> None:
        for proc in [self.master, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        for f in self._files:
            f.close()
        self._files.clear()


# --- reading Locust's output ----------------------------------------------------------------------


@dataclass
class EntryNow:
    """One entry's figures at the latest history row."""

    name: str
    method: str
    requests: int
    failures: int
    rps: float
    p50: float | None
    p95: float | None
    p99: float | None


@dataclass
class Snapshot:
    """What the live view shows."""

    users: int = 0
    entries: list[EntryNow] = field(default_factory=list)
    total: EntryNow | None = None


def _num(text: str | None) -> float | None:
    if text in (None, "", "N/A"):
        return None
    try:
        return float(text)
    except ValueError:
        return None


class LiveStats:
    """Reads ``<prefix>_stats_history.csv`` as Locust appends to it; req/s over the last seconds
    from the cumulative request counts."""

    def __init__(self, prefix: Path, window_s: float = 5.0) -> None:
        self.path = Path(f"{prefix}_stats_history.csv")
        self.window_s = window_s
        self._seen: dict[str, list[tuple[float, int, int]]] = {}

    def read(self) -> Snapshot:
        snap = Snapshot()
        try:
            with open(self.path, newline="") as f:
                rows = list(csv.DictReader(f))
        except (OSError, csv.Error):
            return snap
        latest: dict[str, dict[str, str]] = {}
        for row in rows:
            if row.get("Name") is None or row.get("Total Request Count") in (None, ""):
                continue  # a half-written last line
            latest[row["Name"]] = row
            ts, req, fail = _num(row["Timestamp"]), _num(row["Total Request Count"]), _num(row["Total Failure Count"])
            if ts is None or req is None or fail is None:
                continue
            hist = self._seen.setdefault(row["Name"], [])
            if not hist or hist[-1][0] < ts:
                hist.append((ts, int(req), int(fail)))
        for name, row in latest.items():
            hist = self._seen.get(name, [])
            rps = 0.0
            if len(hist) >= 2:
                newest = hist[-1]
                older = next((h for h in hist if h[0] >= newest[0] - self.window_s), hist[0])
                if older is newest:
                    older = hist[-2]
                rps = (newest[1] - older[1]) / (newest[0] - older[0])
            entry = EntryNow(name, row.get("Type") or "", int(_num(row["Total Request Count"]) or 0),
                             int(_num(row["Total Failure Count"]) or 0), rps, _num(row.get("50%")),
                             _num(row.get("95%")), _num(row.get("99%")))
            snap.users = max(snap.users, int(_num(row.get("User Count")) or 0))
            if name == "Aggregated":
                snap.total = entry
            else:
                snap.entries.append(entry)
        snap.entries.sort(key=lambda e: e.name)
        return snap


def read_final(out_dir: Path) -> list[dict[str, Any]]:
    """Locust's ``--json`` output: per entry requests, failures, response-time buckets; [] if the run
    printed none (killed before the end)."""
    try:
        data = json.loads((out_dir / "locust.json").read_text() or "[]")
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def bucket_percentile(buckets: Mapping[str, int], q: float) -> float | None:
    """Percentile (ms) from Locust's ``response_times`` buckets (rounded ms → count)."""
    items = sorted((float(k), int(v)) for k, v in buckets.items())
    total = sum(v for _, v in items)
    if not total:
        return None
    rank = q * total
    seen = 0
    for value, count in items:
        seen += count
        if seen >= rank:
            return value
    return items[-1][0]


def summarise(final: Sequence[Mapping[str, Any]], seconds: float) -> list[dict[str, Any]]:
    """Per entry: requests, failures, error fraction, req/s over ``seconds``, p50/p95/p99 ms."""
    out = []
    for stat in final:
        buckets = stat.get("response_times") or {}
        requests = int(stat.get("num_requests", 0))
        failures = int(stat.get("num_failures", 0))
        out.append({
            "name": stat.get("name"), "method": stat.get("method"), "requests": requests, "failures": failures,
            "errors": failures / requests if requests else 0.0, "rps": requests / seconds if seconds > 0 else 0.0,
            "mean_ms": float(stat.get("total_response_time", 0)) / requests if requests else None,
            **{f"p{round(q * 100)}": bucket_percentile(buckets, q) for q in PERCENTILES},
        })
    out.sort(key=lambda e: str(e["name"]))
    return out


def aggregate(final: Sequence[Mapping[str, Any]], seconds: float) -> dict[str, Any]:
    """Every entry together, the same fields as :func:`summarise`'s rows."""
    buckets: dict[str, int] = {}
    requests = failures = 0
    total_rt = 0.0
    for stat in final:
        requests += int(stat.get("num_requests", 0))
        failures += int(stat.get("num_failures", 0))
        total_rt += float(stat.get("total_response_time", 0))
        for k, v in (stat.get("response_times") or {}).items():
            buckets[k] = buckets.get(k, 0) + int(v)
    [row] = summarise([{"name": "Aggregated", "method": "", "num_requests": requests, "num_failures": failures,
                        "total_response_time": total_rt, "response_times": buckets}], seconds)
    return row


@contextlib.contextmanager
def running(plan: Plan) -> Iterator[LocustRun]:
    """A started :class:`LocustRun` that is stopped (and its output kept) on the way out."""
    run = LocustRun(plan)
    run.start()
    try:
        yield run
    except BaseException:
        run.stop()
        run.wait(timeout=30)
        raise
