"""Serves the dashboard page and the one query it needs that the mocks don't offer as JSON.

``GET /api/why?alert=|service=&at=`` ranks the likely causes of an alert or a service's trouble, as
``devbox why`` does (:mod:`devbox.why.serve`). Also the load runs kept under ``.devbox/load/<run-id>/``
(read-only): ``GET /api/load/runs`` and ``GET /api/load/runs/{id}`` with the run's per-second history for
charts and its capacity table.

LIMITATIONS: silences are the one change made from the page; rules and isolation go through the CLI or API.
A run's capacity table here is built without traces (per service: measured QPS, CPU per request,
saturation); the fan-out and the instances needed for a target come from `devbox capacity`.
"""

from __future__ import annotations

import asyncio
import csv
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from devbox.platform.component import Component, PlatformContext
from devbox.platform.errors import BadRequest, NotFound
from devbox.platform.ports import MetricsQueryPort, PortError, SuspectsPort
from devbox.why.serve import WhyService

LOG = logging.getLogger(__name__)

STATIC = resources.files("devbox.dashboard") / "static"
MAX_POINTS = 1100
#: History rows kept per run for its charts (one a second; a long run is thinned evenly).
MAX_HISTORY = 1200


async def index() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


async def script() -> Response:
    return Response((STATIC / "app.js").read_text(encoding="utf-8"), media_type="text/javascript")


async def dagre() -> Response:
    """dagre (MIT, @dagrejs/dagre 3.1.3 from npm, dist/dagre.min.js vendored as is): the topology's
    layered layout — ranks by call depth, edges routed around nodes."""
    return Response((STATIC / "vendor" / "dagre.min.js").read_text(encoding="utf-8"), media_type="text/javascript")


class Charts:
    """The charts' PromQL range query, answered through the hosted :class:`MetricsQueryPort`."""

    def __init__(self, ctx: PlatformContext) -> None:
        self.ctx = ctx

    async def chart(
        self,
        query: str = Query(..., min_length=1, description="PromQL expression"),
        minutes: float = Query(15, gt=0, le=24 * 60),
        step: float | None = Query(None, gt=0),
    ) -> Any:
        """A PromQL range query over the last ``minutes``, for the dashboard's charts."""
        metrics = self.ctx.lookup(MetricsQueryPort)
        if metrics is None:
            raise NotFound("the metrics component is not running", code="no metrics")
        end = time.time()
        start = end - minutes * 60
        step = step or max(1.0, (end - start) / 300)
        if (end - start) / step > MAX_POINTS:
            raise BadRequest(f"at most {MAX_POINTS} points; raise step", code="too many points")
        try:
            series = await metrics.query_range_async(query, start, end, step)  # off the event loop
        except PortError as exc:
            raise BadRequest(str(exc), code="bad query") from None
        return {
            "query": query,
            "start": start,
            "end": end,
            "step": step,
            "series": [{"labels": labels, "points": points} for labels, points in series],
        }


class LoadRuns:
    """The kept load runs (``<state dir>/load``), read on a worker thread for the Load runs page."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def runs(self) -> Any:
        """Every kept run, newest first: what it was and its totals."""
        from devbox.load.runs import RunStore

        records = await asyncio.to_thread(RunStore(self.root).list)
        keys = ("id", "kind", "status", "started_at", "ended_at", "seconds", "total", "platform_error")
        return {"runs": [{**{k: r.get(k) for k in keys}, "target": (r.get("params") or {}).get("target"),
                          "users": (r.get("params") or {}).get("users"), "steps": len(r.get("steps") or [])}
                         for r in records]}

    async def run(self, run_id: str) -> Any:
        """One run: its record, its per-second history (the charts) and its capacity table."""
        return await asyncio.to_thread(self._run, run_id)

    def _run(self, run_id: str) -> dict[str, Any]:
        from devbox.load import report
        from devbox.load.runs import RunNotFound, RunStore

        try:
            record = RunStore(self.root).load(run_id)
        except RunNotFound as exc:
            raise NotFound(str(exc), code="no such run") from None
        try:
            capacity: dict[str, Any] | None = report.build(record, [])
            error = None
        except Exception as exc:  # an old or partial record still shows its history
            LOG.info("capacity of run %s: %s", run_id, exc)
            capacity, error = None, f"{exc.__class__.__name__}: {exc}"
        return {"run": record, "history": history(self.root / record["id"]), "capacity": capacity,
                "capacity_error": error}


def history(folder: Path) -> list[dict[str, Any]]:
    """The Aggregated rows of Locust's ``*_stats_history.csv`` (a ramp: every step's, in order)."""
    rows: list[dict[str, Any]] = []
    for path in sorted([*folder.glob("*_stats_history.csv"), *folder.glob("step-*/*_stats_history.csv")]):
        try:
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    if row.get("Name") != "Aggregated":
                        continue
                    rows.append({"t": _num(row.get("Timestamp")), "users": _num(row.get("User Count")),
                                 "rps": _num(row.get("Requests/s")), "fps": _num(row.get("Failures/s")),
                                 "p50": _num(row.get("50%")), "p95": _num(row.get("95%")),
                                 "p99": _num(row.get("99%"))})
        except (OSError, csv.Error) as exc:
            LOG.info("history %s unreadable: %s", path, exc)
    rows.sort(key=lambda r: r["t"] or 0)
    if len(rows) > MAX_HISTORY:
        rows = rows[:: len(rows) // MAX_HISTORY + 1]
    return rows


def _num(raw: str | None) -> float | None:
    try:
        return float(raw) if raw not in (None, "", "N/A") else None
    except ValueError:
        return None


class DashboardComponent(Component):
    """Owns the page, its chart query, the load runs' reads and the ranking of likely causes
    (``GET /api/why``, and the :class:`~devbox.platform.ports.SuspectsPort` alert notifications ask)."""

    name = "dashboard"

    def __init__(self, ctx: PlatformContext) -> None:
        super().__init__(ctx)
        self.why = WhyService(lambda: ctx.url("api"), ctx.config.platform.token)
        ctx.provide(SuspectsPort, self.why)

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        router = APIRouter(tags=["dashboard"])
        router.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
        router.add_api_route("/dashboard/app.js", script, methods=["GET"], include_in_schema=False)
        router.add_api_route("/dashboard/vendor/dagre.min.js", dagre, methods=["GET"], include_in_schema=False)
        router.add_api_route("/api/dashboard/range", Charts(self.ctx).chart, methods=["GET"])
        load = LoadRuns(self.ctx.state_dir / "load")
        router.add_api_route("/api/load/runs", load.runs, methods=["GET"])
        router.add_api_route("/api/load/runs/{run_id}", load.run, methods=["GET"])
        router.add_api_route("/api/why", self.why.route, methods=["GET"])
        return [("api", router)]
