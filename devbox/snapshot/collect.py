"""Read a running platform's state and one window's evidence through its public HTTP APIs.

Only HTTP, so it works against any running devbox (``devbox up``, a scenario's platform, a remote
one with its token): devbox's own API for naming, alerting, deploy and faults; the Zipkin API for
spans; the Prometheus API for metric samples. A component that is not hosted is left empty.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from devbox.snapshot.format import Evidence

LOG = logging.getLogger(__name__)

#: Root span names of health probes (as devbox's tracing API leaves them out), lower-cased.
PROBE_ROOTS = frozenset(n.lower() for n in ("GET /healthz", "GET /health", "GET /readyz", "GET /livez",
                                             "/grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check",
                                             "/grpc.health.v1.Health/Watch"))
#: The trace list answers at most this many per query; a fuller window is split in halves.
LIST_LIMIT = 1000
FETCH_BATCH = 100
#: Samples per series over the window, at most (the step grows with the window).
METRIC_POINTS = 240


class CollectError(Exception):
    """The platform could not be read; ``str()`` says why."""


@dataclass
class Platform:
    """Where a running platform answers: its API and the Zipkin and Prometheus listeners."""

    api: str
    token: str | None = None
    timeout: float = 30.0

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.Client(base_url=self.api, timeout=self.timeout, headers=headers)


class Collector:
    """Owns one HTTP client to a platform; :meth:`evidence` reads everything for a window."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.http = platform.client()
        try:
            self.info: dict[str, Any] = self._get("/api/platform")
        except httpx.TransportError as exc:
            raise CollectError(f"devbox is not reachable at {platform.api} ({exc.__class__.__name__})") from None
        if not isinstance(self.info, dict):
            raise CollectError(f"{platform.api}/api/platform did not answer a devbox platform")
        self.listeners = {name: f"http://{v['host']}:{v['port']}" for name, v in
                          (self.info.get("listeners") or {}).items() if v.get("protocol") == "http"}

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Collector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------

    def _get(self, path: str, base: str | None = None, **params: Any) -> Any:
        url = (base or "") + path
        response = self.http.get(url, params={k: v for k, v in params.items() if v is not None} or None)
        if response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise CollectError(f"GET {url}: {response.status_code} {response.text[:200]}")
        return response.json()

    def _maybe(self, path: str, base: str | None = None, **params: Any) -> Any:
        """A read of a component that may not be hosted: None instead of an error."""
        try:
            return self._get(path, base, **params)
        except (CollectError, httpx.HTTPError, ValueError) as exc:
            LOG.debug("GET %s: %s", path, exc)
            return None

    @property
    def started_at(self) -> float:
        return float(self.info.get("started_at") or time.time())

    # --- the parts -------------------------------------------------------------------------

    def state(self, ev: Evidence) -> None:
        """Registry, rules, alert rules, silences, faults and releases: the state at this moment."""
        ev.services = self._maybe("/api/naming/services") or []
        ev.instances = self._maybe("/api/naming/instances") or []
        ev.routing_rules = self._maybe("/api/naming/rules") or []
        ev.alert_rules = (self._maybe("/api/alerts/rules") or {}).get("rules", [])
        ev.silences = (self._maybe("/api/alerts/silences") or {}).get("silences", [])
        ev.faults = (self._maybe("/api/faults") or {}).get("faults", [])
        ev.releases = (self._maybe("/api/deploy/releases") or {}).get("history", [])

    def history(self, ev: Evidence, start: float, end: float) -> None:
        """Alert transitions and deploy events inside the window."""
        transitions = (self._maybe("/api/alerts/history", since=f"{start:.3f}", until=f"{end:.3f}",
                                   limit=10000) or {}).get("transitions", [])
        ev.transitions = sorted(transitions, key=lambda t: t.get("at") or 0)
        events: list[dict[str, Any]] = []
        since = 0
        while True:
            page = (self._maybe("/api/deploy/events", since=since, limit=5000) or {}).get("events", [])
            events.extend(e for e in page if start <= float(e.get("ts") or 0) <= end)
            if len(page) < 5000:
                break
            since = max(int(e.get("id") or 0) for e in page)
        ev.deploy_events = events

    def trace_ids(self, start: float, end: float) -> list[str]:
        """Ids of every non-probe trace that started in the window (halving windows the list cuts off)."""
        ids: list[str] = []
        pending = [(int(start * 1000), int(end * 1000) + 1)]
        while pending:
            lo, hi = pending.pop()
            data = self._get("/api/traces", end=hi, lookback=max(hi - lo, 1), limit=LIST_LIMIT) or {}
            rows = data.get("traces", [])
            if len(rows) >= LIST_LIMIT and hi - lo > 1:
                mid = (lo + hi) // 2
                pending += [(lo, mid), (mid, hi)]
                continue
            ids.extend(r["trace_id"] for r in rows)
        return list(dict.fromkeys(ids))

    def spans(self, ids: list[str]) -> list[dict[str, Any]]:
        """The Zipkin JSON spans of those traces, probe-rooted traces left out."""
        zipkin = self.listeners.get("zipkin")
        if zipkin is None or not ids:
            return []
        out: list[dict[str, Any]] = []
        for i in range(0, len(ids), FETCH_BATCH):
            batch = ids[i:i + FETCH_BATCH]
            if len(batch) == 1:
                traces = [self._get(f"/api/v2/trace/{batch[0]}", zipkin) or []]
            else:
                traces = self._get("/api/v2/traceMany", zipkin, traceIds=",".join(batch)) or []
            for trace in traces:
                roots = [s for s in trace if not s.get("parentId")]
                if roots and all(str(s.get("name", "")).lower() in PROBE_ROOTS for s in roots):
                    continue
                out.extend(trace)
        return out

    def metrics(self, start: float, end: float) -> tuple[list[tuple[str, dict[str, str], float, float]], float]:
        """Every series over the window at a step that keeps each under :data:`METRIC_POINTS` points."""
        prom = self.listeners.get("prometheus")
        if prom is None:
            return [], 0.0
        step = max(5.0, round((end - start) / METRIC_POINTS))
        names = (self._maybe("/api/v1/label/__name__/values", prom) or {}).get("data", [])
        out: list[tuple[str, dict[str, str], float, float]] = []
        for name in names:
            data = self._maybe("/api/v1/query_range", prom, query=name, start=f"{start:.3f}", end=f"{end:.3f}",
                               step=step) or {}
            for series in (data.get("data") or {}).get("result", []):
                labels = {k: v for k, v in series.get("metric", {}).items() if k != "__name__"}
                out.extend((name, labels, float(ts), float(v)) for ts, v in series.get("values", []))
        return out, step

    def settle(self, *, quiet: float = 1.5, timeout: float = 15.0) -> bool:
        """Wait until the spans of recent traces stop growing (services export in batches every
        0.5 s, so the last requests' spans arrive after the requests): the count of spans of the last
        minute's non-probe traces unchanged for ``quiet`` seconds. False when ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            rows = (self._get("/api/traces", lookback=60_000, limit=LIST_LIMIT) or {}).get("traces", [])
            count = sum(int(r.get("spans") or 0) for r in rows)
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return True
            time.sleep(0.25)
        return False

    def evidence(self, start: float, end: float, *, name: str = "", with_metrics: bool = True) -> Evidence:
        """Everything: the state now and the window's traces, metrics, transitions and events."""
        ev = Evidence(meta={
            "name": name, "created": time.time(), "project": self.info.get("project", ""),
            "window_start": start, "window_end": end, "source": self.platform.api,
        })
        self.state(ev)
        self.history(ev, start, end)
        ev.spans = self.spans(self.trace_ids(start, end))
        if with_metrics:
            ev.metrics, step = self.metrics(start, end)
            ev.meta["metric_step"] = step
        return ev


def collect(platform: Platform, *, start: float | None = None, end: float | None = None, name: str = "",
            with_metrics: bool = True, settle: bool = False) -> Evidence:
    """One window's evidence from a running platform; ``start`` defaults to when it came up; with
    ``settle``, first wait for the last requests' spans (:meth:`Collector.settle`)."""
    with Collector(platform) as c:
        if settle:
            c.settle()
        stop = end if end is not None else time.time()
        return c.evidence(start if start is not None else c.started_at, stop, name=name, with_metrics=with_metrics)
