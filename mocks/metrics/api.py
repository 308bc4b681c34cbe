"""devbox's own metrics API on the ``api`` listener, under ``/api/metrics``.

- ``GET /api/metrics/ls``: base metrics (type, dimensions, series count) and composite indicators;
- ``GET /api/metrics/dimensions?metric=``: every dimension of a metric or indicator and its values;
- ``GET|POST /api/metrics/query``: metric, start/end/step, filters (=, !=, =~, !~, in), group by,
  aggregate (sum|avg|min|max|count|pNN), top-N; composite indicators answer like any metric;
- ``POST /api/metrics/custom``: 007 custom multi-dimensional reports (one, or ``{"reports": [...]}``);
- ``GET /api/metrics/promql?query=&time=``: PromQL instant query for scripts and scenarios.

Handlers raise :class:`devbox.platform.errors.BadRequest`; the ``api`` listener renders it as
``{"error", "reason"}`` with a 400 status.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from devbox.mocks.metrics.core import Filter, MetricsCore, QueryBusy, ReportError, StructuredQuery
from devbox.mocks.metrics.promql import QueryError
from fastapi import APIRouter, Request

from devbox.platform.errors import BadRequest, Busy

T = TypeVar("T")


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


class MetricsApi:
    """The handlers of ``/api/metrics``; the core is resolved per request (it exists once started)."""

    def __init__(self, get_core: Callable[[], MetricsCore]) -> None:
        self.get_core = get_core

    async def ls(self) -> Any:
        core = self.get_core()
        return {
            "metrics": await asyncio.to_thread(core.metric_list),
            "stats": await asyncio.to_thread(core.store.stats),
        }

    async def dimensions(self, metric: str) -> Any:
        dims = await _refused_as("invalid query", self.get_core().dimensions, metric)
        return {"metric": metric, "dimensions": dims}

    async def query(self, request: Request) -> Any:
        if request.method == "POST":
            data = await _json_body(request, b"{}")
            if not isinstance(data, dict):
                raise BadRequest("the body must be a JSON object", code="invalid query")
        else:
            data = {}
            for key, value in request.query_params.multi_items():
                if key in ("filter", "filters"):
                    data.setdefault("filters", []).append(value)
                else:
                    data[key] = value
        try:
            q = build_query(data)
        except ReportError as exc:
            raise BadRequest(str(exc), code="invalid query") from None
        core = self.get_core()
        return await _queried(core, lambda deadline: core.structured_query(q, deadline))

    async def promql(self, request: Request, query: str = "") -> Any:
        at = time.time()
        raw = request.query_params.get("time")
        if raw:
            try:
                at = float(raw)
            except ValueError:
                raise BadRequest(f"time: {raw!r} is not a number", code="invalid query") from None
        core = self.get_core()
        result = await _queried(core, lambda deadline: core.query_instant(query, at, deadline))
        return {"time": at, "result": [{"labels": lb, "value": v} for lb, v in result]}

    async def custom(self, request: Request) -> Any:
        data = await _json_body(request, b"null")
        if isinstance(data, dict) and "reports" in data:
            reports = data["reports"]
            if not isinstance(reports, list) or set(data) != {"reports"}:
                raise BadRequest("reports: a list of {name, dimensions, values}", code="invalid report")
        elif isinstance(data, list):
            reports = data
        elif isinstance(data, dict):
            reports = [data]
        else:
            raise BadRequest('send a report object, a list, or {"reports": [...]}', code="invalid report")
        if not reports:
            raise BadRequest("no reports given", code="invalid report")
        written = await _refused_as("invalid report", self.get_core().custom_reports, reports)
        return {"accepted": len(reports), "points": written}


async def _json_body(request: Request, empty: bytes) -> Any:
    try:
        return json.loads(await request.body() or empty)
    except ValueError as exc:
        raise BadRequest(str(exc), code="invalid JSON") from None


async def _refused_as(code: str, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` off the event loop; a report or query it refuses is a 400 with ``code``."""
    try:
        return await asyncio.to_thread(fn, *args)
    except (ReportError, QueryError) as exc:
        raise BadRequest(str(exc), code=code) from None


async def _queried(core: MetricsCore, work: Callable[[float], T]) -> T:
    """Evaluate on the metrics query pool (never the event loop, nor the executor ingest uses)."""
    try:
        return await core.queries.run(work)
    except QueryBusy as exc:
        raise Busy(str(exc)) from None
    except QueryError as exc:
        raise BadRequest(str(exc), code="invalid query") from None


def api_router(get_core: Callable[[], MetricsCore]) -> APIRouter:
    api = MetricsApi(get_core)
    router = APIRouter(prefix="/api/metrics", tags=["metrics"])
    router.add_api_route("/ls", api.ls, methods=["GET"])
    router.add_api_route("/dimensions", api.dimensions, methods=["GET"])
    router.add_api_route("/query", api.query, methods=["GET", "POST"])
    router.add_api_route("/promql", api.promql, methods=["GET"])
    router.add_api_route("/custom", api.custom, methods=["POST"])
    return router
