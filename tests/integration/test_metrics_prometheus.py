"""The Prometheus face of devbox: HTTP API envelope and errors, promtool querying devbox, a real
Prometheus scraping devbox's /metrics, and the OpenAPI spec fuzzed with schemathesis."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from devbox.mocks.metrics.store import Point

from devbox.testing import PlatformThread, running_platform, wait_for
from tests import httpc

SPEC = Path(__file__).resolve().parents[1] / "specs" / "prometheus-api-openapi.yaml"


@contextlib.contextmanager
def seeded_platform(root: Path) -> Iterator[tuple[PlatformThread, float]]:
    """A metrics platform holding 10 minutes of counters ending now, and that now.

    Now is read here, when a test sets its platform up, never when the module is imported: the
    module may run minutes after collection on a busy machine, and /metrics shows only fresh series.
    """
    now = time.time()
    with running_platform(root, components=["metrics"]) as p:
        core = p.component("metrics").core  # type: ignore[attr-defined]
        points = []
        # 10 minutes of a counter per (svc, code), 1 point every 10 s, ending now
        start = int(now) - 600
        for svc, code, slope in (("a", "200", 2.0), ("a", "500", 0.5), ("b", "200", 1.0)):
            labels = (("code", code), ("svc", svc))
            points += [
                Point("http_requests_total", labels, t, (t - start) * slope) for t in range(start, int(now) + 1, 10)
            ]
        for le, share in (("0.1", 0.6), ("0.5", 0.9), ("+Inf", 1.0)):
            labels = (("le", le), ("svc", "a"))
            points += [
                Point("http_latency_seconds_bucket", labels, t, (t - start) * share)
                for t in range(start, int(now) + 1, 10)
            ]
        from devbox.mocks.metrics.store import MetricInfo

        core.ingest_points(points, [MetricInfo("http_requests_total", "counter", "Requests served.")])
        yield p, now


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PlatformThread, float]]:
    """Shared by the tests that query at an explicit time (``now``), which ages do not change."""
    with seeded_platform(tmp_path_factory.mktemp("prom")) as pair:
        yield pair


@pytest.fixture(scope="module")
def platform(seeded: tuple[PlatformThread, float]) -> PlatformThread:
    return seeded[0]


@pytest.fixture(scope="module")
def now(seeded: tuple[PlatformThread, float]) -> float:
    """The end of the shared platform's data."""
    return seeded[1]


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[PlatformThread]:
    """Its own platform, data ending as the test starts: for what reads the wall clock (/metrics
    exposes series fresher than 300 s; a real Prometheus scrapes it)."""
    with seeded_platform(tmp_path) as (p, _):
        yield p


def _get(p: PlatformThread, path: str, **params: object) -> httpx.Response:
    return httpc.get(p.url("prometheus") + path, params=params)  # type: ignore[arg-type]


def test_instant_query_get_and_form_post(platform: PlatformThread, now: float) -> None:
    r = _get(platform, "/api/v1/query", query="sum by (svc) (rate(http_requests_total[1m]))", time=now)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success" and body["data"]["resultType"] == "vector"
    values = {s["metric"]["svc"]: float(s["value"][1]) for s in body["data"]["result"]}
    assert values == {"a": pytest.approx(2.5), "b": pytest.approx(1.0)}
    assert body["data"]["result"][0]["value"][0] == now
    r = httpc.post(platform.url("prometheus") + "/api/v1/query", data={"query": "1+1", "time": str(now)})
    assert r.json()["data"] == {"resultType": "scalar", "result": [now, "2"]}
    r = _get(platform, "/api/v1/query", query='"hello"')
    assert r.json()["data"]["resultType"] == "string"


def test_range_query_and_durations(platform: PlatformThread, now: float) -> None:
    r = httpc.post(
        platform.url("prometheus") + "/api/v1/query_range",
        data={"query": 'rate(http_requests_total{svc="b"}[1m])', "start": now - 300, "end": now, "step": "1m"},
    )
    assert r.status_code == 200, r.text
    (series,) = r.json()["data"]["result"]
    assert series["metric"] == {"code": "200", "svc": "b"}
    assert len(series["values"]) == 6 and all(float(v) == pytest.approx(1.0) for _, v in series["values"])
    p90 = _get(
        platform, "/api/v1/query", query="histogram_quantile(0.9, rate(http_latency_seconds_bucket[1m]))", time=now
    )
    assert float(p90.json()["data"]["result"][0]["value"][1]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/v1/query", {"query": "sum("}),
        ("/api/v1/query", {}),
        ("/api/v1/query", {"query": "up", "time": "yesterday"}),
        ("/api/v1/query_range", {"query": "up", "start": 10, "end": 5, "step": 1}),
        ("/api/v1/query_range", {"query": "up", "start": 0, "end": 5, "step": "-1"}),
        ("/api/v1/query_range", {"query": "up", "start": 0, "end": 10**6, "step": 1}),
        ("/api/v1/series", {}),
        ("/api/v1/series", {"match[]": "rate(x[1m])"}),
        ("/api/v1/label/bad-name/values", {}),
    ],
)
def test_bad_data_errors(platform: PlatformThread, path: str, params: dict) -> None:
    r = _get(platform, path, **params)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data" and body["error"]


def test_series_labels_values_metadata_buildinfo(platform: PlatformThread, now: float) -> None:
    r = _get(platform, "/api/v1/series", **{"match[]": 'http_requests_total{svc="a"}'})
    assert sorted(s["code"] for s in r.json()["data"]) == ["200", "500"]
    long_ago = {"match[]": "http_requests_total", "start": now - 7200, "end": now - 3600}
    assert _get(platform, "/api/v1/series", **long_ago).json()["data"] == []
    assert _get(platform, "/api/v1/label/svc/values", **long_ago).json()["data"] == []
    recent = {"match[]": "http_requests_total", "start": now - 60}
    assert len(_get(platform, "/api/v1/series", **recent).json()["data"]) == 3
    assert "svc" in _get(platform, "/api/v1/labels").json()["data"]
    names = _get(platform, "/api/v1/label/__name__/values").json()["data"]
    assert "http_requests_total" in names and "success_rate" in names  # indicators are queryable names
    assert _get(platform, "/api/v1/label/svc/values", **{"match[]": "http_requests_total"}).json()["data"] == ["a", "b"]
    meta = _get(platform, "/api/v1/metadata", metric="http_requests_total").json()["data"]
    assert meta == {"http_requests_total": [{"type": "counter", "help": "Requests served.", "unit": ""}]}
    info = _get(platform, "/api/v1/status/buildinfo").json()
    assert info["status"] == "success" and info["data"]["version"]
    assert _get(platform, "/api/v1/rules").json()["data"]["groups"] == [] or platform.platform.ctx.has("alerting")  # type: ignore[union-attr]
    assert _get(platform, "/api/v1/nope").status_code == 404
    assert _get(platform, "/api/v1/query_exemplars", query="up").json() == {"status": "success", "data": []}


def test_metrics_exposition(fresh: PlatformThread) -> None:
    r = _get(fresh, "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "devbox_up" in r.text and 'devbox_component_up{component="metrics",state="running"} 1.0' in r.text
    assert 'http_requests_total{code="500",svc="a"} 300.0' in r.text
    assert "# TYPE http_requests counter" in r.text or "# TYPE http_requests_total counter" in r.text


# --- real peers ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) is not installed")
def test_promtool_queries_devbox(platform: PlatformThread, now: float) -> None:
    server = platform.url("prometheus")
    out = subprocess.run(
        [
            "promtool",
            "query",
            "instant",
            "--time",
            str(int(now)),
            server,
            "sum by (svc) (rate(http_requests_total[1m]))",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert '{svc="a"} => 2.5' in out.stdout and '{svc="b"} => 1' in out.stdout
    out = subprocess.run(
        [
            "promtool",
            "query",
            "range",
            "--start",
            str(int(now) - 120),
            "--end",
            str(int(now)),
            "--step",
            "1m",
            server,
            'http_requests_total{svc="b"}',
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("@[") == 3
    out = subprocess.run(
        ["promtool", "query", "series", "--match", "http_requests_total", server],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and out.stdout.count("http_requests_total") == 3, out.stderr
    out = subprocess.run(["promtool", "query", "labels", server, "svc"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.split() == ["a", "b"], out.stderr
    out = subprocess.run(["promtool", "query", "instant", server, "sum("], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0 and "bad_data" in out.stderr


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus (Debian) is not installed")
def test_real_prometheus_scrapes_devbox(fresh: PlatformThread, tmp_path: Path) -> None:
    target = fresh.target("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: devbox\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = _free_port()
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    expected = {("a", "200"), ("a", "500"), ("b", "200")}

    def query(expr: str) -> list:
        try:
            r = httpc.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": expr})
        except httpx.TransportError:  # Prometheus still starting
            return []
        return r.json()["data"]["result"] if r.status_code == 200 else []

    def scraped() -> set[tuple[str, str]] | None:
        found = {(s["metric"]["svc"], s["metric"]["code"]) for s in query('http_requests_total{job="devbox"}')}
        return found if found == expected else None

    try:
        wait_for(scraped, timeout=90, every=0.5, what=f"Prometheus to scrape devbox's {sorted(expected)}")
        up = query('up{job="devbox"}')
        assert up and up[0]["value"][1] == "1", up
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


def test_openapi_fuzz_never_gives_a_server_error(platform: PlatformThread) -> None:
    """schemathesis generates requests for every endpoint devbox serves; none may answer 5xx, and
    every answer carries the Prometheus envelope."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_path(SPEC).include(
        path_regex=r"^/(query|query_range|query_exemplars|series|labels|label/\{name\}/values|metadata|status/buildinfo)$"
    )
    base = platform.url("prometheus") + "/api/v1"
    checked = 0
    statuses: list[int] = []
    with httpx.Client() as http:
        for result in schema.get_all_operations():
            operation = result.ok()

            @given(case=operation.as_strategy())
            @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def run(case: schemathesis.Case) -> None:
                kwargs = case.as_transport_kwargs(base_url=base)
                response = http.request(
                    kwargs["method"],
                    kwargs["url"],
                    params=kwargs.get("params"),
                    headers=kwargs.get("headers"),
                    content=kwargs.get("data") if isinstance(kwargs.get("data"), (bytes, str)) else None,
                    data=kwargs.get("data") if isinstance(kwargs.get("data"), dict) else None,
                )
                statuses.append(response.status_code)
                assert response.status_code < 500, (case, response.text)
                if response.status_code != 404:
                    assert response.json()["status"] in ("success", "error"), response.text

            run()
            checked += 1
    assert checked >= 8
    assert 200 in statuses and 400 in statuses, sorted(set(statuses))


def test_grafana_data_source_request_sequence(platform: PlatformThread, now: float) -> None:
    """The requests Grafana's Prometheus data source makes (PROTOCOLS.md), in its order and forms.

    Grafana itself is not installable here (no Debian package, no registry); this replays what it
    sends: the "Save & test" check, the query editor's look-ups, and a panel's range query by POST.
    """
    base = platform.url("prometheus") + "/api/v1"
    with httpx.Client(base_url=base, headers={"Content-Type": "application/x-www-form-urlencoded"}) as grafana:
        check = grafana.post("/query", content=f"query=1%2B1&time={now:.3f}")
        assert check.json()["data"] == {"resultType": "scalar", "result": [pytest.approx(now), "2"]}
        build = grafana.get("/status/buildinfo").json()["data"]
        assert build["version"] and not build.get("features")  # empty features: treated as Prometheus
        assert "http_requests_total" in grafana.get("/label/__name__/values").json()["data"]
        assert "svc" in grafana.get("/labels").json()["data"]
        values = grafana.get("/label/svc/values", params={"match[]": "http_requests_total"}).json()["data"]
        assert values == ["a", "b"]
        assert grafana.get("/metadata").json()["data"]["http_requests_total"][0]["type"] == "counter"
        panel = grafana.post(
            "/query_range",
            content="query=sum+by+(svc)(rate(http_requests_total%5B1m%5D))"
            f"&start={now - 300:.0f}&end={now:.0f}&step=15",
        ).json()["data"]
        assert panel["resultType"] == "matrix"
        assert {s["metric"]["svc"] for s in panel["result"]} == {"a", "b"}
        assert all(len(s["values"]) >= 15 for s in panel["result"])
