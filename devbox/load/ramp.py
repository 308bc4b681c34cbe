"""Measured load windows: one Locust run per window, with the platform sampled around it.

:class:`Session` runs a window (resolve the target through naming, sample the instances' CPU,
run Locust, read its live stats every second, sample CPU again) and turns whole runs into records
kept by :class:`~devbox.load.runs.RunStore`:

- :meth:`Session.run` — one window (``devbox load``);
- :meth:`Session.ramp` — windows of rising users until a stop condition holds (``devbox load ramp``).
  Each step is its own Locust process: its figures are its own (no reset races).

The load goes to the target service's stable entry port (see
:meth:`~devbox.load.platform.PlatformClient.resolve`), so every replica gets its share and a reload
during a run loses no request; a service without one is resolved through naming again per step.

After the load, the session waits for span ingest to settle, then records per service (from the
window's traces) throughput, latency and errors, plus the span-derived counters' increase — what
``devbox capacity`` builds on. A Ctrl-C stops the current window cleanly and keeps every window
measured so far.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.load import locust, model
from devbox.load.config import LoadError
from devbox.load.locust import Plan, Snapshot
from devbox.load.platform import CpuMeter, PlatformClient, counter_delta, delta
from devbox.load.runs import RunStore

LOG = logging.getLogger(__name__)


@dataclass
class LoadSpec:
    """What the user asked for."""

    locustfile: Path
    #: the service loaded (no default: see :func:`devbox.load.config.require_target`)
    target: str
    users: int = 10
    spawn_rate: float = 10.0
    seconds: float = 30.0
    tags: list[str] = field(default_factory=list)
    exclude_tags: list[str] = field(default_factory=list)
    workers: int = 0
    remote_workers: int = 0
    master_bind: str = "127.0.0.1"
    master_port: int = 0
    #: the host workers on other machines use to reach this one (replaces the target's loopback host)
    advertise: str | None = None
    feature_env: str | None = None

    def env(self) -> dict[str, str]:
        if not self.feature_env:
            return {}
        # a locustfile reads DEVBOX_LOAD_ENV and sends it as baggage (loadtests/shop.py shows how)
        return {"DEVBOX_LOAD_ENV": self.feature_env, "DEVBOX_BAGGAGE": f"env={self.feature_env}"}

    def params(self) -> dict[str, Any]:
        return {"locustfile": str(self.locustfile), "target": self.target, "users": self.users,
                "spawn_rate": self.spawn_rate, "seconds": self.seconds, "tags": self.tags,
                "exclude_tags": self.exclude_tags, "workers": self.workers,
                "remote_workers": self.remote_workers, "env": self.feature_env}


@dataclass
class Tick:
    """What the live view shows once a second."""

    label: str
    snapshot: Snapshot
    elapsed: float
    remaining: float
    users_planned: int


class Session:
    """Runs measured windows against one platform and keeps them as runs."""

    def __init__(self, client: PlatformClient, store: RunStore, *,
                 on_tick: Callable[[Tick], None] | None = None) -> None:
        self.client = client
        self.store = store
        self.on_tick = on_tick or (lambda tick: None)
        self.cpu = CpuMeter()

    # --- checks before anything is written ------------------------------------------------

    def preflight(self, spec: LoadSpec) -> None:
        """Locust installed, the locustfile imports, the target resolves — or LoadError."""
        locust.require_locust()
        self.client.resolve(spec.target)
        locust.check_locustfile(spec.locustfile)

    # --- one window -------------------------------------------------------------------------

    def window(self, spec: LoadSpec, out_dir: Path, label: str) -> dict[str, Any]:
        """Run Locust once with ``spec``'s users; the window's record. ``interrupted`` is True
        when a Ctrl-C stopped it (what was measured is in the record)."""
        target = self.client.resolve(spec.target)
        pids = self.client.pids()
        cpu_before = self.cpu.sample(pids)
        host = target.url if not spec.advertise else f"http://{spec.advertise}:{target.port}"
        plan = Plan(locustfile=spec.locustfile, host=host, users=spec.users, spawn_rate=spec.spawn_rate,
                    seconds=spec.seconds, out_dir=out_dir, tags=spec.tags, exclude_tags=spec.exclude_tags,
                    workers=spec.workers, remote_workers=spec.remote_workers, master_bind=spec.master_bind,
                    master_port=spec.master_port, env=spec.env())
        live = locust.LiveStats(plan.csv_prefix)
        run = locust.LocustRun(plan)
        started = time.time()
        run.start()
        interrupted = False
        load_started: float | None = None
        try:
            # the run's clock starts with the first history row: with workers, the master first
            # waits for them to connect
            deadline = time.monotonic() + spec.seconds + 180
            while run.running() and time.monotonic() < deadline:
                snap = live.read()
                if load_started is None and (snap.total is not None or snap.entries):
                    load_started = time.time()
                elapsed = time.time() - (load_started or time.time())
                self.on_tick(Tick(label, snap, elapsed, max(0.0, spec.seconds - elapsed), spec.users))
                time.sleep(1.0 - (time.time() - started) % 1.0)
            if run.running():
                LOG.warning("locust outlived its run time; stopping it")
                run.stop()
        except KeyboardInterrupt:
            interrupted = True
            run.stop()
        code = run.wait(timeout=60)
        ended = time.time()
        # the last frame shows what Locust wrote last: a short run can end between two ticks
        elapsed = ended - (load_started or started)
        self.on_tick(Tick(label, live.read(), elapsed, 0.0, spec.users))
        cpu_after = self.cpu.sample(pids)
        final = locust.read_final(out_dir)
        if not final and not interrupted:
            tail = "\n".join(_tail(out_dir / "locust.log", 8))
            raise LoadError(f"Locust exited with {code} and measured nothing:\n{tail}")
        # rates over Locust's own measuring time (first stats to last request); the window for
        # traces and metrics is the whole process lifetime, so no request falls outside it
        first = min((float(s.get("start_time", 0)) for s in final), default=load_started or started)
        last = max((float(s.get("last_request_timestamp") or 0) for s in final), default=ended)
        seconds = max(last - first, 1e-3) if last > first else max(ended - (load_started or started), 1e-3)
        return {
            "label": label, "users": spec.users, "spawn_rate": spec.spawn_rate, "seconds_planned": spec.seconds,
            "started_at": started, "ended_at": ended, "seconds": seconds, "exit_code": code,
            "interrupted": interrupted, "target": {**target.__dict__, "loaded": plan.host},
            "entries": locust.summarise(final, seconds), "total": locust.aggregate(final, seconds),
            "requests_by_entry": {str(s.get("name")): int(s.get("num_requests", 0)) for s in final},
            "instances": {svc: len(p) for svc, p in pids.items()},
            "cpu_s": delta(cpu_after, cpu_before),
            "dir": str(out_dir),
        }

    # --- whole runs ---------------------------------------------------------------------------

    def run(self, spec: LoadSpec) -> dict[str, Any]:
        """``devbox load``: one window, kept as a run."""
        return self._kept("run", spec, lambda folder: [self.window(spec, folder, "run")])

    def ramp(self, spec: LoadSpec, *, start: int, step: int, every_s: float, until: list[model.Condition],
             max_users: int, on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """``devbox load ramp``: windows of start, start+step, ... users until a condition holds."""

        def steps(folder: Path) -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            users = start
            while users <= max_users:
                step_spec = LoadSpec(**{**spec.__dict__, "users": users, "seconds": every_s,
                                        "spawn_rate": max(spec.spawn_rate, float(users))})
                rec = self.window(step_spec, folder / f"step-{len(out) + 1:02d}", f"step {len(out) + 1}")
                figures = step_figures(rec)
                rec["figures"] = figures
                rec["broke"] = model.broken(until, figures)
                out.append(rec)
                if on_step:
                    on_step(rec)
                if rec["interrupted"] or rec["broke"]:
                    break
                users += step
            return out

        extra = {"ramp": {"start": start, "step": step, "every_s": every_s, "max_users": max_users,
                          "until": [str(c) for c in until]}}
        return self._kept("ramp", spec, steps, extra)

    def _kept(self, kind: str, spec: LoadSpec, body: Callable[[Path], list[dict[str, Any]]],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
        self.preflight(spec)
        run_id, folder = self.store.create(kind)
        try:
            try:
                counters_before = self.client.counters()
            except LoadError:
                counters_before = {}
            accepted_before = self.client.spans_accepted()
            steps = body(folder)
        except BaseException:
            self.store.discard(run_id)  # nothing measured: nothing half-written stays
            raise
        record: dict[str, Any] = {
            "id": run_id, "kind": kind, "params": spec.params(), **(extra or {}),
            "started_at": steps[0]["started_at"], "ended_at": steps[-1]["ended_at"],
            "status": "interrupted" if any(s["interrupted"] for s in steps) else "complete",
            "steps": steps, "dir": str(folder),
        }
        if kind == "run":
            for key in ("entries", "total", "cpu_s", "instances", "requests_by_entry", "target", "seconds"):
                record[key] = steps[0][key]
        try:
            self._after(record, counters_before, accepted_before, spec.target)
        except (LoadError, KeyboardInterrupt) as exc:
            record["platform_error"] = str(exc) or exc.__class__.__name__
        self.store.save(record)
        return record

    def _after(self, record: dict[str, Any], counters_before: dict[tuple[str, str], float],
               accepted_before: int, entry_service: str) -> None:
        """Once ingest settled: counters' increase, spans accepted, per-service figures per step."""
        record["settled"] = self.client.settle()
        try:
            grown = counter_delta(self.client.counters(), counters_before)
            record["counters"] = [{"service": s, "method": m, "calls": v} for (s, m), v in sorted(grown.items())]
        except LoadError:
            record["counters"] = None
        record["spans_accepted"] = self.client.spans_accepted() - accepted_before
        start_us, end_us = int(record["started_at"] * 1e6), int(record["ended_at"] * 1e6)
        traces = self.client.traces(entry_service, start_us, end_us)
        record["traces_read"] = len(traces)
        for step in record["steps"]:
            figures = model.service_figures(traces, int(step["started_at"] * 1e6), int(step["ended_at"] * 1e6))
            for svc, row in figures.items():
                row["qps"] = row["calls"] / step["seconds"]  # over Locust's measuring time, as the entries
                row["cpu_s"] = step["cpu_s"].get(svc, 0.0)
                row["instances"] = step["instances"].get(svc, 0)
            step["services"] = figures


def step_figures(rec: dict[str, Any]) -> dict[str, float]:
    """What a stop condition looks at: the entries together, and the busiest service's CPU."""
    total = rec["total"]
    cpu = max((s / rec["seconds"] / max(rec["instances"].get(svc, 1), 1) for svc, s in rec["cpu_s"].items()),
              default=0.0)
    out = {"errors": total["errors"], "rps": total["rps"], "cpu": cpu}
    for key in ("p50", "p95", "p99"):
        if total.get(key) is not None:
            out[key] = float(total[key])
    return out


def _tail(path: Path, lines: int) -> list[str]:
    try:
        return path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return []
