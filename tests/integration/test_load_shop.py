"""A short real load run against the shop on a real platform (ports 0, loopback): Locust as a
subprocess, alone and as master + 2 workers; the run kept with its figures, the capacity report
built from its traces and counters, and bad input refused before anything is written."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devbox.config import Ports, ProjectConfig, load_config
from devbox.load import locust, model
from devbox.load import report as capacity_report
from devbox.load.locust import LoadError
from devbox.load.platform import PlatformClient
from devbox.load.ramp import LoadSpec, Session
from devbox.load.runs import RunStore
from devbox.platform import registry
from devbox.testing import PlatformThread, running_platform, wait_for

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "scenarios" / "shop"
LOCUSTFILE = ROOT / "loadtests" / "shop.py"
WANTED = ("naming", "tracing", "metrics", "deploy")
SERVICES = {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}

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
    return config


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    config = shop_config(tmp_path_factory.mktemp("load-shop"))
    components = [name for name in WANTED if name in registry.available()]
    with running_platform(config=config, components=components) as p:
        api = p.url("api")

        def ready() -> bool:
            data = httpx.get(api + "/api/deploy/services", timeout=10).json()
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


def test_a_short_run_is_kept_with_entry_and_service_figures(session: Session, tmp_path: Path) -> None:
    ticks = []
    session.on_tick = ticks.append
    record = session.run(LoadSpec(locustfile=LOCUSTFILE, users=4, spawn_rate=4, seconds=5))
    assert record["status"] == "complete"
    folder = Path(record["dir"])
    for name in ("run.json", "report.html", "locust_stats.csv", "locust_stats_history.csv", "locust.json"):
        assert (folder / name).is_file(), name
    names = {e["name"] for e in record["entries"]}
    assert names <= {"GET /products", "GET /checkout/{user}", "POST /orders"} and names
    assert record["total"]["requests"] > 0 and record["total"]["errors"] == 0
    assert record["target"]["service"] == "gateway"
    # the live view saw requests while the run went
    assert any(t.snapshot.total is not None and t.snapshot.total.requests > 0 for t in ticks), ticks
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


def test_distributed_master_and_two_workers(session: Session) -> None:
    record = session.run(LoadSpec(locustfile=LOCUSTFILE, users=4, spawn_rate=4, seconds=5, workers=2))
    folder = Path(record["dir"])
    assert record["status"] == "complete" and record["params"]["workers"] == 2
    assert record["total"]["requests"] > 0
    assert (folder / "worker-1.log").is_file() and (folder / "worker-2.log").is_file()
    assert "2 workers" in (folder / "locust.log").read_text() or "worker" in (folder / "locust.log").read_text()


def test_bad_input_is_refused_and_nothing_is_written(session: Session, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(LoadError, match=r"unknown target service 'nosuch'.*gateway"):
        session.run(LoadSpec(locustfile=LOCUSTFILE, target="nosuch", users=1, seconds=1))
    with pytest.raises(LoadError, match="does not import"):
        session.run(LoadSpec(locustfile=broken, users=1, seconds=1))
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
