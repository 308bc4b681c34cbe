"""The metrics core: turns every kind of report into stored points, and answers queries.

Ingest paths, all ending in :meth:`MetricsStore.write` (one transaction per request, so a
rejected request stores nothing):

- RPC reports derived from spans (007's caller/callee interceptor reports): SERVER spans are
  callee reports, CLIENT spans caller reports, counted into ``rpc_{server,client}_requests_total``
  {caller, callee, method, code, status} and ``rpc_{server,client}_duration_seconds`` histograms.
  The trace collector's indexer process derives the increments from the spans it decodes
  (:mod:`devbox.mocks.tracing.rpcstats`) and ``events.rpc_aggregates`` brings them here
  (:meth:`RpcReports.add`): no span object crosses into this process;
- OTLP metrics (:mod:`devbox.mocks.metrics.otlp` decodes, :meth:`ingest_points` stores);
- custom multi-dimensional reports with a policy per value (:meth:`custom_reports`);
- Prometheus scrapes (:mod:`devbox.mocks.metrics.scrape`).

LIMITATIONS: the caller of a SERVER span is found from its parent CLIENT span when that arrives
within ~2 s (else ``remote_service``, else ``unknown``; the indexer holds the span meanwhile);
derived RPC counters live in memory for up to a second before they are written (the spans
themselves are already stored by tracing).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from devbox.mocks.metrics.config import MetricsConfig
from devbox.mocks.metrics.indicators import Indicator, selector_names
from devbox.mocks.metrics.promql import NAME, QUERY_TIMEOUT, LabelMatcher, QueryError, Vector, parse
from devbox.mocks.metrics.store import MetricInfo, MetricsStore, Point

if TYPE_CHECKING:
    from devbox.mocks.metrics.promql import Evaluator

LOG = logging.getLogger(__name__)
T = TypeVar("T")

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
POLICIES = ("SUM", "AVG", "MAX", "MIN", "SET", "LAST", "COUNT")
#: 2100-01-01: later timestamps are refused as typos (or nanoseconds).
MAX_TIMESTAMP = 4_102_444_800


class ReportError(ValueError):
    """A report that cannot be stored; ``str()`` says why (becomes a 4xx reason)."""


Labels = tuple[tuple[str, str], ...]


def labels_of(mapping: dict[str, str]) -> Labels:
    return tuple(sorted(mapping.items()))


def check_label_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not LABEL_NAME.match(name) or name.startswith("__"):
        raise ReportError(
            f"{where}: {name!r} is not a valid label name (letters, digits, _; not starting with a digit or __)"
        )


def check_metric_name(name: str, where: str) -> None:
    if not isinstance(name, str) or not METRIC_NAME.match(name):
        raise ReportError(f"{where}: {name!r} is not a valid metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")


def check_value(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ReportError(f"{where}: value must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ReportError(f"{where}: value {value} is too large for a float") from None
    if not math.isfinite(number):
        raise ReportError(f"{where}: value {value} is not a finite number (NaN and Inf are refused)")
    return number


@dataclass
class _Histogram:
    buckets: list[float]
    counts: list[int] = field(default_factory=list)
    total_us: int = 0  # whole µs: sums are exact whatever the order increments arrive in
    count: int = 0

    @property
    def total(self) -> float:
        return self.total_us / 1e6


class RpcReports:
    """Caller/callee counters and latency histograms derived from spans, kept cumulative in memory
    (the increments come from the trace indexer: :meth:`add`)."""

    def __init__(self, buckets: list[float]) -> None:
        self.buckets = list(buckets)
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[tuple[str, Labels], _Histogram] = {}
        #: series created since the last write: they get a 0 sample one second earlier, so that
        #: rate()/increase() count their first calls (a series' first sample has no predecessor)
        self._new: set[tuple[str, Labels]] = set()
        self._changed: set[tuple[str, Labels]] = set()
        self._dirty = False

    def add(self, aggregates: dict[tuple[str, Labels], list[Any]]) -> None:
        """Add the increments of ``events.rpc_aggregates`` (format: :data:`devbox.mocks.tracing.rpcstats.Aggregates`,
        latency buckets bounded by :attr:`buckets`)."""
        with self._lock:
            for (side, base), (outcomes, bucket_counts, calls, sum_us) in aggregates.items():
                for (code, status), n in outcomes.items():
                    key = (f"rpc_{side}_requests_total", labels_of({**dict(base), "code": code, "status": status}))
                    if key not in self.requests:
                        self._new.add(key)
                    self.requests[key] = self.requests.get(key, 0.0) + n
                    self._changed.add(key)
                hkey = (f"rpc_{side}_duration_seconds", tuple(base))
                hist = self.histograms.get(hkey)
                if hist is None:
                    hist = self.histograms[hkey] = _Histogram(self.buckets)
                    self._new.add(hkey)
                self._changed.add(hkey)
                if not hist.counts:
                    hist.counts = [0] * len(self.buckets)
                for i, n in enumerate(bucket_counts):
                    hist.counts[i] += n
                hist.count += calls
                hist.total_us += sum_us
            if aggregates:
                self._dirty = True

    def dirty(self) -> bool:
        return self._dirty

    def has_series(self) -> bool:
        return bool(self.requests or self.histograms)

    def points(self, ts: float, *, everything: bool = True) -> list[Point]:
        """The cumulative series at ``ts``: all of them, or only those counted since the last call."""
        with self._lock:
            self._dirty = False
            changed, self._changed = self._changed, set()
            requests = (
                self.requests.items() if everything else ((k, self.requests[k]) for k in changed if k in self.requests)
            )
            histograms = (
                self.histograms.items()
                if everything
                else ((k, self.histograms[k]) for k in changed if k in self.histograms)
            )
            out = [Point(name, labels, ts, value) for (name, labels), value in requests]
            out.extend(Point(name, labels, ts - 1, 0.0) for name, labels in self._new if name in self.requests_names)
            for (name, labels), hist in histograms:
                if (name, labels) in self._new:
                    out.extend(
                        Point(f"{name}_bucket", labels_of({**dict(labels), "le": le}), ts - 1, 0.0)
                        for le in [*map(_fmt_le, hist.buckets), "+Inf"]
                    )
                    out.append(Point(f"{name}_sum", labels, ts - 1, 0.0))
                    out.append(Point(f"{name}_count", labels, ts - 1, 0.0))
                running = 0
                counts = hist.counts or [0] * len(hist.buckets)
                for bound, count in zip(hist.buckets, counts, strict=True):
                    running += count
                    out.append(Point(f"{name}_bucket", labels_of({**dict(labels), "le": _fmt_le(bound)}), ts, running))
                out.append(Point(f"{name}_bucket", labels_of({**dict(labels), "le": "+Inf"}), ts, hist.count))
                out.append(Point(f"{name}_sum", labels, ts, hist.total))
                out.append(Point(f"{name}_count", labels, ts, hist.count))
            self._new.clear()
            return out

    requests_names = frozenset({"rpc_server_requests_total", "rpc_client_requests_total"})


RPC_METADATA = [
    MetricInfo(f"rpc_{side}_{suffix}", kind, help_)
    for side in ("server", "client")
    for suffix, kind, help_ in (
        (
            "requests_total",
            "counter",
            f"RPC calls seen on the {side} side, from spans (007 {'callee' if side == 'server' else 'caller'} report).",
        ),
        ("duration_seconds", "histogram", f"RPC latency on the {side} side in seconds, from spans."),
    )
]


def _fmt_le(bound: float) -> str:
    return repr(float(bound))


# --- custom reports ---------------------------------------------------------------------------


@dataclass
class _Bucket:
    ts: int
    total: float = 0.0
    count: int = 0
    low: float = math.inf
    high: float = -math.inf
    last: float = 0.0


class QueryBusy(QueryError):
    """Every query slot is taken: try again later (a 503 with Retry-After, not a 400)."""


class QueryRunner:
    """Owns the query pool: every PromQL evaluation runs on it, with a deadline from submission.

    Not the event loop (a slow query would stall every listener) and not the loop's default
    executor, which ingest's ``to_thread`` calls share (7 slow queries there starved span export for
    a minute). At most ``workers`` queries run and ``waiting`` more queue; past that a query is
    refused at once as busy rather than queued without bound.
    """

    def __init__(self, *, workers: int = 2, waiting: int = 16, timeout: float = QUERY_TIMEOUT) -> None:
        self.timeout = timeout
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="metrics-query")
        self._slots = threading.BoundedSemaphore(workers + waiting)

    def submit(self, work: Callable[[float], T]) -> concurrent.futures.Future[T]:
        """Queue ``work(deadline)`` (``deadline`` on :func:`time.monotonic`'s clock) on the pool."""
        if not self._slots.acquire(blocking=False):
            raise QueryBusy("too many queries are running or waiting; try again shortly")
        deadline = time.monotonic() + self.timeout
        try:
            future = self._pool.submit(work, deadline)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return future

    async def run(self, work: Callable[[float], T]) -> T:
        """Evaluate on the pool and await the answer without blocking the loop or its executor."""
        future = self.submit(work)
        try:
            # the evaluator checks the deadline itself; this bounds a wait on anything else (SQLite)
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout + 5.0)
        except TimeoutError:
            raise QueryError("query timed out") from None

    def call(self, work: Callable[[float], T]) -> T:
        """Evaluate on the pool from a worker thread (alerting's rule rounds, scenario checks)."""
        try:
            return self.submit(work).result(self.timeout + 5.0)
        except concurrent.futures.TimeoutError:
            raise QueryError("query timed out") from None

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class MetricsCore:
    """Owns the store and the evaluator; every ingest path and query goes through here."""

    def __init__(self, path: Path, config: MetricsConfig) -> None:
        self.config = config
        self.store = MetricsStore(path, max_series=config.max_series)
        self.indicators = {
            name: Indicator(
                name, ind.formula, by=list(ind.by), window=ind.window, help=ind.help, is_counter=self.is_counter
            )
            for name, ind in config.indicators.items()
        }
        self.queries = QueryRunner()
        self.rpc = RpcReports(config.rpc_buckets)
        self._lock = threading.Lock()
        self._cumulative: dict[tuple[str, Labels], float] = {}
        self._buckets: dict[tuple[str, Labels], _Bucket] = {}
        self.rejected = 0

    @functools.cached_property
    def evaluator(self) -> Evaluator:
        """The PromQL evaluator, made with the first query: an idle platform loads neither it nor its
        operators (see :mod:`devbox.mocks.metrics.promql`)."""
        from devbox.mocks.metrics.promql import Evaluator

        return Evaluator(self.store, computed=self.indicators)

    def close(self) -> None:
        self.queries.close()
        self.store.close()

    def is_counter(self, name: str) -> bool:
        for candidate in (name, name.rsplit("_", 1)[0] if name.endswith(("_sum", "_count", "_bucket")) else name):
            info = self.store.meta.get(candidate)
            if info is not None:
                return info.type in ("counter", "histogram", "summary") and (
                    info.type == "counter" or name != candidate
                )
        return name.endswith(("_total", "_count", "_sum", "_bucket"))

    # --- queries ----------------------------------------------------------------------------

    def query_instant(self, expr: str, at: float, deadline: float | None = None) -> list[tuple[dict[str, str], float]]:
        """An instant vector or scalar (run it through :attr:`queries`)."""
        kind, result = self.evaluator.instant(expr, at, deadline=deadline)
        if kind == "scalar":
            return [({}, float(result))]
        if kind == "vector":
            return [(labels, float(v)) for labels, v in result]
        raise QueryError(f"expression of type {kind} cannot be used here; an instant vector or scalar is needed")

    def query_range(
        self, expr: str, start: float, end: float, step: float, deadline: float | None = None
    ) -> list[tuple[dict[str, str], list[tuple[float, float]]]]:
        """A matrix (run it through :attr:`queries`)."""
        _, result = self.evaluator.range(expr, start, end, step, deadline=deadline)
        return [(labels, [(float(t), float(v)) for t, v in pts]) for labels, pts in result]

    # --- ingest: spans ----------------------------------------------------------------------

    def add_rpc(self, aggregates: dict[tuple[str, Labels], list[Any]]) -> None:
        self.rpc.add(aggregates)

    def rpc_dirty(self) -> bool:
        return self.rpc.dirty()

    def flush_derived(self, now: float | None = None, *, everything: bool = True) -> int:
        """Store the RPC counters: every series (``everything``), or only those that changed."""
        now = time.time() if now is None else now
        points = self.rpc.points(math.floor(now), everything=everything)
        if not points:
            return 0
        return self.store.write(points, RPC_METADATA)

    # --- ingest: decoded OTLP / scrapes -----------------------------------------------------

    def ingest_points(
        self,
        points: Sequence[Point],
        metadata: Iterable[MetricInfo] = (),
        *,
        deltas: Sequence[Point] = (),
    ) -> int:
        """Store absolute points plus delta points (added to the series' running total)."""
        with self._lock:
            updated: dict[tuple[str, Labels], float] = {}
            cumulated = []
            for p in sorted(deltas, key=lambda p: p.ts):
                key = (p.name, p.labels)
                base = updated.get(key)
                if base is None:
                    base = self._running(key) or 0.0
                updated[key] = base + p.value
                cumulated.append(Point(p.name, p.labels, p.ts, updated[key]))
            written = self.store.write([*points, *cumulated], metadata)
            self._cumulative.update(updated)
            return written

    def _running(self, key: tuple[str, Labels], missing: float | None = 0.0) -> float | None:
        value = self._cumulative.get(key)
        if value is None:
            value = self.store.last_value(*key)
        return missing if value is None else value

    # --- ingest: custom reports -------------------------------------------------------------

    def custom_reports(self, reports: Sequence[dict[str, Any]], *, now: float | None = None) -> int:
        """007 custom reports: ``{name, dimensions, values: [{name, value, policy}], timestamp?}``.

        SUM and COUNT become counters (``<name>_<value>_total``), AVG/MAX/MIN/SET gauges
        (``<name>_<value>``) holding that second's aggregate. Validates everything first; a bad
        report rejects the whole request.
        """
        now = time.time() if now is None else now
        parsed = [self._parse_report(r, i) for i, r in enumerate(reports)]
        with self._lock:
            state_c: dict[tuple[str, Labels], float] = {}
            state_b: dict[tuple[str, Labels], _Bucket] = {}
            points: dict[tuple[str, Labels, int], Point] = {}
            meta: dict[str, MetricInfo] = {}
            for name, dims, values, ts in parsed:
                second = math.floor(ts if ts is not None else now)
                labels = labels_of(dict(dims))
                dim_names = tuple(k for k, _ in dims)
                for vname, value, policy in values:
                    if policy in ("SUM", "COUNT"):
                        metric = f"{name}_{vname}_total"
                        key = (metric, labels)
                        base = state_c.get(key)
                        if base is None:
                            base = self._running(key, missing=None)
                            if base is None:  # a new series starts from 0 so rate() counts its first report
                                base = 0.0
                                points[(metric, labels, second - 1)] = Point(metric, labels, second - 1, 0.0)
                        state_c[key] = base + (value if policy == "SUM" else 1.0)
                        points[(metric, labels, second)] = Point(metric, labels, second, state_c[key])
                        meta[metric] = MetricInfo(
                            metric, "counter", f"custom report {name}.{vname} ({policy})", "", dim_names
                        )
                        continue
                    metric = f"{name}_{vname}"
                    key = (metric, labels)
                    bucket = state_b.get(key) or self._buckets.get(key)
                    if bucket is None or bucket.ts != second:
                        bucket = _Bucket(second)
                    else:
                        bucket = _Bucket(bucket.ts, bucket.total, bucket.count, bucket.low, bucket.high, bucket.last)
                    bucket.total += value
                    bucket.count += 1
                    bucket.low = min(bucket.low, value)
                    bucket.high = max(bucket.high, value)
                    bucket.last = value
                    state_b[key] = bucket
                    agg = {
                        "AVG": bucket.total / bucket.count,
                        "MAX": bucket.high,
                        "MIN": bucket.low,
                        "SET": bucket.last,
                        "LAST": bucket.last,
                    }[policy]
                    points[(metric, labels, second)] = Point(metric, labels, second, agg)
                    meta[metric] = MetricInfo(
                        metric, "gauge", f"custom report {name}.{vname} ({policy})", "", dim_names
                    )
            for metric, info in meta.items():
                old = self.store.meta.get(metric)
                if old is not None and old.type != info.type:
                    raise ReportError(
                        f"metric {metric} is already a {old.type}; a {info.type} report cannot reuse its name"
                    )
            written = self.store.write(list(points.values()), meta.values())
            self._cumulative.update(state_c)
            self._buckets.update(state_b)
            return written

    def _parse_report(
        self, report: Any, index: int
    ) -> tuple[str, list[tuple[str, str]], list[tuple[str, float, str]], float | None]:
        where = f"reports[{index}]"
        if not isinstance(report, dict):
            raise ReportError(f"{where}: a report is an object with name, dimensions and values")
        unknown = set(report) - {"name", "dimensions", "values", "timestamp"}
        if unknown:
            raise ReportError(
                f"{where}: unknown field(s) {sorted(unknown)} (allowed: name, dimensions, values, timestamp)"
            )
        name = report.get("name")
        check_metric_name(name, f"{where}.name")
        raw_dims = report.get("dimensions") or {}
        if isinstance(raw_dims, dict):
            dims = list(raw_dims.items())
        elif isinstance(raw_dims, list) and all(isinstance(d, (list, tuple)) and len(d) == 2 for d in raw_dims):
            dims = [(d[0], d[1]) for d in raw_dims]
        else:
            raise ReportError(f"{where}.dimensions: an object or a list of [name, value] pairs, in report order")
        seen = set()
        for dname, dvalue in dims:
            check_label_name(dname, f"{where}.dimensions")
            if dname in seen:
                raise ReportError(f"{where}.dimensions: {dname!r} is given twice")
            seen.add(dname)
            if not isinstance(dvalue, (str, int)) or isinstance(dvalue, bool):
                raise ReportError(f"{where}.dimensions.{dname}: the value must be a string")
        dims = [(k, str(v)) for k, v in dims]
        raw_values = report.get("values")
        if not isinstance(raw_values, list) or not raw_values:
            raise ReportError(f"{where}.values: a non-empty list of {{name, value, policy}}")
        values = []
        for j, item in enumerate(raw_values):
            vwhere = f"{where}.values[{j}]"
            if not isinstance(item, dict):
                raise ReportError(f"{vwhere}: an object {{name, value, policy}}")
            vname = item.get("name")
            if not isinstance(vname, str) or not LABEL_NAME.match(vname):
                raise ReportError(f"{vwhere}.name: {vname!r} is not a valid value name")
            policy = str(item.get("policy", "SUM")).upper()
            if policy not in POLICIES:
                raise ReportError(
                    f"{vwhere}.policy: unknown policy {item.get('policy')!r} (allowed: {', '.join(POLICIES)})"
                )
            value = check_value(item.get("value", 1 if policy == "COUNT" else None), f"{vwhere}.value")
            values.append((vname, value, policy))
        ts = report.get("timestamp")
        if ts is not None:
            ts = check_value(ts, f"{where}.timestamp")
            if ts > 1e12:  # milliseconds
                ts /= 1000.0
            if not 0 < ts < MAX_TIMESTAMP:
                raise ReportError(
                    f"{where}.timestamp: {report['timestamp']} is not a Unix time in seconds or milliseconds"
                )
        return name, dims, values, ts

    # --- metadata for the APIs --------------------------------------------------------------

    def metric_list(self) -> list[dict[str, Any]]:
        out = []
        names = self.store.names()
        families: dict[str, list[str]] = {}
        for name in names:
            fam = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in self.store.meta:
                    fam = name[: -len(suffix)]
            families.setdefault(fam, []).append(name)
        for fam, members in sorted(families.items()):
            info = self.store.meta.get(fam)
            series = [labels for m in members for _, labels in self.store.series_of([LabelMatcher(NAME, "=", m)])]
            dims = sorted({k for labels in series for k in labels if k not in (NAME, "le")})
            if info is not None and info.dimensions:
                dims = list(info.dimensions) + [d for d in dims if d not in info.dimensions]
            out.append(
                {
                    "name": fam,
                    "type": info.type if info else ("counter" if fam.endswith("_total") else "gauge"),
                    "help": info.help if info else "",
                    "series": len(series),
                    "dimensions": dims,
                    "kind": "base",
                }
            )
        for name, ind in sorted(self.indicators.items()):
            out.append(
                {
                    "name": name,
                    "type": "indicator",
                    "help": ind.help,
                    "formula": ind.formula,
                    "dimensions": ind.by,
                    "series": None,
                    "kind": "composite",
                }
            )
        return out

    def dimensions(self, metric: str) -> dict[str, list[str]]:
        """Each dimension of a metric (or of an indicator's base metrics) and its values: drill-down."""
        names: list[str] = []
        if metric in self.indicators:
            names = sorted(selector_names(self.indicators[metric].ast))
        else:
            check_metric_name(metric, "metric")
            names = [metric, f"{metric}_bucket", f"{metric}_count"]
        values: dict[str, set[str]] = {}
        for name in names:
            for _, labels in self.store.series_of([LabelMatcher(NAME, "=", name)]):
                for key, value in labels.items():
                    if key not in (NAME, "le"):
                        values.setdefault(key, set()).add(value)
        return {key: sorted(vals) for key, vals in sorted(values.items())}

    def series_matching(
        self, selectors: Sequence[str], start: float | None = None, end: float | None = None
    ) -> list[dict[str, str]]:
        """Label sets of series matching any selector (``/api/v1/series``) with samples in [start, end]
        when either bound is given."""
        found: dict[int, dict[str, str]] = {}
        groups = [[]] if not selectors else [g for sel in selectors for g in self.selector_matchers(sel)]
        for group in groups:
            for sid, labels in self.store.series_of(group):
                found[sid] = labels
        if start is not None or end is not None:
            active = self.store.active(
                list(found), -math.inf if start is None else start, math.inf if end is None else end
            )
            found = {sid: labels for sid, labels in found.items() if sid in active}
        return list(found.values())

    def selector_matchers(self, selector: str) -> list[list[LabelMatcher]]:
        node = parse(selector)
        if type(node).__name__ != "VectorSelector":
            raise QueryError(f"{selector!r} is not a series selector")
        return self.evaluator.matchers(node)

    def label_names(
        self, selectors: Sequence[str] = (), start: float | None = None, end: float | None = None
    ) -> list[str]:
        series = self.series_matching(selectors, start, end)
        return sorted({k for labels in series for k in labels} | ({NAME} if series else set()))

    def label_values(
        self, name: str, selectors: Sequence[str] = (), start: float | None = None, end: float | None = None
    ) -> list[str]:
        series = self.series_matching(selectors, start, end)
        values = {labels[name] for labels in series if name in labels}
        if name == NAME and not selectors:
            values |= set(self.indicators)
        return sorted(values)

    # --- the devbox structured query ----------------------------------------------------------

    def structured_query(self, q: StructuredQuery, deadline: float | None = None) -> dict[str, Any]:
        """Metric + filters + group-by + aggregate (+ percentile, top-N) over a time range."""
        matchers = [f.matcher() for f in q.filters]
        end = q.end if q.end is not None else time.time()
        start = q.start if q.start is not None else end - 3600
        if end < start:
            raise QueryError("end must not be before start")
        step = q.step or max(1.0, math.ceil((end - start) / 240))
        count = int((end - start) // step) + 1
        if count > 11000:
            raise QueryError(f"{count} steps requested; make step larger than {step:g} s")
        times = [start + i * step for i in range(count)]
        ev = self.evaluator.fork((times[0], times[-1]), deadline=deadline)
        if q.metric in self.indicators:
            ind = self.indicators[q.metric]
            vec = ind.evaluate(ev, times, filters=matchers, by=ind.by if q.group_by is None else q.group_by)
            expr = f"indicator {q.metric}"
        else:
            expr = self._structured_expr(q)
            value = ev.evaluate(parse(expr), times)
            if not isinstance(value, Vector):
                raise QueryError("the query did not give a vector")
            vec = value
        series = []
        for labels, vals in vec.series.values():
            pts = [(t, v) for t, v in zip(times, vals, strict=True) if v is not None]
            if pts:
                series.append({"labels": {k: v for k, v in labels.items() if k != NAME}, "points": pts})
        if q.top:
            series.sort(key=lambda s: -_mean([v for _, v in s["points"] if math.isfinite(v)]))
            series = series[: q.top]
        else:
            series.sort(key=lambda s: sorted(s["labels"].items()))
        return {"metric": q.metric, "expr": expr, "start": start, "end": end, "step": step, "series": series}

    def _structured_expr(self, q: StructuredQuery) -> str:
        metric = q.metric
        check_metric_name(metric, "metric")
        info = self.store.meta.get(metric)
        histogram = (info is not None and info.type == "histogram") or (
            not self.store.series_of([LabelMatcher(NAME, "=", metric)])
            and bool(self.store.series_of([LabelMatcher(NAME, "=", metric + "_bucket")]))
        )
        selector = (
            "{"
            + ",".join(
                [f'__name__="{metric}_bucket"' if histogram else f'__name__="{metric}"']
                + [f.promql() for f in q.filters]
            )
            + "}"
        )
        by = ",".join(q.group_by or [])
        window = f"{max(int(q.window), 1)}s"
        agg = q.aggregate
        if agg.startswith("p") and agg[1:].replace(".", "", 1).isdigit():
            phi = float(agg[1:]) / 100
            if not 0 <= phi <= 1:
                raise QueryError(f"percentile {agg} must be between p0 and p100")
            if not histogram:
                raise QueryError(f"{metric} is not a histogram; percentiles need _bucket series")
            return f"histogram_quantile({phi}, sum by ({by + ',' if by else ''}le) (rate({selector}[{window}])))"
        if histogram:
            raise QueryError(
                f"{metric} is a histogram; ask for a percentile (aggregate p50, p90, p99) or query {metric}_count"
            )
        if agg not in ("sum", "avg", "min", "max", "count"):
            raise QueryError(f"unknown aggregate {agg!r} (allowed: sum, avg, min, max, count, pNN)")
        inner = f"rate({selector}[{window}])" if (self.is_counter(metric) and q.rate) else selector
        return f"{agg} by ({by}) ({inner})"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else -math.inf


@dataclass
class Filter:
    """A dimension filter of the devbox query: ``op`` is =, !=, =~, !~ or in."""

    label: str
    op: str
    value: str | list[str]

    def __post_init__(self) -> None:
        check_label_name(self.label, "filter")
        if self.op not in ("=", "!=", "=~", "!~", "in"):
            raise ReportError(f"filter on {self.label}: unknown operator {self.op!r} (allowed: =, !=, =~, !~, in)")
        if self.op == "in":
            if isinstance(self.value, str):
                self.value = [v for v in self.value.split("|") if v]
            if not self.value:
                raise ReportError(f"filter on {self.label}: `in` needs at least one value")
        elif not isinstance(self.value, str):
            raise ReportError(f"filter on {self.label}: the value must be a string")
        if self.op in ("=~", "!~"):
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ReportError(f"filter on {self.label}: invalid regex: {exc}") from None

    def matcher(self) -> LabelMatcher:
        if self.op == "in":
            return LabelMatcher(self.label, "=~", "|".join(re.escape(v) for v in self.value))
        return LabelMatcher(self.label, self.op, str(self.value))

    def promql(self) -> str:
        m = self.matcher()
        return f"{m.name}{m.op}{json.dumps(m.value)}"

    @classmethod
    def parse(cls, text: str) -> Filter:
        """``k=v``, ``k!=v``, ``k=~re``, ``k!~re``, ``k in a|b`` (or ``k in (a,b)``)."""
        m = re.match(r"^\s*([^\s=!~]+)\s+in\s+\(?(.*?)\)?\s*$", text)
        if m:
            values = [v.strip() for v in re.split(r"[|,]", m.group(2)) if v.strip()]
            return cls(m.group(1), "in", values)
        m = re.match(r"^\s*([^\s=!~]+)\s*(=~|!~|!=|=)\s*(.*?)\s*$", text)
        if not m:
            raise ReportError(
                f"filter {text!r}: write label=value, label!=value, label=~regex, label!~regex or label in a|b"
            )
        return cls(m.group(1), m.group(2), m.group(3))


@dataclass
class StructuredQuery:
    metric: str
    start: float | None = None
    end: float | None = None
    step: float | None = None
    filters: list[Filter] = field(default_factory=list)
    #: None: the indicator's default ``by`` (base metrics: no grouping); []: one total series
    group_by: list[str] | None = None
    aggregate: str = "sum"
    top: int | None = None
    window: float = 60.0
    rate: bool = True

    def __post_init__(self) -> None:
        for name in self.group_by or []:
            check_label_name(name, "group_by")
        if self.top is not None and self.top < 1:
            raise ReportError("top must be at least 1")
        if self.step is not None and self.step <= 0:
            raise ReportError("step must be positive")
        if self.window <= 0:
            raise ReportError("window must be positive")
