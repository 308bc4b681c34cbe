"""Serves the dashboard page and the one query it needs that the mocks don't offer as JSON.

LIMITATIONS: silences are the one change made from the page; rules and isolation go through the CLI or API.
No logs page yet: logs have no HTTP API (the CLI reads the files).
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from devbox.platform.component import Component, PlatformContext
from devbox.platform.errors import BadRequest, NotFound
from devbox.platform.ports import MetricsQueryPort, PortError

LOG = logging.getLogger(__name__)

STATIC = resources.files("devbox.dashboard") / "static"
MAX_POINTS = 1100


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


class DashboardComponent(Component):
    name = "dashboard"

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        router = APIRouter(tags=["dashboard"])
        router.add_api_route("/", index, methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
        router.add_api_route("/dashboard/app.js", script, methods=["GET"], include_in_schema=False)
        router.add_api_route("/dashboard/vendor/dagre.min.js", dagre, methods=["GET"], include_in_schema=False)
        router.add_api_route("/api/dashboard/range", Charts(self.ctx).chart, methods=["GET"])
        return [("api", router)]
