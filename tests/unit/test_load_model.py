"""The capacity model on synthetic traces shaped like the shop's (pure: no platform, no Locust)."""

from __future__ import annotations

import itertools

import pytest
from devbox.mocks.tracing.models import Span

from devbox.load import model
from devbox.load.locust import aggregate, bucket_percentile, summarise

_ids = itertools.count(1)


def _id() -> str:
    return f"{next(_ids):016x}"


def checkout_trace(*, fraud: bool, t0: int = 1_000_000, lost: bool = False) -> list[Span]:
    """gateway GET /checkout/{user} → users, orders → (users, inventory), payment (→ users if fraud)."""
    tid = f"{next(_ids):032x}"
    spans: list[Span] = []

    def span(parent: str | None, name: str, kind: str, service: str, start: int, dur: int) -> str:
        sid = _id()
        spans.append(Span(tid, sid, parent, name, kind, service, start, dur))
        return sid

    def rpc(parent: str, caller: str, callee: str, op: str, start: int, dur: int) -> str:
        client = span(parent, op, "CLIENT", caller, start, dur)
        return span(client, op, "SERVER", callee, start + 10, dur - 20)

    root = span(None, "GET /checkout/{user}", "SERVER", "gateway", t0, 50_000)
    rpc(root, "gateway", "users", "GET /users/{user_id}", t0 + 100, 2_000)
    quote = rpc(root, "gateway", "orders", "GET /quote", t0 + 100, 40_000)
    rpc(quote, "orders", "users", "GET /users/{user_id}", t0 + 200, 2_000)
    rpc(quote, "orders", "inventory", "/Inventory/GetProduct", t0 + 200, 1_000)
    auth = rpc(quote, "orders", "payment", "POST /authorize", t0 + 3_000, 30_000)
    if fraud:
        rpc(auth, "payment", "users", "GET /users/{user_id}", t0 + 3_100, 2_000)
    if lost:  # one service's batch never arrived
        spans[:] = [s for s in spans if s.service != "payment"]
    return spans


def products_trace(t0: int = 1_000_000) -> list[Span]:
    tid = f"{next(_ids):032x}"
    root, client, server = _id(), _id(), _id()
    return [Span(tid, root, None, "GET /products", "SERVER", "gateway", t0, 5_000),
            Span(tid, client, root, "/Inventory/ListProducts", "CLIENT", "gateway", t0 + 10, 2_000),
            Span(tid, server, client, "/Inventory/ListProducts", "SERVER", "inventory", t0 + 20, 1_900)]


def probe_trace() -> list[Span]:
    return [Span(f"{next(_ids):032x}", _id(), None, "GET /healthz", "SERVER", "users", 1_000_000, 100)]


def shop_traces(checkouts: int = 100, fraud_every: int = 5, products: int = 60) -> list[list[Span]]:
    traces = [checkout_trace(fraud=i % fraud_every == 0) for i in range(checkouts)]
    traces += [products_trace() for _ in range(products)]
    traces += [probe_trace() for _ in range(10)]
    return traces


def test_fanout_mean_and_p95_per_service_and_operation() -> None:
    fan = model.fanout(shop_traces(), entry_service="gateway")
    assert set(fan) == {"GET /checkout/{user}", "GET /products"}  # probes left out
    checkout = fan["GET /checkout/{user}"]
    assert checkout.traces == 100
    calls = {(c.service, c.operation): c for c in checkout.calls}
    users = calls[("users", "GET /users/{user_id}")]
    assert users.mean == pytest.approx(2.2)  # gateway + orders always, payment's fraud check 1 in 5
    assert users.p95 == 3
    assert calls[("payment", "POST /authorize")].mean == 1.0
    assert checkout.services["users"] == (pytest.approx(2.2), 3.0)
    # the entry service counts once per request
    assert checkout.per_service()["gateway"] == 1.0
    assert fan["GET /products"].per_service() == {"gateway": 1.0, "inventory": 1.0}


def test_prediction_of_each_service_from_entry_qps() -> None:
    fan = model.fanout(shop_traces(), entry_service="gateway")
    predicted = model.predict_service_qps({"GET /checkout/{user}": 100, "GET /products": 50}, fan)
    assert predicted == pytest.approx({"gateway": 150, "users": 220, "orders": 100, "inventory": 150,
                                       "payment": 100})


def test_prediction_at_a_second_load_level_with_another_mix() -> None:
    """Fan-out learned at one level predicts another level's calls from its own entry mix: the
    accuracy check's premise. The second level shifts the mix (2:1 checkouts to products becomes
    1:4) and its fraud share (1 in 4 instead of 1 in 5, as random order amounts do), so only a
    per-entry fan-out predicts it — a service's calls per entry request of the first level would not."""
    first_traces = shop_traces(checkouts=200, products=100)
    first = model.fanout(first_traces, entry_service="gateway")
    second = shop_traces(checkouts=160, fraud_every=4, products=640)
    measured = {svc: row["calls"] for svc, row in model.service_figures(second, 0, 10**12).items()}
    predicted = model.predict_service_qps({"GET /checkout/{user}": 160, "GET /products": 640}, first)
    errors = {svc: model.error_pct(predicted[svc], calls) for svc, calls in measured.items()}
    assert all(err is not None and abs(err) <= 5 for err in errors.values()), errors
    assert errors["users"] == pytest.approx((160 * 2.2 - 160 * 2.25) / (160 * 2.25) * 100)  # the fraud share moved
    # mix-blind: each service's calls per entry request at the first level, times the second's entry requests
    first_calls = {svc: row["calls"] for svc, row in model.service_figures(first_traces, 0, 10**12).items()}
    blind = {svc: calls / 300 * 800 for svc, calls in first_calls.items()}
    assert max(abs(model.error_pct(blind[svc], calls) or 0) for svc, calls in measured.items()) > 50


def test_unknown_entry_in_a_target_mix_is_named_with_a_suggestion() -> None:
    fan = model.fanout(shop_traces(), entry_service="gateway")
    with pytest.raises(model.ModelError, match=r"unknown entry 'GET /checkout'.*did you mean 'GET /checkout/\{user\}'"):
        model.predict_service_qps({"GET /checkout": 10}, fan)


def test_target_mix_parsing() -> None:
    assert model.parse_target_mix("GET /checkout/{user}=500/s, POST /orders=50/s") == {
        "GET /checkout/{user}": 500.0, "POST /orders": 50.0}
    assert model.parse_target_mix("GET /products = 12.5") == {"GET /products": 12.5}
    for bad in ("", "GET /x", "GET /x=fast", "A=1, A=2"):
        with pytest.raises(model.ModelError):
            model.parse_target_mix(bad)


def test_stop_conditions() -> None:
    conds = model.parse_until("p99>300ms or errors>1%")
    assert [str(c) for c in conds] == ["p99>300ms", "errors>1%"]
    assert model.broken(conds, {"p99": 299.0, "errors": 0.0}) == []
    assert model.broken(conds, {"p99": 301.0, "errors": 0.02}) == ["p99>300ms", "errors>1%"]
    assert model.parse_until("p95>=1.5s")[0].value == 1500
    assert model.parse_until("cpu>0.9")[0].holds({"cpu": 0.95})
    with pytest.raises(model.ModelError):
        model.parse_until("latency is bad")


def _step(n_users: int, broke: list[str], **services: tuple[float, int, float, float]) -> model.Step:
    return model.Step(n_users, {}, {svc: model.ServiceStep(qps=q, instances=n, cpu_s=cpu, seconds=10.0, p99_ms=p99)
                                  for svc, (q, n, cpu, p99) in services.items()}, broke)


def test_saturation_is_pinned_on_the_busiest_service_when_the_slo_breaks() -> None:
    steps = [
        _step(5, [], gateway=(20, 1, 1.5, 30), orders=(20, 2, 3.0, 25), users=(44, 2, 1.0, 3)),
        _step(15, [], gateway=(60, 1, 4.5, 40), orders=(60, 2, 9.0, 35), users=(132, 2, 3.0, 3)),
        _step(25, ["p99>300ms"], gateway=(80, 1, 6.0, 400), orders=(80, 2, 17.8, 390), users=(176, 2, 4.0, 4)),
    ]
    sat = model.saturation(steps)
    assert sat["orders"]["step"] == 2  # 0.89 cores per instance: past the CPU limit and the busiest
    assert sat["orders"]["qps_per_instance"] == 40
    assert "CPU 0.89" in sat["orders"]["why"]
    assert sat["gateway"]["step"] is None and sat["gateway"]["last_good_qps_per_instance"] == 60
    assert sat["users"]["step"] is None


def test_saturation_without_a_hot_cpu_blames_the_largest_latency_growth() -> None:
    steps = [_step(5, [], a=(10, 1, 0.5, 10), b=(10, 1, 0.5, 20)),
             _step(10, ["p99>300ms"], a=(20, 1, 1.0, 15), b=(20, 1, 1.0, 400))]
    sat = model.saturation(steps)
    assert sat["b"]["step"] == 1 and "p99 grew most" in sat["b"]["why"]
    assert sat["a"]["step"] is None


def test_instances_needed_with_headroom_and_first_bottleneck() -> None:
    needs, bottleneck = model.instances_needed(
        {"gateway": 550, "orders": 550, "users": 1150},
        cpu_s_per_request={"gateway": 0.005, "orders": 0.014, "users": 0.002},
        saturated_qps_per_instance={"orders": 40.0},
        instances_now={"gateway": 1, "orders": 2, "users": 2}, headroom=0.3, cpu_limit=0.85)
    by = {n.service: n for n in needs}
    assert by["gateway"].capacity_per_instance == pytest.approx(170)
    assert by["gateway"].needed == 5  # 550 / (170 x 0.7) = 4.6
    assert by["orders"].capacity_per_instance == 40.0  # the ramp's figure is lower than the CPU bound
    assert by["orders"].needed == 20  # 550 / 28
    assert by["users"].needed == 4  # 1150 / (425 x 0.7) = 3.9
    assert bottleneck is not None and bottleneck.service == "orders"


def test_span_completeness_counts_missing_traces_and_spans() -> None:
    traces = [checkout_trace(fraud=False) for _ in range(90)]
    fan = model.fanout(traces, entry_service="gateway")
    received = sum(len(t) for t in traces)
    report = model.span_completeness({"GET /checkout/{user}": 100}, fan, received)
    assert report["traces_ratio"] == pytest.approx(0.9)
    assert report["spans_missing"] == 10 * 11 and report["complete"] is False
    assert model.span_completeness({"GET /checkout/{user}": 90}, fan, received)["complete"] is True


def test_service_figures_of_a_window() -> None:
    traces = [checkout_trace(fraud=False, t0=1_000_000 + i * 100_000) for i in range(10)]
    figures = model.service_figures(traces, 1_000_000, 1_499_999)  # the first five start in the window
    assert figures["gateway"]["calls"] == 5 and figures["users"]["calls"] == 10
    assert figures["gateway"]["qps"] == pytest.approx(10.0, rel=1e-3)


def test_locust_buckets_give_percentiles_and_rates() -> None:
    buckets = {"10": 90, "100": 9, "1000": 1}
    assert bucket_percentile(buckets, 0.5) == 10 and bucket_percentile(buckets, 0.99) == 100
    assert bucket_percentile(buckets, 1.0) == 1000 and bucket_percentile({}, 0.5) is None
    final = [{"name": "GET /a", "method": "GET", "num_requests": 100, "num_failures": 2,
              "total_response_time": 2900, "response_times": buckets},
             {"name": "GET /b", "method": "GET", "num_requests": 10, "num_failures": 0,
              "total_response_time": 50, "response_times": {"5": 10}}]
    rows = summarise(final, 10.0)
    assert rows[0]["rps"] == 10.0 and rows[0]["errors"] == 0.02 and rows[0]["p99"] == 100
    total = aggregate(final, 10.0)
    assert total["requests"] == 110 and total["p50"] == 10


def test_lower_cased_names_from_the_zipkin_api_align_with_locusts() -> None:
    traces = shop_traces(checkouts=10, products=5)
    for trace in traces:
        for s in trace:
            s.name = s.name.lower()  # how the Zipkin query API answers
    fan = model.align_names(model.fanout(traces, entry_service="gateway"), ["GET /checkout/{user}", "GET /products"])
    assert set(fan) == {"GET /checkout/{user}", "GET /products"}  # probes ("get /healthz") still left out
    assert model.predict_service_qps({"GET /products": 10}, fan) == {"gateway": 10.0, "inventory": 10.0}


def test_a_millisecond_service_is_not_blamed_for_growing_a_few_milliseconds() -> None:
    """The README's ramp blamed users (p99 2 -> 8 ms, x4) over the gateway (316 -> 565 ms, x1.8)."""
    steps = [_step(5, [], gateway=(25, 1, 0.7, 316), users=(35, 2, 0.3, 2)),
             _step(20, ["p99>500ms"], gateway=(60, 1, 1.8, 565), users=(86, 2, 0.7, 8))]
    sat = model.saturation(steps)
    assert sat["gateway"]["step"] == 1 and "p99 grew most (x1.8" in sat["gateway"]["why"]
    assert sat["users"]["step"] is None


def test_a_ramp_broken_at_its_first_step_blames_the_busiest_service_not_the_last_name() -> None:
    steps = [_step(10, ["p99>500ms"], gateway=(33, 1, 3.2, 580), users=(70, 2, 1.0, 4))]
    sat = model.saturation(steps)
    assert sat["gateway"]["step"] == 0 and "was the busiest (0.32 cores" in sat["gateway"]["why"]
    assert sat["users"]["step"] is None
