"""OTLP metrics ingest: ``POST /v1/metrics`` (protobuf or JSON) and gRPC ``MetricsService/Export``.

Sums (cumulative or delta), gauges, histograms and summaries become series named as Prometheus's
own OTLP receiver names them (``otlptranslator``, strategy ``UnderscoreEscapingWithSuffixes``, the
default), so dashboards and rules copied from a real Prometheus fed by OTLP match here:

- the name is split on every character outside ``[a-zA-Z0-9:]`` and re-joined with ``_``;
- the unit becomes a suffix unless already a name token: ``ms`` -> ``milliseconds``, ``s`` ->
  ``seconds``, ``By`` -> ``bytes``, ``By/s`` -> ``bytes_per_second``; ``{requests}`` and ``1`` add
  nothing, except that a *gauge* with unit ``1`` ends in ``_ratio``;
- monotonic sums end in ``_total``; histograms then add ``_bucket{le}``/``_sum``/``_count`` (a
  histogram ``x`` in ``ms`` gives ``x_milliseconds_bucket``).

Resource attributes: ``service.name`` (with ``service.namespace`` as ``ns/name``) becomes ``job``,
``service.instance.id`` becomes ``instance``, and every other resource attribute goes on one
``target_info`` series (value 1, same ``job``/``instance``) as Prometheus does. devbox also keeps
its own ``service`` label (= ``service.name``; the 007 indicators and the shop's rules group by it)
and deploy tags ``devbox.<tag>`` as ``<tag>`` labels. Point attributes become labels (sanitised like
Prometheus: invalid characters and runs of ``_`` become one ``_``). A request with any malformed
point is refused whole (400) so nothing is stored half.

LIMITATIONS: exponential histograms are refused (reported as rejected points), exemplars are
dropped, metric scope is ignored (Prometheus's default too: ``promote_scope_metadata`` is off).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.metrics.core import Labels, MetricsCore, ReportError, labels_of
from devbox.mocks.metrics.store import MetricInfo, Point
from fastapi import APIRouter, Request, Response

from devbox.platform.encoding import inflate
from devbox.platform.errors import ApiError, BadRequest, UnsupportedMediaType

METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"

if TYPE_CHECKING:  # protobuf (~3 MB with its C++ runtime) loads with the first export
    import grpc.aio
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

LOG = logging.getLogger(__name__)

_TOKEN_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
_INVALID_LABEL = re.compile(r"[^a-zA-Z0-9_]")
_UNDERSCORES = re.compile(r"__+")
DELTA = 1

# Prometheus's otlptranslator unitMap / perUnitMap (UCUM "c/s" units -> Prometheus base-unit words).
_UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds", "us": "microseconds",
    "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes", "MiBy": "mebibytes", "GiBy": "gibibytes",
    "TiBy": "tibibytes", "KBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes",
    "m": "meters", "V": "volts", "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius",
    "Hz": "hertz", "1": "", "%": "percent",
}  # fmt: skip
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}

GAUGE, COUNTER, UPDOWN, HISTOGRAM, SUMMARY = "gauge", "counter", "updown", "histogram", "summary"


def _clean_unit(unit: str) -> str:
    return _UNDERSCORES.sub("_", re.sub(r"[^a-zA-Z0-9:]", "_", unit)).removeprefix("_")


def _unit_suffixes(unit: str) -> tuple[str, str]:
    """(main, per) suffix words of a UCUM unit: ``By/s`` -> (``bytes``, ``per_second``); ``{req}`` -> ("", "")."""
    main_raw, _, per_raw = unit.partition("/")
    main_raw, per_raw = main_raw.strip(), per_raw.strip()
    main = _UNITS.get(main_raw, main_raw) if main_raw and not set("{}") & set(main_raw) else ""
    per = _PER_UNITS.get(per_raw, per_raw) if per_raw and not set("{}") & set(per_raw) else ""
    return _clean_unit(main), _clean_unit("per_" + per) if per else ""


@functools.lru_cache(maxsize=4096)
def metric_name(raw: str, unit: str = "", kind: str = GAUGE) -> str:
    """The Prometheus name of an OTLP metric (otlptranslator's normalizeName, with suffixes)."""
    tokens = [t for t in _TOKEN_SPLIT.split(raw) if t]
    main, per = _unit_suffixes(unit)
    if main in tokens:
        main = ""
    per = "" if per == "per_" else per.removesuffix("_")
    if per in tokens:
        per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [t for t in (main, per) if t]
    if kind == COUNTER:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    if unit == "1" and kind == GAUGE:
        tokens = [t for t in tokens if t != "ratio"] + ["ratio"]
    name = "_".join(tokens)
    if name and name[0].isdigit():
        name = "_" + name
    return name if name.strip("_") else ""


@functools.lru_cache(maxsize=4096)
def label_name(raw: str) -> str:
    name = _UNDERSCORES.sub("_", _INVALID_LABEL.sub("_", raw))
    if name and name[0].isdigit():
        name = "key_" + name
    return name if name.strip("_") else ""


def _any_value(value: Any) -> str:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind is None:
        return ""
    if kind == "array_value":
        return json.dumps([_any_value(v) for v in value.array_value.values])
    if kind == "kvlist_value":
        return json.dumps({kv.key: _any_value(kv.value) for kv in value.kvlist_value.values})
    if kind == "bytes_value":
        return str(value.bytes_value.hex())
    got = getattr(value, kind)
    if isinstance(got, bool):
        return "true" if got else "false"
    return str(got)


def resource_labels(res: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(labels every series of the resource carries, labels of its ``target_info``; empty: none)."""
    base: dict[str, str] = {}
    name, namespace = res.get("service.name", ""), res.get("service.namespace", "")
    if name:
        base["service"] = name  # devbox's own label: indicators, alert rules and the shop group by it
        base["job"] = f"{namespace}/{name}" if namespace else name
    if res.get("service.instance.id"):
        base["instance"] = res["service.instance.id"]
    for key, value in res.items():  # deploy tags (devbox.env=feature-x): compare environments
        if key.startswith("devbox.") and value:
            label = label_name(key[len("devbox.") :])
            if label and label not in ("service", "instance", "job"):
                base[label] = value
    info = {
        label_name(key): value
        for key, value in res.items()
        if key not in ("service.name", "service.namespace", "service.instance.id") and label_name(key)
    }
    if not info:
        return base, {}
    for key in ("job", "instance"):
        if key in base:
            info[key] = base[key]
    return base, info


def convert(
    request: metrics_service_pb2.ExportMetricsServiceRequest, now: float | None = None
) -> tuple[list[Point], list[Point], list[MetricInfo], int, str]:
    """(absolute points, delta points, metadata, rejected count, rejection message); ReportError if malformed.

    Points without a timestamp get ``now`` (0.0 when None). Each distinct attribute list of a data
    point is turned into sorted labels once (:class:`_LabelSets`), not once per point.
    """
    points: list[Point] = []
    deltas: list[Point] = []
    meta: dict[str, MetricInfo] = {}
    rejected = 0
    message = ""
    missing_ts = 0.0 if now is None else now
    for rm in request.resource_metrics:
        base, info = resource_labels({kv.key: _any_value(kv.value) for kv in rm.resource.attributes})
        label_sets = _LabelSets(base)
        latest = 0.0
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                where = f"metric {m.name}"
                if kind == "gauge":
                    name = _named(m, GAUGE)
                    meta[name] = MetricInfo(name, "gauge", m.description, m.unit)
                    _number_points(name, label_sets, m.gauge.data_points, where, missing_ts, points)
                elif kind == "sum":
                    monotonic = m.sum.is_monotonic
                    name = _named(m, COUNTER if monotonic else UPDOWN)
                    meta[name] = MetricInfo(name, "counter" if monotonic else "gauge", m.description, m.unit)
                    target = deltas if m.sum.aggregation_temporality == DELTA else points
                    _number_points(name, label_sets, m.sum.data_points, where, missing_ts, target)
                elif kind == "histogram":
                    name = _named(m, HISTOGRAM)
                    meta[name] = MetricInfo(name, "histogram", m.description, m.unit)
                    target = deltas if m.histogram.aggregation_temporality == DELTA else points
                    for dp in m.histogram.data_points:
                        target.extend(_histogram_points(name, label_sets, dp, where, missing_ts))
                elif kind == "summary":
                    name = _named(m, SUMMARY)
                    meta[name] = MetricInfo(name, "summary", m.description, m.unit)
                    for dp in m.summary.data_points:
                        points.extend(_summary_points(name, label_sets, dp, where, missing_ts))
                elif kind == "exponential_histogram":
                    rejected += len(m.exponential_histogram.data_points)
                    message = f"exponential histograms are not supported ({m.name}); use explicit buckets"
                    continue
                else:
                    raise ReportError(f"{where}: no data (gauge, sum, histogram or summary)")
                latest = max([latest, *(p.ts for p in points[-1:]), *(p.ts for p in deltas[-1:])])
        if info:  # Prometheus stamps target_info with the resource's latest sample time
            meta["target_info"] = MetricInfo("target_info", "gauge", "Target metadata", "")
            points.append(Point("target_info", labels_of(info), latest, 1.0))
    return points, deltas, list(meta.values()), rejected, message


class _LabelSets:
    """Sorted label tuples of one resource's data points, by their raw attribute list.

    A batch repeats a few attribute lists over many points (every metric of a service, every
    export): building, merging and sorting a dict per point was most of the conversion's time.
    Equal label sets are also the same tuple, so the store's series index hashes fewer objects.
    """

    __slots__ = ("_base", "_known")

    def __init__(self, base: dict[str, str]) -> None:
        self._base = base
        self._known: dict[tuple[tuple[str, str], ...], Labels] = {}

    def of(self, attributes: Any, extra: tuple[tuple[str, str], ...] = ()) -> Labels:
        pairs = []
        for kv in attributes:  # a loop, not a generator: this runs once per data point
            value = kv.value
            # a non-empty string_value is the value; else _any_value tells "" from the other kinds
            pairs.append((kv.key, value.string_value or _any_value(value)))
        raw = tuple(pairs)
        key = raw + extra if extra else raw
        labels = self._known.get(key)
        if labels is None:
            merged = dict(self._base)
            for raw_name, value in raw:
                name = label_name(raw_name)
                if name:
                    merged[name] = value
            merged.update(extra)
            labels = labels_of(merged)
            if len(self._known) < _LABEL_SETS_PER_RESOURCE:
                self._known[key] = labels
        return labels


_LABEL_SETS_PER_RESOURCE = 65_536
_new_point = tuple.__new__  # Point(...) without NamedTuple's Python-level __new__ (one per sample)


def _number_points(
    name: str, label_sets: _LabelSets, data_points: Any, where: str, missing_ts: float, out: list[Point]
) -> None:
    append = out.append
    labels_of_dp = label_sets.of
    for dp in data_points:
        # as_double is 0.0 when as_int is set: a non-zero as_double is the value (one look-up)
        value = dp.as_double or (float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double)
        if value - value != 0.0:  # NaN or an infinity (x - x is NaN for both)
            raise ReportError(f"{where}: value {value} is not a finite number (NaN and Inf are refused)")
        nanos = dp.time_unix_nano
        append(_new_point(Point, (name, labels_of_dp(dp.attributes), nanos / 1e9 if nanos else missing_ts, value)))


def _named(m: Any, kind: str) -> str:
    name = metric_name(m.name, m.unit, kind)
    if not name:
        raise ReportError(f"metric {m.name!r} has an empty name once made a Prometheus name")
    return name


def _ts(dp: Any, missing: float = 0.0) -> float:
    return dp.time_unix_nano / 1e9 if dp.time_unix_nano else missing


def _finite(value: float, where: str) -> float:
    if not math.isfinite(value):
        raise ReportError(f"{where}: value {value} is not a finite number (NaN and Inf are refused)")
    return value


def _histogram_points(name: str, label_sets: _LabelSets, dp: Any, where: str, missing_ts: float) -> list[Point]:
    bounds = list(dp.explicit_bounds)
    counts = list(dp.bucket_counts)
    if counts and len(counts) != len(bounds) + 1:
        raise ReportError(f"{where}: {len(counts)} bucket counts for {len(bounds)} bounds (need bounds + 1)")
    if bounds != sorted(bounds) or not all(math.isfinite(b) for b in bounds):
        raise ReportError(f"{where}: explicit_bounds must be finite and increasing")
    ts = _ts(dp, missing_ts)
    out = []
    running = 0
    attributes = dp.attributes
    for bound, count in zip([*bounds, math.inf], counts or [0] * (len(bounds) + 1), strict=True):
        running += count
        le = "+Inf" if math.isinf(bound) else repr(float(bound))
        out.append(Point(f"{name}_bucket", label_sets.of(attributes, (("le", le),)), ts, float(running)))
    labels = label_sets.of(attributes)
    out.append(Point(f"{name}_sum", labels, ts, _finite(dp.sum, where)))
    out.append(Point(f"{name}_count", labels, ts, float(dp.count)))
    return out


def _summary_points(name: str, label_sets: _LabelSets, dp: Any, where: str, missing_ts: float) -> list[Point]:
    ts = _ts(dp, missing_ts)
    attributes = dp.attributes
    out = [
        Point(name, label_sets.of(attributes, (("quantile", repr(q.quantile)),)), ts, _finite(q.value, where))
        for q in dp.quantile_values
    ]
    labels = label_sets.of(attributes)
    out.append(Point(f"{name}_sum", labels, ts, _finite(dp.sum, where)))
    out.append(Point(f"{name}_count", labels, ts, float(dp.count)))
    return out


def _convert_and_store(core: MetricsCore, request: metrics_service_pb2.ExportMetricsServiceRequest) -> tuple[int, str]:
    """Off the event loop: decoding and storing a large batch takes milliseconds."""
    points, deltas, meta, rejected, message = convert(request, time.time())
    core.ingest_points(points, meta, deltas=deltas)
    return rejected, message


async def export(
    core: MetricsCore, request: metrics_service_pb2.ExportMetricsServiceRequest
) -> metrics_service_pb2.ExportMetricsServiceResponse:
    """Validate, convert and store one export request; ReportError when it is refused."""
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    rejected, message = await asyncio.to_thread(_convert_and_store, core, request)
    response = metrics_service_pb2.ExportMetricsServiceResponse()
    if rejected:
        response.partial_success.rejected_data_points = rejected
        response.partial_success.error_message = message
    return response


def _strip_exemplars(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_exemplars(v) for k, v in node.items() if k != "exemplars"}
    if isinstance(node, list):
        return [_strip_exemplars(v) for v in node]
    return node


def otlp_http_router(get_core: Callable[[], MetricsCore], *, max_body_bytes: int) -> APIRouter:
    """``POST /v1/metrics``: OTLP/HTTP in protobuf or JSON. Refusals are ApiErrors carrying the
    request's encoding: the ``otlp_http`` listener answers them as a ``google.rpc.Status`` in it."""
    router = APIRouter()

    @router.post("/v1/metrics", tags=["otlp"])
    async def v1_metrics(request: Request) -> Response:
        ctype = request.headers.get("content-type", "application/x-protobuf").split(";")[0].strip().lower()
        if ctype not in ("application/json", "application/x-protobuf", "application/protobuf"):
            raise UnsupportedMediaType(
                f"unsupported Content-Type {ctype!r}; send application/x-protobuf or application/json"
            )
        as_json = ctype == "application/json"
        try:
            try:
                body = inflate(await request.body(), request.headers.get("content-encoding", ""), max_body_bytes)
            except ValueError as exc:
                raise BadRequest(f"body could not be decompressed: {exc}") from None
            response = await _refused_or_exported(get_core(), parse_request(body, as_json=as_json))
        except ApiError as exc:  # answered by the listener's renderer, in the request's encoding
            exc.detail.setdefault("encoding", "application/json" if as_json else "application/x-protobuf")
            raise
        if as_json:
            from google.protobuf import json_format

            return Response(json_format.MessageToJson(response), media_type="application/json")
        return Response(response.SerializeToString(), media_type="application/x-protobuf")

    return router


async def _refused_or_exported(core: MetricsCore, message: Any) -> Any:
    """:func:`export`, a report it refuses as BadRequest (both transports answer it so)."""
    try:
        return await export(core, message)
    except (ReportError, ValueError) as exc:
        raise BadRequest(str(exc)) from None


def parse_request(body: bytes, *, as_json: bool = False) -> Any:
    """An ``ExportMetricsServiceRequest`` from its protobuf or JSON bytes; BadRequest saying why not."""
    from google.protobuf import json_format
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2

    message = metrics_service_pb2.ExportMetricsServiceRequest()
    try:
        if as_json:
            json_format.ParseDict(_strip_exemplars(json.loads(body or b"{}")), message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        kind = "JSON" if as_json else "protobuf"
        raise BadRequest(f"malformed OTLP {kind} ExportMetricsServiceRequest: {exc}") from None
    return message


class _MetricsService:
    """``opentelemetry.proto.collector.metrics.v1.MetricsService`` with a bytes-in handler (no request
    deserializer): grpc answers a body it cannot parse with UNKNOWN; here it is INVALID_ARGUMENT."""

    def __init__(self, get_core: Callable[[], MetricsCore]) -> None:
        self.get_core = get_core

    async def Export(self, request: bytes, context: Any) -> bytes:
        # BadRequest: the listener's edge aborts with INVALID_ARGUMENT
        response = await _refused_or_exported(self.get_core(), parse_request(request))
        return bytes(response.SerializeToString())


def register_grpc(server: grpc.aio.Server, get_core: Callable[[], MetricsCore]) -> None:
    import grpc

    service = _MetricsService(get_core)
    handler = grpc.method_handlers_generic_handler(METRICS_SERVICE, {
        "Export": grpc.unary_unary_rpc_method_handler(service.Export),
    })
    server.add_generic_rpc_handlers((handler,))
