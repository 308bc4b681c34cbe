"""Prometheus pull: scrape every instance of services whose ``scrape:`` path is set.

Instances come from naming through :class:`~devbox.platform.ports.NamingPort` when a hosted
component offers it; every ``scrape_interval`` each instance's ``http://host:port<path>`` is fetched and its
text exposition parsed with prometheus-client's parser. Samples get ``job`` (the service),
``service`` and ``instance`` (host:port) labels and the scrape time; ``up`` and
``scrape_duration_seconds`` are recorded per target like Prometheus does.

LIMITATIONS: text format only (no protobuf/OpenMetrics negotiation), sample timestamps in the
exposition are ignored, NaN/Inf samples are skipped, no relabelling.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from devbox.mocks.metrics.core import MetricsCore, labels_of
from devbox.mocks.metrics.store import MetricInfo, Point

from devbox.httpcore_loader import load_httpx
from devbox.platform.ports import NamingPort

if TYPE_CHECKING:
    import httpx
    from devbox.mocks.metrics.config import MetricsConfig

    from devbox.platform.component import PlatformContext

LOG = logging.getLogger(__name__)


def parse_exposition(text: str, *, base: dict[str, str], ts: float) -> tuple[list[Point], list[MetricInfo]]:
    """Points and metadata from a Prometheus text exposition; ValueError when it does not parse."""
    from prometheus_client.parser import text_string_to_metric_families  # with the first scrape

    points: list[Point] = []
    meta: list[MetricInfo] = []
    for family in text_string_to_metric_families(text):
        kind = family.type if family.type in ("counter", "gauge", "histogram", "summary") else "gauge"
        name = family.name
        if kind == "counter" and not name.endswith("_total"):
            meta.append(MetricInfo(name + "_total", "counter", family.documentation, family.unit or ""))
        else:
            meta.append(MetricInfo(name, kind, family.documentation, family.unit or ""))
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            value = float(sample.value)
            if not math.isfinite(value):
                continue
            points.append(Point(sample.name, labels_of({**sample.labels, **base}), ts, value))
    return points, meta


class Scraper:
    """The background scrape loop of the metrics component."""

    def __init__(self, ctx: PlatformContext, core: MetricsCore, config: MetricsConfig) -> None:
        self.ctx = ctx
        self.core = core
        self.config = config
        self._client: httpx.AsyncClient | None = None
        self.last: dict[str, dict[str, Any]] = {}

    @property
    def client(self) -> httpx.AsyncClient:
        # Made on the first scrape: an httpx client loads the CA bundle (~50 ms of CPU) as it is
        # made, which `devbox up` would pay at start for a project that scrapes nothing.
        if self._client is None:
            httpx = load_httpx()

            self._client = httpx.AsyncClient(timeout=self.config.scrape_timeout)
        return self._client

    def targets(self) -> list[tuple[str, str, str]]:
        """(service, instance "host:port", url) for every scrape target right now."""
        services = [s for s in self.ctx.config.services if s.scrape]
        naming = self.ctx.lookup(NamingPort)
        if not services or naming is None:
            return []
        out = []
        for svc in services:
            path = svc.scrape if svc.scrape.startswith("/") else "/" + svc.scrape
            for inst in naming.instances(naming.namespace, svc.name):
                address = f"{inst.host}:{inst.port}"
                host = f"[{inst.host}]" if ":" in inst.host else inst.host
                out.append((svc.name, address, f"http://{host}:{inst.port}{path}"))
        return out

    async def run(self) -> None:
        while True:
            started = time.monotonic()
            try:
                targets = self.targets()
                if targets:
                    await asyncio.gather(*(self.scrape(*t) for t in targets))
            except Exception:
                LOG.exception("scrape round failed")
            await asyncio.sleep(max(0.1, self.config.scrape_interval - (time.monotonic() - started)))

    async def scrape(self, service: str, instance: str, url: str) -> None:
        httpx = load_httpx()

        base = {"job": service, "service": service, "instance": instance}
        now = time.time()
        began = time.monotonic()
        error = ""
        points: list[Point] = []
        meta: list[MetricInfo] = []
        try:
            response = await self.client.get(url, headers={"Accept": "text/plain;version=0.0.4"})
            response.raise_for_status()
            points, meta = await asyncio.to_thread(parse_exposition, response.text, base=base, ts=now)
        except (httpx.HTTPError, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            points, meta = [], []
        duration = time.monotonic() - began
        labels = labels_of(base)
        points.append(Point("up", labels, now, 0.0 if error else 1.0))
        points.append(Point("scrape_duration_seconds", labels, now, duration))
        meta.append(MetricInfo("up", "gauge", "1 if the last scrape of the target succeeded."))
        meta.append(MetricInfo("scrape_duration_seconds", "gauge", "Seconds the last scrape took."))
        try:
            await asyncio.to_thread(self.core.ingest_points, points, meta)
        except ValueError as exc:
            error = error or str(exc)
        self.last[url] = {"service": service, "instance": instance, "at": now, "error": error, "samples": len(points)}
        if error:
            LOG.info("scrape of %s failed: %s", url, error)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
