"""devbox's tracing API on constructed traces with known answers, and the Zipkin API against its
official spec (schemathesis, bounded examples)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from devbox.mocks.tracing.convert import to_otlp_request
from devbox.mocks.tracing.models import Span
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from devbox.testing import PlatformThread, running_platform
from tests import httpc

SPEC = str(Path(__file__).resolve().parents[1] / "specs" / "zipkin2-api.yaml")
FAILED, OK, PROBE = "a1" * 16, "b2" * 16, "c3" * 16


def constructed() -> list[Span]:
    """The failed checkout of the unit tests (root cause inventory.reserve; critical path shares
    gateway 34, orders 20, inventory 46 of 100 µs) and one good checkout."""
    t0 = time.time_ns() // 1000 - 5_000_000

    def s(trace: str, sid: int, parent: int | None, service: str, name: str, kind: str, a: int, b: int,
          *, error: bool = False, message: str = "", remote: str | None = None) -> Span:
        return Span(trace_id=trace, span_id=f"{sid:016x}", parent_id=f"{parent:016x}" if parent else None,
                    name=name, kind=kind, service=service, start_us=t0 + a, duration_us=b - a, error=error,
                    status_message=message, remote_service=remote)

    return [
        s(FAILED, 1, None, "gateway", "GET /checkout", "SERVER", 0, 100, error=True, message="500"),
        s(FAILED, 2, 1, "gateway", "call orders", "CLIENT", 10, 80, error=True),
        s(FAILED, 3, 2, "orders", "POST /orders", "SERVER", 12, 78, error=True, message="stock failed"),
        s(FAILED, 4, 3, "orders", "call inventory", "CLIENT", 20, 70, error=True),
        s(FAILED, 5, 4, "inventory", "reserve", "SERVER", 22, 68, error=True, message="out of stock"),
        s(FAILED, 6, 5, "inventory", "db", "INTERNAL", 25, 35),
        s(FAILED, 7, 1, "gateway", "call users", "CLIENT", 82, 95, remote="users"),
        s(OK, 1, None, "gateway", "GET /checkout", "SERVER", 1000, 1100),
        s(OK, 2, 1, "gateway", "call orders", "CLIENT", 1010, 1050),
        s(OK, 3, 2, "orders", "POST /orders", "SERVER", 1012, 1048),
        s(PROBE, 1, None, "orders", "GET /healthz", "SERVER", 2000, 2005),
    ]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    with running_platform(tmp_path_factory.mktemp("tracing-api"), components=["tracing"]) as p:
        r = httpc.post(p.url("otlp_http") + "/v1/traces", content=to_otlp_request(constructed()).SerializeToString(),
                       headers={"content-type": "application/x-protobuf"})
        assert r.status_code == 200
        yield p


def test_list_filters_and_one_trace(platform: PlatformThread) -> None:
    api = platform.url("api") + "/api"
    failed = httpc.get(api + "/traces", params={"errors": "true"}).json()["traces"]
    assert [t["trace_id"] for t in failed] == [FAILED]
    assert failed[0]["root_name"] == "GET /checkout" and failed[0]["services"] == ["gateway", "inventory", "orders"]
    slow = httpc.get(api + "/traces", params={"min_duration": 90}).json()["traces"]
    assert {t["trace_id"] for t in slow} == {FAILED, OK}
    assert httpc.get(api + "/traces", params={"service": "inventory"}).json()["traces"][0]["trace_id"] == FAILED
    listed = {t["trace_id"] for t in httpc.get(api + "/traces").json()["traces"]}
    assert listed == {FAILED, OK}  # health probes are left out unless asked for
    with_probes = httpc.get(api + "/traces", params={"probes": "true", "service": "orders"}).json()["traces"]
    assert {t["trace_id"] for t in with_probes} == {FAILED, OK, PROBE}
    spans = httpc.get(f"{api}/traces/{OK}").json()["spans"]
    assert [s["name"] for s in spans] == ["GET /checkout", "call orders", "POST /orders"]
    r = httpc.get(f"{api}/traces/{'c' * 32}")
    assert r.status_code == 404 and r.json()["error"] == "trace not found"
    r = httpc.get(f"{api}/traces/not-hex/why")
    assert r.status_code == 400 and "not a trace id" in r.json()["reason"]


def test_why_critical_path_topology_and_fanout(platform: PlatformThread) -> None:
    api = platform.url("api") + "/api"
    why = httpc.get(f"{api}/traces/{FAILED}/why").json()
    causes = [(c["service"], c["name"], c["message"]) for c in why["causes"]]
    assert causes == [("inventory", "reserve", "out of stock")]
    assert [h["service"] for h in why["causes"][0]["path"]] == ["gateway", "gateway", "orders", "orders", "inventory"]
    path = httpc.get(f"{api}/traces/{FAILED}/critical-path").json()
    assert {r["service"]: r["critical_us"] for r in path["services"]} == {"gateway": 34, "orders": 20, "inventory": 46}
    topo = httpc.get(api + "/topology", params={"service": "orders"}).json()
    edges = {(e["caller"], e["callee"]): (e["calls"], e["errors"]) for e in topo["edges"]}
    assert edges == {("gateway", "orders"): (2, 1), ("orders", "inventory"): (1, 1), ("gateway", "users"): (1, 0)}
    assert topo["service"]["callers"] == ["gateway"] and topo["service"]["callees_transitive"] == ["inventory"]
    r = httpc.get(api + "/topology", params={"service": "nobody"})
    assert r.status_code == 404 and "nobody" in r.json()["reason"]
    entries = httpc.get(api + "/traces/fanout").json()["entries"]
    entry = next(e for e in entries if e["operation"] == "GET /checkout")
    assert entry["service"] == "gateway" and entry["requests"] == 2
    assert entry["services"] == {"inventory": 0.5, "orders": 1.0, "users": 0.5}


@pytest.mark.slow  # schemathesis over every Zipkin operation: tens of seconds on a busy machine
def test_zipkin_api_conforms_to_its_spec(platform: PlatformThread) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    base = platform.url("zipkin") + "/api/v2"
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        # The spec types GET /spans as a list of spans; the real server (and UIs) return span names.
        checks = [not_a_server_error] if operation.path == "/spans" and operation.method == "get" else \
            [not_a_server_error, response_schema_conformance]
        _fuzz(operation, base, checks)
        tested += 1
    assert tested >= 8


def _fuzz(operation: schemathesis.APIOperation, base: str, checks: list) -> None:
    @settings(max_examples=25, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=10)
        case.validate_response(response, checks=checks)

    run()
