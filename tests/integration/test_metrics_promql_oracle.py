"""devbox's PromQL answers checked by real Prometheus: the same series and expressions go through
devbox's evaluator and through ``promtool test rules``, which fails unless Prometheus's own engine
computes exactly the samples devbox computed.

Windows and eval times are chosen off the sample grid so that the 2.x (left-closed) and 3.x
(left-open) range-selector boundaries agree.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from devbox.mocks.metrics.promql import Evaluator, ListSource

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus) is not installed"),
]

INTERVAL = 60
STEPS = 30


def _series() -> dict[str, list[float | None]]:
    n = range(STEPS)
    return {
        'req_total{svc="a",code="200"}': [10.0 * i for i in n],
        'req_total{svc="a",code="500"}': [1.0 * i for i in n],
        'req_total{svc="b",code="200"}': [5.0 * (i if i < 12 else i - 12) for i in n],  # a counter reset
        'req_total{svc="b",code="500"}': [3.0 * i for i in n],
        'lat_bucket{svc="a",le="0.1"}': [6.0 * i for i in n],
        'lat_bucket{svc="a",le="0.5"}': [9.0 * i for i in n],
        'lat_bucket{svc="a",le="+Inf"}': [10.0 * i for i in n],
        'lat_bucket{svc="b",le="0.1"}': [1.0 * i for i in n],
        'lat_bucket{svc="b",le="0.5"}': [2.0 * i for i in n],
        'lat_bucket{svc="b",le="+Inf"}': [8.0 * i for i in n],
        'temp{room="x"}': [float((i * 7) % 11) for i in n],
        'temp{room="y"}': [float(i) if i < 20 else None for i in n],  # goes stale
    }


EXPRESSIONS = [
    "req_total",
    'req_total{code!="200", svc=~"a|b"}',
    'req_total{svc!~"b"}',
    "rate(req_total[140s])",
    "increase(req_total[250s])",
    "irate(req_total[140s])",
    "delta(temp[250s])",
    "sum by (svc) (rate(req_total[140s]))",
    "sum without (code) (req_total)",
    "avg by (code) (req_total)",
    "max(req_total)",
    "min by (svc) (req_total)",
    "count(temp)",
    "topk(2, req_total)",
    "bottomk(1, rate(req_total[140s]))",
    'sum by (svc) (rate(req_total{code="500"}[140s])) / sum by (svc) (rate(req_total[140s]))',
    'rate(req_total{code="500"}[140s]) / ignoring(code) group_left sum by (svc) (rate(req_total[140s]))',
    "req_total > 100",
    "req_total > bool 100",
    "req_total * 2 + 1",
    "100 - req_total",
    'req_total{svc="a"} and on(code) req_total{svc="b"}',
    'req_total{code="200"} or req_total{code="500"}',
    'req_total unless req_total{svc="a"}',
    "histogram_quantile(0.9, rate(lat_bucket[140s]))",
    "histogram_quantile(0.5, sum by (le) (rate(lat_bucket[140s])))",
    "avg_over_time(temp[250s])",
    "max_over_time(temp[250s])",
    "min_over_time(temp[250s])",
    "sum_over_time(temp[250s])",
    "count_over_time(temp[250s])",
    "stddev_over_time(temp[250s])",
    "quantile_over_time(0.75, temp[250s])",
    "changes(temp[250s])",
    "resets(req_total[1000s])",
    "deriv(temp[250s])",
    "req_total offset 3m",
    "rate(req_total[140s] offset 2m)",
    "abs(temp - 5)",
    "clamp(temp, 2, 6)",
    "round(rate(req_total[140s]), 0.5)",
    "sqrt(temp)",
    'label_replace(temp, "floor", "f-$1", "room", "(.*)")',
    "absent(nothing)",
    "scalar(sum(temp)) * 2",
    "quantile(0.5, req_total)",
    "round(stddev(req_total), 0.01)",
    'count_values("v", temp)',
    "max_over_time(rate(req_total[140s])[5m:1m])",
    "sort_desc(req_total)",
    "-req_total",
    "req_total == bool req_total",
    "req_total % 7",
    "req_total ^ 0.5",
    "vector(1)",
    "timestamp(temp)",
    "last_over_time(temp[250s])",
    "present_over_time(temp[250s])",
    "absent_over_time(nothing[250s])",
    "clamp_min(temp, 4)",
    "ln(temp + 1)",
    "exp(temp / 10)",
    'label_join(req_total, "both", "-", "svc", "code")',
    "sum(req_total) by (svc) > 50",
    "count by (svc) (req_total > 50)",
    "group by (svc) (req_total)",
    "round(stdvar(req_total), 0.01)",  # Prometheus sums series in map order: only ulp-stable
    "topk by (svc) (1, req_total)",
    "idelta(temp[250s])",
    "req_total @ 600",
    "rate(req_total[140s] @ 900)",
    'sum by (svc) (req_total) > on(svc) group_left() max by (svc) (req_total{code="500"})',
    'req_total{code="200"} + on(svc) req_total{code="500"}',
    'req_total{code="200"} - ignoring(code) req_total{code="500"}',
    "round(sum(rate(req_total[140s])) / count(req_total), 0.000001)",  # a 4-term float sum: map order
    "ceil(rate(req_total[140s]))",
    "floor(avg_over_time(temp[250s]))",
    "predict_linear(req_total[250s], 600)",
    "predict_linear(temp[250s], 60)",
]


def _labels_text(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


def _parse_series_key(key: str) -> dict[str, str]:
    name, _, rest = key.partition("{")
    labels = {"__name__": name}
    for part in rest.rstrip("}").split(","):
        k, _, v = part.partition("=")
        labels[k] = v.strip('"')
    return labels


def test_devbox_promql_agrees_with_prometheus(tmp_path: Path) -> None:
    src = ListSource()
    input_series = []
    for key, values in _series().items():
        src.add(_parse_series_key(key), [(i * INTERVAL, v) for i, v in enumerate(values) if v is not None])
        input_series.append({"series": key, "values": " ".join("_" if v is None else repr(v) for v in values)})
    ev = Evaluator(src)
    tests = []
    for eval_seconds in (1290, 1530):  # 21m30s, 25m30s: off the 1 m grid, after room y went stale
        for expr in EXPRESSIONS:
            kind, result = ev.instant(expr, eval_seconds)
            samples = [] if kind != "vector" else result
            if kind == "scalar":
                continue
            exp = [{"labels": _labels_text(lb), "value": float(v)} for lb, v in samples]
            tests.append({"expr": expr, "eval_time": f"{eval_seconds}s", "exp_samples": exp})
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": input_series, "promql_expr_test": tests}],
    }
    path = tmp_path / "oracle.yml"
    with path.open("w") as fh:
        yaml.safe_dump(spec, fh, default_flow_style=False, sort_keys=False)
    out = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
