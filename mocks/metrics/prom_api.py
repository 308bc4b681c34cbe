"""Prometheus HTTP API subset and ``/metrics`` exposition, on the ``prometheus`` listener.

Serves what promtool, Grafana's Prometheus data source and the Prometheus web UI call:
``/api/v1/query``, ``/query_range`` (GET and form POST), ``/series``, ``/labels``,
``/label/<name>/values``, ``/metadata``, ``/status/buildinfo``, ``/query_exemplars`` (always empty),
``/rules`` and ``/alerts`` (from the alerting component when it is hosted), with the Prometheus
envelope and error types.
``/metrics`` exposes devbox's own health and the newest value of every stored series (via
prometheus-client), so a real Prometheus can scrape devbox.

LIMITATIONS: ``timeout``/``limit`` parameters are accepted and ignored; no ``/targets``,
remote read/write or native histograms.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from devbox.mocks.metrics.core import MetricsCore, ReportError
from devbox.mocks.metrics.promql import NAME, QueryError
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

import devbox
from devbox.platform.registry import COMPONENTS

if TYPE_CHECKING:
    from devbox.platform.component import PlatformContext

PROMETHEUS_VERSION = "2.53.0"
_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
#: Series whose newest sample is older than this are left out of /metrics (Prometheus's lookback).
EXPOSE_FRESH = 300.0


class BadData(ValueError):
    pass


def format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return repr(float(v))


def parse_time(text: str | None, default: float | None, what: str) -> float:
    if text is None or text == "":
        if default is None:
            raise BadData(f'invalid parameter "{what}": missing')
        return default
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadData(f'invalid parameter "{what}": cannot parse "{text}" to a valid timestamp') from None
    if not math.isfinite(value):
        raise BadData(f'invalid parameter "{what}": cannot parse "{text}" to a valid timestamp')
    return value


def parse_step(text: str | None) -> float:
    if not text:
        raise BadData('invalid parameter "step": missing')
    try:
        value = float(text)
    except ValueError:
        m = _DURATION.match(text)
        if not m or not any(m.groups()):
            raise BadData(f'invalid parameter "step": cannot parse "{text}" to a valid duration') from None
        value = sum(int(m.group(i * 2 + 2) or 0) * unit for i, unit in enumerate(_UNITS))
    if not math.isfinite(value) or value <= 0:
        raise BadData(
            'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
            "Try a positive integer"
        )
    return value


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def _error(kind: str, message: str) -> JSONResponse:
    status = {"bad_data": 400, "execution": 422, "not_found": 404, "internal": 500, "timeout": 503}[kind]
    return JSONResponse({"status": "error", "errorType": kind, "error": message}, status_code=status)


def _query_error(exc: QueryError) -> JSONResponse:
    text = str(exc)
    if "many-to-many" in text or "multiple matches" in text:
        return _error("execution", text)
    return _error("bad_data", text)


async def _params(request: Request) -> dict[str, list[str]]:
    """Query-string and form-body parameters (promtool POSTs forms; Grafana may do either)."""
    out: dict[str, list[str]] = {}
    for key, value in request.query_params.multi_items():
        out.setdefault(key, []).append(value)
    if request.method == "POST":
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "application/x-www-form-urlencoded":
            body = (await request.body()).decode("utf-8", "replace")
            for key, value in parse_qsl(body, keep_blank_values=True):
                out.setdefault(key, []).append(value)
    return out


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _bounds(params: dict[str, list[str]]) -> tuple[float | None, float | None]:
    """Optional ``start``/``end`` of the metadata endpoints."""
    start = parse_time(_one(params, "start"), -math.inf, "start") if _one(params, "start") else None
    end = parse_time(_one(params, "end"), math.inf, "end") if _one(params, "end") else None
    return start, end


def _vector_json(result: list[tuple[dict[str, str], float]], at: float) -> list[dict[str, Any]]:
    return [{"metric": labels, "value": [at, format_value(v)]} for labels, v in result]


def _matrix_json(result: list[tuple[dict[str, str], list[tuple[float, float]]]]) -> list[dict[str, Any]]:
    return [{"metric": labels, "values": [[t, format_value(v)] for t, v in pts]} for labels, pts in result]


class _StoreCollector:
    """prometheus-client collector: devbox's own figures and the newest value of each fresh series."""

    def __init__(self, core: MetricsCore, ctx: PlatformContext) -> None:
        self.core = core
        self.ctx = ctx

    def collect(self) -> Any:
        store = self.core.store
        up = Metric("devbox_up", "1 while the devbox platform serves.", "gauge")
        up.add_sample("devbox_up", {"version": devbox.__version__}, 1.0)
        yield up
        components = Metric("devbox_component_up", "1 when a platform component is running, 0 otherwise.", "gauge")
        for name in COMPONENTS:
            if not self.ctx.has(name):
                continue
            component = self.ctx.component(name)
            running = getattr(component.state, "value", "") == "running"
            components.add_sample(
                "devbox_component_up",
                {"component": name, "state": str(getattr(component.state, "value", ""))},
                1.0 if running else 0.0,
            )
        yield components
        series = Metric("devbox_metrics_series", "Series held by the devbox metrics store.", "gauge")
        series.add_sample("devbox_metrics_series", {}, float(len(store._series)))
        yield series
        written = Metric("devbox_metrics_points_written", "Points written since start.", "counter")
        written.add_sample("devbox_metrics_points_written_total", {}, float(store.points_written))
        yield written
        now = time.time()
        families: dict[str, Metric] = {}
        for labels, ts, value in store.latest():
            if now - ts > EXPOSE_FRESH or not math.isfinite(value):
                continue
            name = labels[NAME]
            if name.startswith("devbox_"):
                continue
            family, kind = self._family(name)
            metric = families.get(family)
            if metric is None:
                info = store.meta.get(family) or store.meta.get(name)
                metric = families[family] = Metric(
                    family, (info.help if info else "") or f"devbox stored series {family}", kind
                )
            metric.add_sample(name, {k: v for k, v in labels.items() if k != NAME}, value)
        yield from families.values()

    def _family(self, name: str) -> tuple[str, str]:
        meta = self.core.store.meta
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)]
            if name.endswith(suffix) and base in meta and meta[base].type in ("histogram", "summary"):
                return base, meta[base].type
        info = meta.get(name)
        if info is not None and info.type == "counter" and name.endswith("_total"):
            return name[: -len("_total")], "counter"
        if info is not None and info.type == "gauge":
            return name, "gauge"
        return name, "unknown"


def prometheus_router(get_core: Callable[[], MetricsCore], ctx: PlatformContext) -> APIRouter:
    router = APIRouter()
    methods = ["GET", "POST"]

    @router.api_route("/api/v1/query", methods=methods)
    async def query(request: Request) -> Response:
        params = await _params(request)
        try:
            expr = _one(params, "query")
            if not expr:
                raise BadData('invalid parameter "query": missing')
            at = parse_time(_one(params, "time"), time.time(), "time")
            kind, result = await asyncio.to_thread(get_core().evaluator.instant, expr, at)
        except BadData as exc:
            return _error("bad_data", str(exc))
        except QueryError as exc:
            return _query_error(exc)
        if kind == "vector":
            data: Any = _vector_json(result, at)
        elif kind == "matrix":
            data = _matrix_json(result)
        elif kind == "scalar":
            data = [at, format_value(result)]
        else:
            data = [at, result]
        return _ok({"resultType": kind, "result": data})

    @router.api_route("/api/v1/query_range", methods=methods)
    async def query_range(request: Request) -> Response:
        params = await _params(request)
        try:
            expr = _one(params, "query")
            if not expr:
                raise BadData('invalid parameter "query": missing')
            start = parse_time(_one(params, "start"), None, "start")
            end = parse_time(_one(params, "end"), None, "end")
            step = parse_step(_one(params, "step"))
            if end < start:
                raise BadData('invalid parameter "end": end timestamp must not be before start time')
            if (end - start) / step > 11000:
                raise BadData(
                    "exceeded maximum resolution of 11,000 points per timeseries. "
                    "Try decreasing the query resolution (?step=XX)"
                )
            _, result = await asyncio.to_thread(get_core().evaluator.range, expr, start, end, step)
        except BadData as exc:
            return _error("bad_data", str(exc))
        except QueryError as exc:
            return _query_error(exc)
        return _ok({"resultType": "matrix", "result": _matrix_json(result)})

    @router.api_route("/api/v1/series", methods=methods)
    async def series(request: Request) -> Response:
        params = await _params(request)
        matches = params.get("match[]") or []
        if not matches:
            return _error("bad_data", "no match[] parameter provided")
        try:
            start, end = _bounds(params)
            found = await asyncio.to_thread(get_core().series_matching, matches, start, end)
        except BadData as exc:
            return _error("bad_data", str(exc))
        except QueryError as exc:
            return _error("bad_data", str(exc))
        return _ok(sorted(found, key=lambda lb: sorted(lb.items())))

    @router.api_route("/api/v1/labels", methods=methods)
    async def labels(request: Request) -> Response:
        params = await _params(request)
        try:
            start, end = _bounds(params)
            return _ok(await asyncio.to_thread(get_core().label_names, params.get("match[]") or [], start, end))
        except BadData as exc:
            return _error("bad_data", str(exc))
        except QueryError as exc:
            return _error("bad_data", str(exc))

    @router.get("/api/v1/label/{name}/values")
    async def label_values(name: str, request: Request) -> Response:
        params = await _params(request)
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            return _error("bad_data", f'invalid label name: "{name}"')
        try:
            start, end = _bounds(params)
            return _ok(await asyncio.to_thread(get_core().label_values, name, params.get("match[]") or [], start, end))
        except BadData as exc:
            return _error("bad_data", str(exc))
        except QueryError as exc:
            return _error("bad_data", str(exc))

    @router.get("/api/v1/metadata")
    async def metadata(request: Request) -> Response:
        params = await _params(request)
        wanted = _one(params, "metric")
        limit_text = _one(params, "limit")
        try:
            limit = int(limit_text) if limit_text else -1
        except ValueError:
            return _error("bad_data", f'invalid parameter "limit": "{limit_text}" is not an integer')
        out: dict[str, list[dict[str, str]]] = {}
        for info in sorted(get_core().store.meta.values(), key=lambda i: i.name):
            if wanted and info.name != wanted:
                continue
            if 0 <= limit <= len(out):
                break
            out[info.name] = [{"type": info.type, "help": info.help, "unit": info.unit}]
        return _ok(out)

    @router.get("/api/v1/status/buildinfo")
    async def buildinfo() -> Response:
        return _ok(
            {
                "version": PROMETHEUS_VERSION,
                "revision": f"devbox-{devbox.__version__}",
                "branch": "devbox",
                "buildUser": "devbox",
                "buildDate": "",
                "goVersion": "",
            }
        )

    @router.get("/api/v1/rules")
    async def rules(request: Request) -> Response:
        provider = _alerting(ctx, "prometheus_rules")
        data = provider(dict(request.query_params)) if provider else {"groups": []}
        return _ok(data)

    @router.get("/api/v1/alerts")
    async def alerts() -> Response:
        provider = _alerting(ctx, "prometheus_alerts")
        return _ok(provider() if provider else {"alerts": []})

    @router.api_route("/api/v1/query_exemplars", methods=methods)
    async def exemplars(request: Request) -> Response:
        """devbox keeps no exemplars; answering empty keeps Grafana's exemplar toggle quiet."""
        params = await _params(request)
        try:
            if not _one(params, "query"):
                raise BadData('invalid parameter "query": missing')
        except BadData as exc:
            return _error("bad_data", str(exc))
        return _ok([])

    @router.get("/metrics")
    async def metrics() -> Response:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StoreCollector(get_core(), ctx))  # type: ignore[arg-type]
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    @router.api_route("/api/v1/{rest:path}", methods=methods)
    async def unknown(rest: str) -> Response:
        return _error("not_found", f"devbox does not serve /api/v1/{rest}")

    return router


def _alerting(ctx: PlatformContext, method: str) -> Callable[..., Any] | None:
    """The alerting component's Prometheus-shaped view, when it is hosted and offers one."""
    if not ctx.has("alerting"):
        return None
    found = getattr(ctx.component("alerting"), method, None)
    return found if callable(found) else None


__all__ = ["ReportError", "format_value", "parse_step", "parse_time", "prometheus_router"]
