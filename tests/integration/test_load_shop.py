"""A short real load run against the shop on a real platform (ports 0, loopback): Locust as a
subprocess, alone and as master + 2 workers; the run kept with its figures, the capacity report
built from its traces and counters, and bad input refused before anything is written.

The gateway runs 2 replicas here: a run aims at its stable entry port, so both instances get
load, and a hot reload of the gateway in the middle of a run fails no request."""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from devbox.config import Ports, ProjectConfig, load_config
from devbox.load import locust, model
from devbox.load import report as capacity_report
from devbox.load.locust import LoadError
from devbox.load.platform import VIA_ENTRY, PlatformClient
from devbox.load.ramp import LoadSpec, Session
from devbox.load.runs import RunStore
from devbox.platform import registry
from devbox.scenario.checks import span_instance
from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "scenarios" / "shop"
LOCUSTFILE = ROOT / "loadtests" / "shop.py"
WANTED = ("naming", "tracing", "metrics", "deploy", "faults")  # faults: the entry ports
SERVICES = {"gateway": 2, "orders": 2, "inventory": 1, "payment": 1, "users": 2}

pytestmark = [
    pytest.mark.slow,  # deploys the whole shop and runs Locust against it
    pytest.mark.timeout(240),
    pytest.mark.skipif(not locust.available(), reason="locust not installed"),
]


def shop_config(state: Path) -> ProjectConfig:
    config = load_config(SHOP / "devbox.yaml")
    config.platform.ports = Ports.ephemeral()
    config.platform.state_dir = str(state)
    for svc in config.services:
        svc.reload = False
        if svc.name == "gateway":
            svc.replicas = 2  # the load's target: its entry port spreads the load over both
    return config


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    config = shop_config(tmp_path_factory.mktemp("load-shop"))
    components = [name for name in WANTED if name in registry.available()]
    with running_platform(config=config, components=components) as p:
        api = p.url("api")

        def ready() -> bool:
            data = httpc.get(api + "/api/deploy/services", timeout=10).json()
            counts: dict[str, int] = {}
            for dep in data["services"]:
                counts[dep["service"]] = counts.get(dep["service"], 0) + dep["ready"]
            return counts == SERVICES

        wait_for(ready, timeout=150, what="the shop deployed")
        yield p


@pytest.fixture
def session(shop: PlatformThread, tmp_path: Path) -> Iterator[Session]:
    client = PlatformClient(shop.url("api"))
    yield Session(client, RunStore(tmp_path / "load"))
    client.close()


def gateway_server_spans(session: Session, record: dict[str, object]) -> dict[str, int]:
    """Gateway SERVER spans of the run's window per instance id (health probes left out)."""
    start_us, end_us = int(record["started_at"] * 1e6), int(record["ended_at"] * 1e6)  # type: ignore[operator]
    served: dict[str, int] = {}
    for trace in session.client.traces("gateway", start_us, end_us):
        for span in trace:
            if span.service == "gateway" and span.kind == "SERVER" and "healthz" not in span.name.lower():
                served[span_instance(span)] = served.get(span_instance(span), 0) + 1
    return served


def test_a_short_run_is_kept_with_entry_and_service_figures(session: Session, tmp_path: Path) -> None:
    ticks = []
    session.on_tick = ticks.append
    record = session.run(LoadSpec(locustfile=LOCUSTFILE, target="gateway", users=4, spawn_rate=4, seconds=5))
    assert record["status"] == "complete"
    folder = Path(record["dir"])
    for name in ("run.json", "report.html", "locust_stats.csv", "locust_stats_history.csv", "locust.json"):
        assert (folder / name).is_file(), name
    names = {e["name"] for e in record["entries"]}
    assert names <= {"GET /products", "GET /checkout/{user}", "POST /orders"} and names
    assert record["total"]["requests"] > 0 and record["total"]["errors"] == 0
    assert record["target"]["service"] == "gateway" and record["target"]["via"] == VIA_ENTRY
    # the entry port balances every request: both gateway instances served a fair share of them
    served = gateway_server_spans(session, record)
    assert len(served) == 2 and "?" not in served, served
    assert min(served.values()) >= 0.2 * sum(served.values()), served
    # the live view saw requests while the run went
    assert any(t.snapshot.total is not None and t.snapshot.total.requests > 0 for t in ticks), ticks[-3:]
    # the platform side: counters grew per service, traces of the window were read, CPU was sampled
    assert {r["service"] for r in record["counters"]} >= {"gateway", "inventory"}
    assert record["traces_read"] > 0 and record["cpu_s"]["gateway"] > 0
    assert session.store.load(record["id"][:20])["id"] == record["id"]

    traces = session.client.traces("gateway", int(record["started_at"] * 1e6), int(record["ended_at"] * 1e6))
    built = capacity_report.build(record, traces, target={"GET /products": 100.0})
    assert built["spans"]["traces_received"] == built["spans"]["requests_sent"], built["spans"]
    assert built["spans"]["complete"] is True
    by_service = {s["service"]: s for s in built["services"]}
    # predicted from traces x Locust's requests == measured by the span-derived counters
    for svc in ("gateway", "inventory"):
        assert by_service[svc]["error_pct"] == pytest.approx(0.0, abs=0.01), by_service[svc]
    assert built["target"]["bottleneck"] is not None
    html = capacity_report.render_html(built)
    assert "plotly" in html.lower() and "<script" in html
    with pytest.raises(model.ModelError, match="unknown entry"):
        capacity_report.build(record, traces, target={"GET /nope": 1.0})


def _stop_locust() -> None:
    """SIGTERM to the Locust processes this test's session started (LocustRun.stop's signal)."""
    for proc in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "locust" in proc.cmdline()[:3]:
                proc.send_signal(signal.SIGTERM)


def test_a_hot_reload_of_the_target_during_a_run_loses_no_request(session: Session, shop: PlatformThread) -> None:
    api = shop.url("api")

    def gateway_ids() -> set[str]:
        data = httpc.get(api + "/api/deploy/services", timeout=10).json()["services"]
        return {i["id"] for d in data if d["service"] == "gateway" for i in d["instances"] if i["healthy"]}

    before = gateway_ids()
    # long enough for the reload to finish inside the run on a loaded runner (two new gateways start and
    # become ready: >12 s seen at a load average of 9, when a 15 s run ended first and tested nothing);
    # Locust is stopped once the new instances have taken some of the load
    spec = LoadSpec(locustfile=LOCUSTFILE, target="gateway", users=4, spawn_rate=4, seconds=60, tags=["products"])
    records: list[dict[str, object]] = []
    runner = threading.Thread(target=lambda: records.append(session.run(spec)), daemon=True)
    runner.start()

    def requests_made() -> int:
        for folder in session.store.root.glob("*"):
            snap = locust.LiveStats(folder / "locust").read()
            if snap.total is not None and snap.total.requests > 0:
                return snap.total.requests
        return 0

    wait_for(requests_made, timeout=60, what="the run's first requests")
    reloaded = httpc.post(api + "/api/deploy/services/gateway/reload", timeout=60)
    assert reloaded.status_code == 200, reloaded.text

    def replaced() -> set[str]:
        ids = gateway_ids()
        return ids if len(ids) == 2 and not ids & before else set()

    after = wait_for(replaced, timeout=60, what="two new gateway instances ready")
    assert runner.is_alive(), "the run ended before the reload finished: it tested nothing"
    since = requests_made()
    wait_for(lambda: requests_made() >= since + 40, timeout=60, what="40 requests after the reload")
    _stop_locust()  # as Ctrl-C of `devbox load` does: Locust writes what it measured and exits
    runner.join(timeout=120)
    assert not runner.is_alive() and records, "the run did not end"
    record = records[0]
    assert record["status"] == "complete"
    total = record["total"]
    assert total["requests"] > 0 and total["failures"] == 0, total  # type: ignore[index]
    # the load reached the new instances through the same address

    def new_ones_served() -> dict[str, int]:
        served = gateway_server_spans(session, record)
        return served if set(served) & after else {}

    served = wait_for(new_ones_served, timeout=30, what="a gateway server span of a new instance")
    assert set(served) & before, served


def test_bad_input_is_refused_and_nothing_is_written(session: Session, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(LoadError, match=r"unknown target service 'nosuch'.*gateway"):
        session.run(LoadSpec(locustfile=LOCUSTFILE, target="nosuch", users=1, seconds=1))
    with pytest.raises(LoadError, match="does not import"):
        session.run(LoadSpec(locustfile=broken, target="gateway", users=1, seconds=1))
    assert session.store.list() == [] and not any((tmp_path / "load").glob("*"))


def test_locust_missing_is_reported_with_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locust, "available", lambda: False)
    with pytest.raises(LoadError, match=r"Locust is not installed.*pip install"):
        locust.require_locust()


def test_locustfile_copy_runs_from_its_own_folder(tmp_path: Path) -> None:
    """Locust runs with the locustfile's folder as cwd, so relative imports next to it work."""
    copy = tmp_path / "lt" / "shop.py"
    copy.parent.mkdir()
    shutil.copy(LOCUSTFILE, copy)
    assert locust.check_locustfile(copy) == ["Shopper"]
