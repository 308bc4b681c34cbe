"""Deploy pipeline cores without processes or sockets: backoff, states, injected config, reload filter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import Readiness, RestartPolicy, ServiceConfig
from devbox.mocks.deploy.models import InstanceState
from devbox.mocks.deploy.reload import ServiceWatch, is_relevant
from pydantic import ValidationError

from devbox.config import ConfigError, parse_config
from devbox.polaris.ids import instance_id


def test_backoff_grows_exponentially_and_is_capped() -> None:
    backoff = core.Backoff(RestartPolicy(backoff=0.5, factor=2, max_backoff=3, crash_loop=100, window=1000))
    delays = [backoff.on_crash(now=float(t), uptime=1.0).delay for t in range(6)]
    assert delays == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_backoff_starts_over_after_a_healthy_run() -> None:
    backoff = core.Backoff(RestartPolicy(backoff=1, factor=2, healthy_after=10, crash_loop=100))
    assert backoff.on_crash(now=0, uptime=1).delay == 1
    assert backoff.on_crash(now=5, uptime=1).delay == 2
    assert backoff.on_crash(now=100, uptime=60).delay == 1  # ran a minute: not the same crash streak


def test_crash_loop_stops_retrying_and_old_crashes_fall_out_of_the_window() -> None:
    policy = RestartPolicy(backoff=0.1, crash_loop=3, window=10)
    backoff = core.Backoff(policy)
    assert backoff.on_crash(now=0, uptime=0.1).restart
    assert backoff.on_crash(now=1, uptime=0.1).restart
    decision = backoff.on_crash(now=2, uptime=0.1)
    assert not decision.restart and decision.crashes_in_window == 3 and "crash loop" in decision.reason

    spaced = core.Backoff(policy)
    assert all(spaced.on_crash(now=t * 20.0, uptime=0.1).restart for t in range(10))


def test_restarts_disabled_never_restart() -> None:
    decision = core.Backoff(RestartPolicy(enabled=False)).on_crash(now=0, uptime=100)
    assert not decision.restart and "disabled" in decision.reason


def test_state_machine_rejects_impossible_moves() -> None:
    record = core.InstanceRecord(name="a-1", service="a", group="default", port=1)
    record.move(InstanceState.STARTING, now=1)
    record.move(InstanceState.READY, now=2)
    record.move(InstanceState.BACKOFF, now=3)
    with pytest.raises(core.InvalidTransition, match="backoff -> ready"):
        record.move(InstanceState.READY, now=4)
    assert [s for _, s in record.history] == [InstanceState.STARTING, InstanceState.READY, InstanceState.BACKOFF]


def _facts() -> core.PlatformFacts:
    return core.PlatformFacts(api_url="http://127.0.0.1:7070", namespace="dev", naming_http="http://127.0.0.1:8090",
                              naming_grpc="127.0.0.1:8091", otlp_http="http://127.0.0.1:4318")


def test_injected_env_and_config_file_carry_the_same_facts(tmp_path: Path) -> None:
    svc = ServiceConfig(name="orders", tags={"env": "feature-x"}, env={"LOG": "debug"}, sampling=0.25)
    record = core.InstanceRecord(name="orders-1", service="orders", group="default", port=4567)
    iid = instance_id("dev", "orders", "127.0.0.1", 4567)
    kwargs = dict(record=record, instance_id=iid, tags=core.instance_tags(svc, {"set": "a"}), platform=_facts(),
                  config_file=tmp_path / "x.yaml")
    env = core.instance_env(svc, **kwargs)
    facts = core.instance_facts(svc, **kwargs)
    assert env["PORT"] == "4567" and facts["instance"]["port"] == 4567
    assert env["DEVBOX_INSTANCE_ID"] == iid == facts["instance"]["id"]
    assert env["DEVBOX_TAGS"] == "env=feature-x,set=a"
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == f"service.instance.id={iid},devbox.env=feature-x,devbox.set=a"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318" == facts["platform"]["otlp_http"]
    assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert env["DEVBOX_NAMING_GRPC"] == "127.0.0.1:8091" and env["DEVBOX_NAMESPACE"] == "dev"
    assert env["DEVBOX_SAMPLING"] == "0.25" and env["LOG"] == "debug" and env["DEVBOX_REGISTER"] == "auto"
    # the id is what a real Polaris server computes for host:port
    assert len(iid) == 40 and iid != instance_id("dev", "orders", "127.0.0.1", 4568)


def test_preflight_names_the_missing_start_script(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "start.sh").write_text("#!/bin/sh\n")
    problems = core.preflight(
        [ServiceConfig(name="a", path="a"), ServiceConfig(name="b", path="b"),
         ServiceConfig(name="c", path="nowhere"), ServiceConfig(name="d", path="a", start="python3 -m http.server")],
        tmp_path,
    )
    assert len(problems) == 2
    assert "service a: start script ./start.sh not found" in problems[0]
    assert "service c: path 'nowhere'" in problems[1]


def test_tail_lines_reads_only_the_end(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert core.tail_lines(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert core.tail_lines(tmp_path / "missing.log") == []


def test_readiness_config_errors_name_file_line_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("services:\n  - name: a\n    readiness: {http: /h, tcp: true}\n", source=Path("devbox.yaml"))
    assert "devbox.yaml:3: services[a].readiness: choose one readiness check, not http and tcp" in str(err.value)
    with pytest.raises(ConfigError) as err:
        parse_config("services:\n  - name: a\n    restart: {backof: 1}\n", source=Path("devbox.yaml"))
    assert "services[a].restart.backof: unknown key" in str(err.value)
    with pytest.raises(ValidationError):
        Readiness(http="healthz")
    assert Readiness().kind == "tcp" and Readiness(grpc=True).kind == "grpc"


def test_reload_ignores_state_dir_caches_and_patterns(tmp_path: Path) -> None:
    state = tmp_path / ".devbox"
    def relevant(p: str) -> bool:
        return is_relevant(str(tmp_path / p), root=tmp_path, ignore_dirs=[state], patterns=["data/*"])

    assert relevant("app.py") and relevant("pkg/mod.py")
    for ignored in (".devbox/logs/a/a-1.log", "__pycache__/app.cpython-311.pyc", ".git/index", "x.swp",
                    "data/dump.json", "app.py~"):
        assert not relevant(ignored), ignored


def test_debounce_turns_a_burst_into_one_reload(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    finished: list[list[str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def on_change(paths: list[str]) -> None:
            calls.append(paths)
            await asyncio.sleep(0.05)
            finished.append(paths)

        async def reloads_done(count: int) -> None:
            deadline = loop.time() + 10
            while len(finished) < count:
                assert loop.time() < deadline, f"waiting for reload {count}; calls so far: {calls}"
                await asyncio.sleep(0.01)

        watch = ServiceWatch(key="a", root=tmp_path, loop=loop, on_change=on_change, ignore_dirs=[],
                             patterns=[], debounce=0.05)
        for name in ("a.py", "b.py", "a.py"):
            watch._on_loop(name)
        await reloads_done(1)
        watch._on_loop("c.py")  # a later change: a second reload
        await reloads_done(2)
        watch.paused = lambda: True
        watch._on_loop("d.py")  # during a build: ignored
        # "no reload" is what is asserted here: give it four debounce periods to (wrongly) happen
        await asyncio.sleep(4 * watch.debounce)
        await watch.close()

    asyncio.run(main())
    assert calls == [["a.py", "b.py"], ["c.py"]]


def test_big_logs_are_rotated_once(tmp_path: Path) -> None:
    from devbox.mocks.deploy.runner import rotate

    log = tmp_path / "a-1.log"
    log.write_text("x" * 100)
    rotate(log, max_bytes=1000)
    assert log.exists()
    rotate(log, max_bytes=10)
    assert not log.exists() and (tmp_path / "a-1.log.1").read_text() == "x" * 100
    rotate(log, max_bytes=10)  # nothing to rotate: no error


def test_instance_ports_come_from_below_the_ephemeral_range(tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("32768\t60999\n")
    assert core.instance_port_range(range_file) == (24384, 32768)
    range_file.write_text("1024 65535\n")
    assert core.instance_port_range(range_file) == (20000, 30000)
    assert core.instance_port_range(tmp_path / "missing") == (24384, 32768)


def test_a_change_during_a_reload_runs_one_more_reload_after_it(tmp_path: Path) -> None:
    """A save while a reload rolls out queues exactly one more. It was lost: the queued reload was
    fired from inside the finishing one, which saw itself running and only queued it again — two
    instances were left on different code (found following the README)."""
    calls: list[list[str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        release = asyncio.Event()

        async def on_change(paths: list[str]) -> None:
            calls.append(paths)
            if len(calls) == 1:
                await release.wait()

        watch = ServiceWatch(key="a", root=tmp_path, loop=loop, on_change=on_change, ignore_dirs=[],
                             patterns=[], debounce=0.01)
        watch._on_loop("edit.py")
        deadline = loop.time() + 10
        while not calls:
            assert loop.time() < deadline, "the first reload never started"
            await asyncio.sleep(0.01)
        watch._on_loop("revert.py")  # while the first reload runs
        await asyncio.sleep(4 * watch.debounce)  # its debounce passes while the first still runs
        assert calls == [["edit.py"]]
        release.set()
        while len(calls) < 2:
            assert loop.time() < deadline, f"the queued reload never ran: {calls}"
            await asyncio.sleep(0.01)
        await watch.close()

    asyncio.run(main())
    assert calls == [["edit.py"], ["revert.py"]]
