"""devbox's own metrics API on the ``api`` listener, under ``/api/metrics``.

- ``GET /api/metrics/ls``: base metrics (type, dimensions, series count) and composite indicators;
- ``GET /api/metrics/dimensions?metric=``: every dimension of a metric or indicator and its values;
- ``GET|POST /api/metrics/query``: metric, start/end/step, filters (=, !=, =~, !~, in), group by,
  aggregate (sum|avg|min|max|count|pNN), top-N; composite indicators answer like any metric;
- ``POST /api/metrics/custom``: 007 custom multi-dimensional reports (one, or ``{"reports": [...]}``);
- ``GET /api/metrics/promql?query=&time=``: PromQL instant query for scripts and scenarios.

Errors are ``{"error", "reason"}`` with a 4xx status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from devbox.mocks.metrics.core import Filter, MetricsCore, ReportError, StructuredQuery
from devbox.mocks.metrics.promql import QueryError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse


def _bad(error: str, reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": error, "reason": reason}, status_code=status)


def _float(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ReportError(f"{name}: {value!r} is not a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ReportError(f"{name}: must be a finite number")
    return number


def _relative(value: Any, name: str, now: float) -> float | None:
    """Absolute seconds, or ``-15m``/``-1h``/``now`` relative to now."""
    if isinstance(value, str) and (value == "now" or value.startswith("-")):
        if value == "now":
            return now
        text = value[1:]
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        if text and text[-1] in units:
            amount = _float(text[:-1], name)
            assert amount is not None
            return now - amount * units[text[-1]]
    return _float(value, name)


def build_query(data: dict[str, Any]) -> StructuredQuery:
    allowed = {"metric", "start", "end", "step", "filters", "filter", "group_by", "aggregate", "top", "window", "rate"}
    unknown = set(data) - allowed
    if unknown:
        raise ReportError(f"unknown field(s) {sorted(unknown)} (allowed: {', '.join(sorted(allowed))})")
    metric = data.get("metric")
    if not isinstance(metric, str) or not metric:
        raise ReportError("metric: give the metric or indicator name")
    now = time.time()
    filters: list[Filter] = []
    raw_filters = data.get("filters", data.get("filter")) or []
    if isinstance(raw_filters, (str, dict)):
        raw_filters = [raw_filters]
    if not isinstance(raw_filters, list):
        raise ReportError("filters: a list of 'label=value' strings or {label, op, value} objects")
    for item in raw_filters:
        if isinstance(item, str):
            filters.append(Filter.parse(item))
        elif isinstance(item, dict) and set(item) <= {"label", "op", "value"}:
            filters.append(Filter(str(item.get("label")), str(item.get("op", "=")), item.get("value", "")))
        else:
            raise ReportError(f"filters: cannot read {item!r}; use 'label=value' or {{label, op, value}}")
    group_by = data.get("group_by")
    if isinstance(group_by, str):
        group_by = [g.strip() for g in group_by.split(",") if g.strip() and g.strip() != "-"]
    if group_by is not None and not isinstance(group_by, list):
        raise ReportError("group_by: a list of dimension names ([] for one total; omit for the default)")
    top = data.get("top")
    if top not in (None, ""):
        try:
            top = int(top)
        except (TypeError, ValueError):
            raise ReportError(f"top: {top!r} is not an integer") from None
    else:
        top = None
    rate = data.get("rate", True)
    if isinstance(rate, str):
        rate = rate.lower() not in ("0", "false", "no")
    return StructuredQuery(
        metric=metric,
        start=_relative(data.get("start"), "start", now),
        end=_relative(data.get("end"), "end", now),
        step=_float(data.get("step"), "step"),
        filters=filters,
        group_by=None if group_by is None else [str(g) for g in group_by],
        aggregate=str(data.get("aggregate") or "sum").lower(),
        top=top,
        window=_float(data.get("window"), "window") or 60.0,
        rate=bool(rate),
    )


def api_router(get_core: Callable[[], MetricsCore]) -> APIRouter:
    router = APIRouter(prefix="/api/metrics", tags=["metrics"])

    @router.get("/ls")
    async def ls() -> Any:
        core = get_core()
        return {
            "metrics": await asyncio.to_thread(core.metric_list),
            "stats": await asyncio.to_thread(core.store.stats),
        }

    @router.get("/dimensions")
    async def dimensions(metric: str) -> Any:
        try:
            return {"metric": metric, "dimensions": await asyncio.to_thread(get_core().dimensions, metric)}
        except ReportError as exc:
            return _bad("invalid query", str(exc))

    @router.api_route("/query", methods=["GET", "POST"])
    async def query(request: Request) -> Any:
        if request.method == "POST":
            try:
                data = json.loads(await request.body() or b"{}")
            except ValueError as exc:
                return _bad("invalid JSON", str(exc))
            if not isinstance(data, dict):
                return _bad("invalid query", "the body must be a JSON object")
        else:
            data = {}
            for key, value in request.query_params.multi_items():
                if key in ("filter", "filters"):
                    data.setdefault("filters", []).append(value)
                else:
                    data[key] = value
        try:
            q = build_query(data)
            return await asyncio.to_thread(get_core().structured_query, q)
        except (ReportError, QueryError) as exc:
            return _bad("invalid query", str(exc))

    @router.get("/promql")
    async def promql(request: Request, query: str = "") -> Any:
        at = time.time()
        raw = request.query_params.get("time")
        if raw:
            try:
                at = float(raw)
            except ValueError:
                return _bad("invalid query", f"time: {raw!r} is not a number")
        try:
            result = await asyncio.to_thread(get_core().query_instant, query, at)
        except QueryError as exc:
            return _bad("invalid query", str(exc))
        return {"time": at, "result": [{"labels": lb, "value": v} for lb, v in result]}

    @router.post("/custom")
    async def custom(request: Request) -> Any:
        try:
            data = json.loads(await request.body() or b"null")
        except ValueError as exc:
            return _bad("invalid JSON", str(exc))
        if isinstance(data, dict) and "reports" in data:
            reports = data["reports"]
            if not isinstance(reports, list) or set(data) != {"reports"}:
                return _bad("invalid report", "reports: a list of {name, dimensions, values}")
        elif isinstance(data, list):
            reports = data
        elif isinstance(data, dict):
            reports = [data]
        else:
            return _bad("invalid report", 'send a report object, a list, or {"reports": [...]}')
        if not reports:
            return _bad("invalid report", "no reports given")
        try:
            written = await asyncio.to_thread(get_core().custom_reports, reports)
        except ReportError as exc:
            return _bad("invalid report", str(exc))
        return {"accepted": len(reports), "points": written}

    return router
