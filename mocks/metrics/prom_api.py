"""Prometheus HTTP API subset and ``/metrics`` exposition, on the ``prometheus`` listener.

Serves what promtool, Grafana's Prometheus data source and the Prometheus web UI call:
``/api/v1/query``, ``/query_range`` (GET and form POST), ``/series``, ``/labels``,
``/label/<name>/values``, ``/metadata``, ``/status/buildinfo``, ``/query_exemplars`` (always empty),
with the Prometheus envelope and error types. ``/api/v1/rules`` and ``/alerts`` belong to the rule
evaluator: the alerting component serves them on this listener when it is hosted; without it they
answer empty, as a Prometheus with no rule files does.
``/metrics`` exposes devbox's own health and the newest value of every stored series (via
prometheus-client), so a real Prometheus can scrape devbox.

Handlers raise :mod:`devbox.platform.errors` exceptions; :func:`render_error` (this listener's
error renderer, named by the metrics component spec) gives them Prometheus's error envelope.

Queries run on the metrics query pool (:class:`~devbox.mocks.metrics.core.QueryRunner`), never on
the event loop.

LIMITATIONS: ``timeout``/``limit`` parameters are accepted and ignored (the pool's timeout applies); no ``/targets``,
remote read/write or native histograms.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl

from devbox.mocks.metrics.core import MetricsCore, QueryBusy, ReportError
from devbox.mocks.metrics.promql import NAME, QueryError, format_value, format_values
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.convertors import Convertor, register_url_convertor

import devbox
from devbox.platform.errors import ApiError, BadRequest, Busy, NotFound, Unavailable, Unprocessable

if TYPE_CHECKING:
    from prometheus_client.core import Metric

PROMETHEUS_VERSION = "2.53.0"
_DURATION = re.compile(r"^((\d+)y)?((\d+)w)?((\d+)d)?((\d+)h)?((\d+)m)?((\d+)s)?((\d+)ms)?$")
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
#: Series whose newest sample is older than this are left out of /metrics (Prometheus's lookback).
EXPOSE_FRESH = 300.0
#: Prometheus's ``errorType`` for each HTTP status a refusal carries.
_ERROR_TYPES = {400: "bad_data", 404: "not_found", 422: "execution", 500: "internal", 503: "unavailable"}
#: A refusal's ``errorType`` by reason when the status alone is ambiguous (503: busy or timed out).
_TIMEOUT_TYPE = "timeout"
#: The rule evaluator's part of the API: never answered by the catch-all, whoever serves it.
RULE_PATHS = ("rules", "alerts")
METHODS = ["GET", "POST"]
T = TypeVar("T")


def render_error(exc: ApiError) -> Response:
    """The ``prometheus`` listener's error map: Prometheus's envelope with the refusal's status."""
    kind = _ERROR_TYPES.get(exc.status, "bad_data")
    if exc.status == 503 and "timed out" in exc.reason:
        kind = _TIMEOUT_TYPE
    return JSONResponse({"status": "error", "errorType": kind, "error": exc.reason}, status_code=exc.status)


def parse_time(text: str | None, default: float | None, what: str) -> float:
    if text is None or text == "":
        if default is None:
            raise BadRequest(f'invalid parameter "{what}": missing')
        return default
    try:
        value = float(text)
    except ValueError:
        try:
            value = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise BadRequest(f'invalid parameter "{what}": cannot parse "{text}" to a valid timestamp') from None
    if not math.isfinite(value):
        raise BadRequest(f'invalid parameter "{what}": cannot parse "{text}" to a valid timestamp')
    return value


def parse_step(text: str | None) -> float:
    if not text:
        raise BadRequest('invalid parameter "step": missing')
    try:
        value = float(text)
    except ValueError:
        m = _DURATION.match(text)
        if not m or not any(m.groups()):
            raise BadRequest(f'invalid parameter "step": cannot parse "{text}" to a valid duration') from None
        value = sum(int(m.group(i * 2 + 2) or 0) * unit for i, unit in enumerate(_UNITS))
    if not math.isfinite(value) or value <= 0:
        raise BadRequest(
            'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
            "Try a positive integer"
        )
    return value


def _ok(data: Any) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def _success_body(data: Any) -> bytes:
    """The success envelope as JSON bytes, encoded as JSONResponse does. Query answers are encoded
    on the query pool: a 1 h x 1 s answer is megabytes, and encoding it on the loop stalls it."""
    return json.dumps(
        {"status": "success", "data": data}, ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


def _matrix_body(columns: list[tuple[dict[str, str], list[float], list[float]]]) -> bytes:
    """:func:`_success_body` of a range query's matrix, byte for byte, built from its columns.

    json.dumps walks a list per point (72k points: half a second). Here the values of the whole
    answer are formatted in one call (:func:`format_values`: a value repeated anywhere in the
    answer is formatted once), and each point's text is two pieces of one flat list joined once:
    a prefix ``"],[<time>,"`` shared by every series on the same times list (the usual case: the
    query's steps) and the value's text. Times are written as json writes them (``repr``), values
    as :func:`format_value` (plain text: digits, sign, ``.``, ``e``, ``NaN``, ``Inf``; nothing to escape).
    """
    texts = format_values(list(itertools.chain.from_iterable(vs for _, _, vs in columns)))
    parts = ['{"status":"success","data":{"resultType":"matrix","result":[']
    prefixes: dict[int, tuple[list[float], list[str]]] = {}
    at = 0
    for k, (labels, ts, _) in enumerate(columns):
        metric = json.dumps(labels, ensure_ascii=False, separators=(",", ":"))
        head = f'{"," if k else ""}{{"metric":{metric},"values":['
        if not ts:
            parts.append(head + "]}")
            continue
        shared = prefixes.get(id(ts))
        if shared is None or shared[0] is not ts:
            stamps = list(map(repr, ts))
            shared = prefixes[id(ts)] = (ts, ["[" + stamps[0] + ',"', *['"],[' + t + ',"' for t in stamps[1:]]])
        n = len(ts)
        points: list[str] = [""] * (2 * n)
        points[0::2] = shared[1]
        points[1::2] = texts[at : at + n]
        at += n
        parts.append(head)
        parts += points
        parts.append('"]]}')
    parts.append("]}}")
    return "".join(parts).encode()


def _json_bytes(body: bytes) -> Response:
    return Response(body, media_type="application/json")


async def _on_query_pool(core: MetricsCore, work: Callable[[float], T]) -> T:
    """Run ``work(deadline)`` on the metrics query pool; a refused query becomes the listener's refusal.

    Prometheus calls a query whose series do not match up an ``execution`` error (422), a timeout
    ``timeout`` (503) and a full pool ``unavailable`` (503); every other refusal is ``bad_data`` (400).
    """
    try:
        return await core.queries.run(work)
    except QueryBusy as exc:
        raise Busy(str(exc)) from None
    except QueryError as exc:
        text = str(exc)
        if "many-to-many" in text or "multiple matches" in text:
            raise Unprocessable(text) from None
        if "timed out" in text:
            raise Unavailable(text) from None
        raise BadRequest(text) from None


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


def _query_text(params: dict[str, list[str]]) -> str:
    expr = _one(params, "query")
    if not expr:
        raise BadRequest('invalid parameter "query": missing')
    return expr


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

    def __init__(self, core: MetricsCore, states: Callable[[], Mapping[str, str]]) -> None:
        self.core = core
        self.states = states

    def collect(self) -> Any:
        from prometheus_client.core import Metric

        store = self.core.store
        up = Metric("devbox_up", "1 while the devbox platform serves.", "gauge")
        up.add_sample("devbox_up", {"version": devbox.__version__}, 1.0)
        yield up
        components = Metric("devbox_component_up", "1 when a platform component is running, 0 otherwise.", "gauge")
        for name, state in self.states().items():
            components.add_sample(
                "devbox_component_up", {"component": name, "state": state}, 1.0 if state == "running" else 0.0
            )
        yield components
        series = Metric("devbox_metrics_series", "Series held by the devbox metrics store.", "gauge")
        series.add_sample("devbox_metrics_series", {}, float(store.series_count()))
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


class PrometheusApi:
    """The handlers of the Prometheus API: the metrics core (resolved per request: it exists only
    once the component started) and the platform's read-only component states."""

    def __init__(self, get_core: Callable[[], MetricsCore], states: Callable[[], Mapping[str, str]]) -> None:
        self.get_core = get_core
        self.states = states

    async def query(self, request: Request) -> Response:
        params = await _params(request)
        expr = _query_text(params)
        at = parse_time(_one(params, "time"), time.time(), "time")
        core = self.get_core()

        def work(deadline: float) -> bytes:  # on the query pool: the first query also makes the evaluator
            kind, result = core.evaluator.instant(expr, at, deadline=deadline)
            if kind == "vector":
                data: Any = _vector_json(result, at)
            elif kind == "matrix":
                data = _matrix_json(result)
            elif kind == "scalar":
                data = [at, format_value(result)]
            else:
                data = [at, result]
            return _success_body({"resultType": kind, "result": data})

        return _json_bytes(await _on_query_pool(core, work))

    async def query_range(self, request: Request) -> Response:
        params = await _params(request)
        expr = _query_text(params)
        start = parse_time(_one(params, "start"), None, "start")
        end = parse_time(_one(params, "end"), None, "end")
        step = parse_step(_one(params, "step"))
        if end < start:
            raise BadRequest('invalid parameter "end": end timestamp must not be before start time')
        if (end - start) / step > 11000:
            raise BadRequest(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        core = self.get_core()

        def work(deadline: float) -> bytes:
            _, columns = core.evaluator.range_columns(expr, start, end, step, deadline=deadline)
            return _matrix_body(columns)

        return _json_bytes(await _on_query_pool(core, work))

    async def series(self, request: Request) -> Response:
        params = await _params(request)
        matches = params.get("match[]") or []
        if not matches:
            raise BadRequest("no match[] parameter provided")
        start, end = _bounds(params)
        core = self.get_core()
        found = await _on_query_pool(core, lambda _: core.series_matching(matches, start, end))
        return _ok(sorted(found, key=lambda lb: sorted(lb.items())))

    async def labels(self, request: Request) -> Response:
        params = await _params(request)
        start, end = _bounds(params)
        core, matches = self.get_core(), params.get("match[]") or []
        return _ok(await _on_query_pool(core, lambda _: core.label_names(matches, start, end)))

    async def label_values(self, name: str, request: Request) -> Response:
        params = await _params(request)
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise BadRequest(f'invalid label name: "{name}"')
        start, end = _bounds(params)
        core, matches = self.get_core(), params.get("match[]") or []
        return _ok(await _on_query_pool(core, lambda _: core.label_values(name, matches, start, end)))

    async def metadata(self, request: Request) -> Response:
        params = await _params(request)
        wanted = _one(params, "metric")
        limit_text = _one(params, "limit")
        try:
            limit = int(limit_text) if limit_text else -1
        except ValueError:
            raise BadRequest(f'invalid parameter "limit": "{limit_text}" is not an integer') from None
        out: dict[str, list[dict[str, str]]] = {}
        for info in sorted(self.get_core().store.meta.values(), key=lambda i: i.name):
            if wanted and info.name != wanted:
                continue
            if 0 <= limit <= len(out):
                break
            out[info.name] = [{"type": info.type, "help": info.help, "unit": info.unit}]
        return _ok(out)

    async def exposition(self) -> Response:
        # prometheus-client (and the http.server and wsgiref it imports) with the first scrape
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_StoreCollector(self.get_core(), self.states))
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)


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


async def exemplars(request: Request) -> Response:
    """devbox keeps no exemplars; answering empty keeps Grafana's exemplar toggle quiet."""
    _query_text(await _params(request))
    return _ok([])


async def no_rules() -> Response:
    """No rule evaluator is hosted: no rule groups, like a Prometheus without rule files."""
    return _ok({"groups": []})


async def no_alerts() -> Response:
    return _ok({"alerts": []})


async def unknown(rest: str) -> Response:
    raise NotFound(f"devbox does not serve /api/v1/{rest}")


class _NotRulePath(Convertor[str]):
    """A catch-all path that leaves the rule evaluator's paths to whoever serves them on this listener
    (routers are tried in the order components are hosted, so a plain catch-all would shadow them)."""

    regex = r"(?!(?:" + "|".join(RULE_PATHS) + r")$).*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("not_rule_path", _NotRulePath())


def prometheus_router(
    get_core: Callable[[], MetricsCore], states: Callable[[], Mapping[str, str]], *, serve_rules: bool
) -> APIRouter:
    """The Prometheus API; ``serve_rules``: answer ``/rules`` and ``/alerts`` empty (no rule evaluator)."""
    api = PrometheusApi(get_core, states)
    router = APIRouter()
    router.add_api_route("/api/v1/query", api.query, methods=METHODS)
    router.add_api_route("/api/v1/query_range", api.query_range, methods=METHODS)
    router.add_api_route("/api/v1/series", api.series, methods=METHODS)
    router.add_api_route("/api/v1/labels", api.labels, methods=METHODS)
    router.add_api_route("/api/v1/label/{name}/values", api.label_values, methods=["GET"])
    router.add_api_route("/api/v1/metadata", api.metadata, methods=["GET"])
    router.add_api_route("/api/v1/status/buildinfo", buildinfo, methods=["GET"])
    router.add_api_route("/api/v1/query_exemplars", exemplars, methods=METHODS)
    if serve_rules:
        router.add_api_route("/api/v1/rules", no_rules, methods=["GET"])
        router.add_api_route("/api/v1/alerts", no_alerts, methods=["GET"])
    router.add_api_route("/metrics", api.exposition, methods=["GET"])
    router.add_api_route("/api/v1/{rest:not_rule_path}", unknown, methods=METHODS)
    return router


__all__ = ["ReportError", "format_value", "parse_step", "parse_time", "prometheus_router", "render_error"]
