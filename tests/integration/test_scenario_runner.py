"""The scenario runner against a real platform with tiny services (python -m http.server).

Covers: a passing suite, a deliberately broken expectation that must fail with the observed
values in its message, a scenario that cannot start (says why, the suite goes on), faults through
the proxy (error rate, latency, abort, caller scope), naming faults, JUnit output, the Python API.
"""

from __future__ import annotations

import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from devbox.config import load_config
from devbox.scenario import AssertionFailed, open_session
from devbox.scenario import junit as junit_xml
from devbox.scenario.loader import load_text
from devbox.scenario.runner import Outcome, run_all, run_scenario
from devbox.testing import wait_for

WEB = "#!/bin/sh\nexec python3 -m http.server \"$PORT\" --bind 127.0.0.1\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "start.sh").write_text(WEB)
    (tmp_path / "web" / "start.sh").chmod(0o755)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "start.sh").write_text("#!/bin/sh\necho 'cannot find my config' >&2\nexit 3\n")
    (tmp_path / "broken" / "start.sh").chmod(0o755)
    (tmp_path / "devbox.yaml").write_text(
        textwrap.dedent(
            """
            project: tiny
            naming: {heartbeat_ttl: 0.5}
            services:
              - name: web
                path: web
                replicas: 2
                readiness: {http: /}
                tags: {env: base}
              - name: broken
                path: broken
                readiness: {http: /, timeout: 3}
                restart: {enabled: false}
            """
        )
    )
    return tmp_path / "devbox.yaml"


def _run(project: Path, text: str):
    config = load_config(project)
    scenarios = load_text(textwrap.dedent(text), source="t.scenario.yaml", services={s.name for s in config.services})
    return run_all(scenarios, config)


def test_broken_expectation_fails_with_observed_values_and_suite_goes_on(project: Path, tmp_path: Path) -> None:
    results = _run(
        project,
        """
        name: cannot start
        steps:
          - up: {timeout: 20}
        ---
        name: errors are injected and seen
        seed: 3
        steps:
          - up: {services: [web]}
          - traffic: {name: before, service: web, count: 10}
          - expect: {failover: {traffic: before, max_errors: 0}}
          - fault: {service: web, error_rate: 1.0, status: 503}
          - traffic: {name: during, service: web, count: 10}
          - expect: {failover: {traffic: during, max_errors: 0}, within: 0.2}
        ---
        name: logs are read
        steps:
          - up: {services: [web]}
          - traffic: {service: web, count: 3, path: /devbox-probe}
          - wait: {until: {log: {service: web, pattern: "GET /devbox-probe HTTP"}}, timeout: 5}
          - expect: {log: {service: web, pattern: "GET /nowhere HTTP", absent: true}}
        """,
    )
    cannot, broken, logs = results
    assert cannot.outcome is Outcome.ERROR
    assert "t.scenario.yaml:4: up: cannot start" in cannot.message
    assert "broken" in cannot.message and "cannot find my config" in cannot.message

    assert broken.outcome is Outcome.FAILED and broken.seed == 3
    msg = broken.message
    assert msg.startswith("t.scenario.yaml:14: expect failover: expected <= 0 errors;"), msg
    assert "observed 10/10 failed (100.0%) 503 x10" in msg
    run_trace = broken.steps[-2]  # the traffic step recorded its summary
    assert run_trace.message == "10 calls, 10 failed (503: 10)"
    assert "first failed traces: " in msg and "failed calls by entry instance: " in msg

    assert logs.outcome is Outcome.PASSED, logs.message

    out = tmp_path / "out.xml"
    junit_xml.write(results, out)
    root = ET.parse(out).getroot()
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"cannot start", "errors are injected and seen", "logs are read"}
    failure = cases["errors are injected and seen"].find("failure")
    assert failure is not None and "observed 10/10 failed" in (failure.text or "")
    assert cases["cannot start"].find("error") is not None
    assert "seed: 3" in (cases["errors are injected and seen"].findtext("system-out") or "")


def test_proxy_latency_abort_and_caller_scope(project: Path) -> None:
    config = load_config(project)
    with open_session(project, seed=9) as s:
        s.do("up", services=["web"])
        s.do("fault", service="web", caller="someone-else", error_rate=1.0)
        assert not s.do("traffic", name="other", service="web", count=5).errors()  # not from that caller
        s.do("clear_faults")
        s.do("fault", service="web", caller="scenario", latency_ms=150)
        slow = s.do("traffic", name="slow", service="web", count=4, concurrency=2)
        assert not slow.errors() and min(r.latency_ms for r in slow.results) >= 150
        s.do("clear_faults")
        s.do("fault", service="web", abort_rate=1.0)
        aborted = s.do("traffic", name="aborted", service="web", count=3)
        assert len(aborted.errors()) == 3
        with pytest.raises(AssertionFailed, match=r"observed 3/3 failed .*(RemoteProtocolError|ReadError)"):
            s.expect_failover(traffic="aborted", max_errors=0, within=0)
        s.do("clear_faults")
        s.do("naming_fault", service="web", instance=0, circuit_open=True, **{"as": "tripped"})
        tripped = s.do("traffic", name="tripped", service="web", count=20)
        refused = {r.instance for r in tripped.errors()}
        assert refused == {s.aliases["tripped"]["id"]}, tripped.summary()  # naming still offers it
        assert all(i.healthy for i in s.instances("web"))
        s.do("clear_faults")
        assert not s.do("traffic", name="healed", service="web", count=10).errors()
        proxies = s.on_loop(lambda: list(s.component("faults").proxies.values()))
        assert len(proxies) == 2 and all(p.mode == "http" for p in proxies)
    assert config.faults.enabled is False  # only the scenario's copy turned it on


@pytest.mark.slow  # 5-8 s of real processes: left out of make test-quick
def test_kill_and_dropped_heartbeats_take_instances_out(project: Path) -> None:
    with open_session(project, seed=2) as s:
        s.do("up", services=["web"])
        s.do("naming_fault", service="web", instance=1, drop_heartbeats=True, **{"as": "mute"})
        s.expect_failover(traffic=None, instance="mute", unhealthy_within=10, within=10)
        s.do("traffic", name="bg", service="web", rate=20, duration=2, background=True)
        s.do("kill", service="web", instance=0, **{"as": "victim"})
        s.do("wait", traffic="bg")
        verdict = s.expect_failover(traffic=None, instance="victim", unhealthy_within=5, within=5)
        assert "after the fault" in verdict
        s.do("clear_faults")  # heartbeats of "mute" go through again
        wait_for(lambda: sum(i.healthy for i in s.instances("web")) >= 2, timeout=60, what="both web instances healthy")
        s.do("hang", service="web", instance="mute", **{"as": "frozen"})  # SIGSTOP: alive but silent
        s.expect_failover(traffic=None, instance="frozen", unhealthy_within=15, within=15)
        s.do("signal", service="web", instance="frozen", signal="SIGCONT")
        s.do("stop", service="web", instance=0, **{"as": "stopped"})
        s.expect_failover(traffic=None, instance="stopped", unhealthy_within=5, within=5)
        s.do("start", service="web", instance="stopped")
        with pytest.raises(AssertionFailed, match="still healthy in naming"):
            s.do("isolate", service="web", instance="all", isolated=False, **{"as": "fine"})
            s.expect_failover(traffic=None, instance="fine", unhealthy_within=0.3, within=0)
        # a background traffic ended early: `wait` with `stop` returns once its calls in flight are done
        long = s.do("traffic", name="long", service="web", rate=20, duration=600, background=True)
        s.do("wait", traffic="long", stop=True)
        assert long.done and len(long.results) < 20 * 600


def test_fixtures_give_a_session_and_clients(project: Path, devbox_scenario) -> None:
    s = devbox_scenario(project, seed=4)
    s.do("up", services=["web"])
    assert s.seed == 4
    naming = s.naming_client()
    assert len(naming.healthy("web")) == 2 and naming.instances("web")[0]["metadata"]["env"] == "base"
    s.do("traffic", service="web", count=2)
    assert s.alerts_client().alerts() == []
    assert isinstance(s.traces_client().services(), list)
    result = s.metrics_client().query("vector(1)")
    assert float(result[0]["value"][1]) == 1.0
    assert "points, min 1, max 1, last 1" in s.expect_metric(query="vector(1)", op="==", threshold=1, window=2)
    with pytest.raises(AssertionFailed, match=r"expected vector\(2\) < 1 over 2s; failing series"):
        s.expect_metric(query="vector(2)", op="<", threshold=1, window=2, within=0)


def test_scenario_timeout_and_unknown_traffic(project: Path) -> None:
    config = load_config(project)
    [scenario] = load_text(
        "name: slow\ntimeout: 1\nsteps:\n  - up: {services: [web]}\n  - expect: {failover: {traffic: nope}}\n",
        source="x.scenario.yaml",
    )
    result = run_scenario(scenario, config)
    assert result.outcome is Outcome.ERROR
    assert "scenario timeout of 1s" in result.message or "no traffic named 'nope'" in result.message


def test_a_release_held_by_a_gate_without_calls_ends_the_step(project: Path) -> None:
    # no traffic: the gate cannot judge by the end of the first pause and the release holds itself
    # (paused); the step used to wait for an end that never came, past the scenario's timeout
    [result] = _run(project, """
        name: held release
        timeout: 120
        steps:
          - up: {services: [web]}
          - release: {service: web, version: v2, batches: [50, 100], pause: 1, gates: ["success_rate<99"],
                      expect: rolled_back}
        """)
    assert result.outcome is Outcome.ERROR, result.message
    assert "held at 50 %" in result.message and "calls to judge" in result.message, result.message
