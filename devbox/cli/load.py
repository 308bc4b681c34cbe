"""``devbox load [ramp|worker|ls|show]`` and ``devbox capacity``: load tests turned into a capacity
estimate. Locust runs as subprocesses (see :mod:`devbox.load.locust`); this module parses options,
shows the live view and prints; every rule lives in :mod:`devbox.load`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import typer
from rich.live import Live
from rich.table import Table

from devbox import envvars
from devbox.cli.common import (
    EXIT_NOT_RUNNING,
    EXIT_USAGE,
    ConfigOption,
    JsonOption,
    api_url,
    config_or_exit,
    console,
    err_console,
    fail,
    print_json,
    whole,
)
from devbox.cli.traces import parse_duration_us
from devbox.config import find_config
from devbox.load import locust, model
from devbox.load import report as capacity_report
from devbox.load.config import LoadConfig, LoadError, require_target
from devbox.load.config import find_locustfile as _find_locustfile
from devbox.load.platform import PlatformClient
from devbox.load.ramp import LoadSpec, Session, Tick
from devbox.load.runs import RunNotFound, RunStore


def register(app: typer.Typer) -> None:
    load = typer.Typer(help="Load tests with Locust (local or distributed), kept per run.",
                       invoke_without_command=True)
    load.callback()(run)
    load.command("ramp")(ramp)
    load.command("worker")(worker)
    load.command("ls")(ls)
    load.command("show")(show)
    app.add_typer(load, name="load")
    app.command("capacity")(capacity)


# --- shared helpers --------------------------------------------------------------------------------


def _seconds(text: str, what: str) -> float:
    try:
        return parse_duration_us(text, "s") / 1_000_000
    except ValueError as exc:
        fail(f"{what}: {exc}", EXIT_USAGE)


def _root_and_project(config_file: str | None) -> tuple[Path, Path, str, LoadConfig]:
    """(project folder, state folder, project name, its ``load:`` section); without a devbox.yaml,
    the current folder and the section's defaults."""
    if find_config(config_file).exists():
        config = config_or_exit(config_file)
        return config.root, config.state_path, config.project, config.load
    return Path.cwd(), Path.cwd() / ".devbox", "", LoadConfig()


def find_locustfile(given: str | None, root: Path, project: str, configured: LoadConfig | None = None) -> Path:
    """See :func:`devbox.load.config.find_locustfile`; no locustfile is a usage error."""
    try:
        return _find_locustfile(given, root, project, configured)
    except LoadError as exc:
        fail(str(exc), EXIT_USAGE)


def _client(config_file: str | None) -> PlatformClient:
    return PlatformClient(api_url(config_file), token=os.environ.get(envvars.DEVBOX_TOKEN))


def _store(config_file: str | None) -> RunStore:
    return RunStore(_root_and_project(config_file)[1] / "load")


def _load_error(exc: LoadError) -> None:
    code = EXIT_NOT_RUNNING if "not reachable" in str(exc) else EXIT_USAGE
    fail(str(exc), code)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def live_table(tick: Tick) -> Table:
    """The live view: per entry req/s, failures, p50/p95/p99; users, elapsed, remaining."""
    snap = tick.snapshot
    table = Table(title=f"{tick.label} · {snap.users}/{tick.users_planned} users · {tick.elapsed:.0f}s elapsed · "
                        f"{tick.remaining:.0f}s left", title_justify="left")
    for col in ("entry", "requests", "req/s", "failures", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(col, justify="left" if col == "entry" else "right")
    rows = [*snap.entries, *([snap.total] if snap.total else [])]
    for e in rows:
        fails = f"[red]{e.failures}[/]" if e.failures else "0"
        table.add_row(f"[bold]{e.name}[/]" if e is snap.total else e.name, str(e.requests), f"{e.rps:.1f}", fails,
                      _ms(e.p50), _ms(e.p95), _ms(e.p99))
    if not rows:
        table.add_row("(starting)", "", "", "", "", "", "")
    return table


def _summary(record: dict[str, Any]) -> None:
    for i, step in enumerate(record["steps"]):
        table = Table(title=f"{step['label']}: {step['users']} users, {step['seconds']:.1f}s"
                            + (" (interrupted)" if step["interrupted"] else "")
                            + (f" — broke: {', '.join(step.get('broke') or [])}" if step.get("broke") else ""),
                      title_justify="left")
        for col in ("entry", "requests", "req/s", "errors", "p50 ms", "p95 ms", "p99 ms"):
            table.add_column(col)
        for e in [*step["entries"], step["total"]]:
            table.add_row(str(e["name"]), str(e["requests"]), f"{e['rps']:.1f}", f"{e['errors']:.1%}",
                          _ms(e["p50"]), _ms(e["p95"]), _ms(e["p99"]))
        console.print(table)
        services = step.get("services") or {}
        if services and (record["kind"] == "ramp" or i == 0):
            st = Table("service", "QPS", "p99 ms", "errors", "CPU s", "instances", box=None)
            for svc, row in services.items():
                st.add_row(svc, f"{row['qps']:.1f}", f"{row['p99_ms']:.0f}", f"{row['errors']:.1%}",
                           f"{row.get('cpu_s', 0):.2f}", str(row.get("instances", "")))
            console.print(st)
    console.print(f"run [bold]{record['id']}[/] kept in {record['dir']}", highlight=False)
    if record.get("platform_error"):
        err_console.print(f"[yellow]platform figures incomplete: {record['platform_error']}[/]")


def _spec(config_file: str | None, locustfile: str | None, target: str | None, users: int | None,
          spawn_rate: float | None, duration: str | None, tags: list[str] | None, exclude_tags: list[str] | None,
          workers: int, env: str | None, remote_workers: int = 0, master_bind: str = "127.0.0.1",
          master_port: int = 0, advertise: str | None = None) -> LoadSpec:
    """The run asked for: each flag given, else devbox.yaml's ``load:`` section, else its default."""
    root, _, project, conf = _root_and_project(config_file)
    if not locust.available():
        fail(f"Locust is not installed; devbox runs its load tests with it: {locust.INSTALL_HINT}", EXIT_USAGE)
    try:
        target = require_target(target, conf)
    except LoadError as exc:
        fail(str(exc), EXIT_USAGE)
    return LoadSpec(locustfile=find_locustfile(locustfile, root, project, conf), target=target,
                    users=users or conf.users, spawn_rate=spawn_rate or conf.spawn_rate,
                    seconds=_seconds(duration, "--time") if duration else conf.time,
                    tags=list(tags or conf.tags), exclude_tags=list(exclude_tags or conf.exclude_tags),
                    workers=workers, remote_workers=remote_workers, master_bind=master_bind,
                    master_port=master_port, advertise=advertise, feature_env=env)


def _session(config_file: str | None, json_out: bool) -> tuple[Session, Live | None]:
    live = None if json_out else Live(console=console, refresh_per_second=2, transient=False)
    session = Session(_client(config_file), _store(config_file),
                      on_tick=(lambda tick: live.update(live_table(tick))) if live else None)
    return session, live


# --- commands ------------------------------------------------------------------------------------


LocustfileOption = typer.Option(None, "--locustfile", "-l", help="Locustfile (default: loadtests/<project>.py).")
TargetOption = typer.Option(None, "--target", help="Service to load through its entry port (`devbox url "
                            "SERVICE`); required unless devbox.yaml sets load.target.")
TagsOption = typer.Option(None, "--tags", "-T", help="Only tasks with this tag (repeatable; default: load.tags).")
ExcludeOption = typer.Option(None, "--exclude-tags", "-E", help="Leave out tasks with this tag (repeatable).")
EnvOption = typer.Option(None, "--env", help="Feature environment: requests carry baggage env=NAME.")
WorkersOption = typer.Option(0, "--workers", min=0, max=64, help="Local Locust workers (0: one process).")


def run(
    ctx: typer.Context,
    users: int | None = typer.Option(None, "--users", "-u", min=1,
                                     help="Concurrent users (default: load.users of devbox.yaml, else 10)."),
    spawn_rate: float | None = typer.Option(None, "--spawn-rate", "-r", min=0.1,
                                            help="Users started per second (default: load.spawn_rate, else 10)."),
    duration: str | None = typer.Option(None, "--time", "-t", help="How long: 30s, 2m (default: load.time, "
                                        "else 30s)."),
    target: str | None = TargetOption,
    locustfile: str | None = LocustfileOption,
    tags: list[str] | None = TagsOption,
    exclude_tags: list[str] | None = ExcludeOption,
    workers: int = WorkersOption,
    env: str | None = EnvOption,
    remote_workers: int = typer.Option(0, "--remote-workers", min=0, help="Also wait for this many workers "
                                       "from other machines (`devbox load worker --master HOST`)."),
    master_bind: str = typer.Option("127.0.0.1", "--master-bind", help="Where the master listens for workers "
                                    "(0.0.0.0 for other machines)."),
    master_port: int = typer.Option(0, "--master-port", help="The master's port (default: free; 5557 with "
                                    "--remote-workers)."),
    advertise: str | None = typer.Option(None, "--advertise", help="This machine's address as workers on other "
                                         "machines reach it: the target's entry port is loaded at HOST:PORT."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Run Locust against the running project with a live view; the run is kept (devbox load ls)."""
    if ctx.invoked_subcommand is not None:
        return
    spec = _spec(config_file, locustfile, target, users, spawn_rate, duration, tags, exclude_tags, workers, env,
                 remote_workers, master_bind, master_port, advertise)
    session, live = _session(config_file, json_out)
    try:
        if live:
            with live:
                record = session.run(spec)
        else:
            record = session.run(spec)
    except LoadError as exc:
        _load_error(exc)
    except KeyboardInterrupt:
        fail("stopped before anything was measured; nothing kept")
    if json_out:
        print_json(record)
    else:
        _summary(record)


def ramp(
    start: int = typer.Option(5, "--start", min=1, help="Users in the first step."),
    step: int = typer.Option(5, "--step", min=1, help="Users added per step."),
    every: str = typer.Option("20s", "--every", help="Length of each step."),
    until: str = typer.Option("p99>300ms or errors>1%", "--until", help="Stop after the step where this holds."),
    max_users: int = typer.Option(200, "--max-users", min=1, help="Never more users than this."),
    target: str | None = TargetOption,
    locustfile: str | None = LocustfileOption,
    tags: list[str] | None = TagsOption,
    exclude_tags: list[str] | None = ExcludeOption,
    workers: int = WorkersOption,
    env: str | None = EnvOption,
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Raise load in steps until a condition holds; per step, entry and per-service figures and CPU."""
    try:
        conditions = model.parse_until(until)
    except model.ModelError as exc:
        fail(f"--until: {exc}", EXIT_USAGE)
    spec = _spec(config_file, locustfile, target, start, float(start), every, tags, exclude_tags, workers, env)
    session, live = _session(config_file, json_out)

    def on_step(rec: dict[str, Any]) -> None:
        if not json_out:
            fig = rec["figures"]
            console.print(f"{rec['label']}: {rec['users']} users, {fig['rps']:.1f} req/s, p99 "
                          f"{_ms(fig.get('p99'))} ms, errors {fig['errors']:.2%}, busiest CPU {fig['cpu']:.2f}"
                          + (f" — [bold red]{', '.join(rec['broke'])}[/]" if rec["broke"] else ""), highlight=False)

    try:
        if live:
            with live:
                record = session.ramp(spec, start=start, step=step, every_s=spec.seconds, until=conditions,
                                      max_users=max_users, on_step=on_step)
        else:
            record = session.ramp(spec, start=start, step=step, every_s=spec.seconds, until=conditions,
                                  max_users=max_users, on_step=on_step)
    except LoadError as exc:
        _load_error(exc)
    except KeyboardInterrupt:
        fail("stopped before a step was measured; nothing kept")
    if json_out:
        print_json(record)
        return
    _summary(record)
    last = record["steps"][-1]
    if last.get("broke"):
        console.print(f"saturation: {', '.join(last['broke'])} at {last['users']} users (step {len(record['steps'])})")
    else:
        console.print("no step broke the condition; raise --max-users to find the saturation point")


def worker(
    master: str = typer.Option(..., "--master", help="Host of the Locust master (the machine running devbox load)."),
    master_port: int = typer.Option(5557, "--master-port", help="The master's port (devbox load --master-port)."),
    processes: int = typer.Option(1, "--processes", min=1, max=64, help="Worker processes on this machine."),
    locustfile: str | None = LocustfileOption,
    config_file: str | None = ConfigOption,
) -> None:
    """Join a master on another machine as Locust worker(s); runs until the master ends or Ctrl-C."""
    if not locust.available():
        fail(f"Locust is not installed; devbox runs its load tests with it: {locust.INSTALL_HINT}", EXIT_USAGE)
    root, _, project, conf = _root_and_project(config_file)
    path = find_locustfile(locustfile, root, project, conf)
    try:
        locust.check_locustfile(path)
    except LoadError as exc:
        _load_error(exc)
    cmd = locust.worker_command(path, master, master_port)
    procs = [subprocess.Popen(cmd, cwd=path.parent, env=locust.child_env({}), start_new_session=True)
             for _ in range(processes)]
    console.print(f"{processes} worker(s) joining {master}:{master_port} with {path}", highlight=False)
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait() for p in procs]
    raise typer.Exit(max(codes) if any(codes) else 0)


def ls(config_file: str | None = ConfigOption, json_out: bool = JsonOption) -> None:
    """Kept runs, newest first."""
    runs = _store(config_file).list()
    if json_out:
        print_json([{k: r.get(k) for k in ("id", "kind", "status", "started_at", "ended_at", "params", "total",
                                            "dir")} for r in runs])
        return
    if not runs:
        console.print("no load run kept yet; start one with `devbox load`")
        return
    table = Table(whole("run", (r["id"] for r in runs)), "kind", "started", "users", "s", "requests", "req/s", "errors",
                  "p99 ms", "status")
    for r in runs:
        last = r["steps"][-1]
        total = last["total"]
        users = str(r["params"]["users"]) if r["kind"] == "run" else f"{r['steps'][0]['users']}→{last['users']}"
        table.add_row(r["id"], r["kind"], time.strftime("%m-%d %H:%M:%S", time.localtime(r["started_at"])), users,
                      f"{r['ended_at'] - r['started_at']:.0f}", str(sum(s["total"]["requests"] for s in r["steps"])),
                      f"{total['rps']:.1f}", f"{total['errors']:.1%}", _ms(total["p99"]), r["status"])
    console.print(table)


def show(run_id: str | None = typer.Argument(None, help="Run id or prefix (default: the newest)."),
         config_file: str | None = ConfigOption, json_out: bool = JsonOption) -> None:
    """One kept run: parameters, per entry and per service figures, where its files are."""
    try:
        record = _store(config_file).load(run_id)
    except RunNotFound as exc:
        fail(str(exc))
    if json_out:
        print_json(record)
        return
    p = record["params"]
    console.print(f"[bold]{record['id']}[/] {record['kind']} · {record['status']} · target {p['target']} · "
                  f"{p['locustfile']} · workers {p['workers']}" + (f" · env {p['env']}" if p.get("env") else ""),
                  highlight=False)
    _summary(record)


def capacity(
    run_id: str | None = typer.Argument(None, help="Run id or prefix (default: the newest ramp, else run)."),
    target: str | None = typer.Option(
        None, "--target", help="Target mix: 'GET /checkout/{user}=500/s, POST /orders=50/s'."),
    headroom: float = typer.Option(0.3, "--headroom", min=0.0, max=0.95, help="Share of each instance kept free."),
    baseline: str | None = typer.Option(None, "--baseline", help="Predict this run from another run's fan-out."),
    html_out: str | None = typer.Option(None, "--html", help="Where to write the HTML report (default: in the run)."),
    config_file: str | None = ConfigOption,
    json_out: bool = JsonOption,
) -> None:
    """Capacity from a kept run's traces and metrics: fan-out, predicted vs measured QPS, instances needed."""
    store = _store(config_file)
    try:
        mix = model.parse_target_mix(target) if target is not None else None
        if run_id is None:
            try:
                record = store.load(None, kind="ramp")
            except RunNotFound:
                record = store.load(None)
        else:
            record = store.load(run_id)
        base = store.load(baseline) if baseline else None
    except model.ModelError as exc:
        fail(f"--target: {exc}", EXIT_USAGE)
    except RunNotFound as exc:
        fail(str(exc))
    client = _client(config_file)
    service = record["params"]["target"]
    try:
        traces = client.traces(service, int(record["started_at"] * 1e6), int(record["ended_at"] * 1e6))
        base_traces = (client.traces(service, int(base["started_at"] * 1e6), int(base["ended_at"] * 1e6))
                       if base else None)
        built = capacity_report.build(record, traces, baseline=base, baseline_traces=base_traces, target=mix,
                                      headroom=headroom)
    except LoadError as exc:
        _load_error(exc)
    except model.ModelError as exc:
        fail(f"--target: {exc}", EXIT_USAGE)
    out = Path(html_out) if html_out else Path(record["dir"]) / "capacity.html"
    try:
        page = capacity_report.render_html(built)
    except ModuleNotFoundError as exc:
        fail(f"the HTML report needs {exc.name}: pip install 'devbox[load]'", EXIT_USAGE)
    tmp = out.with_suffix(".tmp")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(page)
    tmp.replace(out)
    built["html"] = str(out)
    if json_out:
        print_json(built)
        return
    capacity_report.print_report(built, console)
    console.print(f"HTML report: {out}", highlight=False)
