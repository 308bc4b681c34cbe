"""Serves the dashboard page and the one query it needs that the mocks don't offer as JSON.

LIMITATIONS: a read-only view; changes (silences, rules, isolation) go through the CLI or API.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from devbox.platform.component import Component

LOG = logging.getLogger(__name__)

STATIC = resources.files("devbox.dashboard") / "static"
MAX_POINTS = 1100


class DashboardComponent(Component):
    name = "dashboard"

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        router = APIRouter(tags=["dashboard"])

        @router.get("/", response_class=HTMLResponse, include_in_schema=False)
        async def index() -> HTMLResponse:
            return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

        @router.get("/dashboard/app.js", include_in_schema=False)
        async def script() -> Response:
            return Response((STATIC / "app.js").read_text(encoding="utf-8"), media_type="text/javascript")

        @router.get("/api/dashboard/range")
        async def chart(
            query: str = Query(..., min_length=1, description="PromQL expression"),
            minutes: float = Query(15, gt=0, le=24 * 60),
            step: float | None = Query(None, gt=0),
        ) -> Any:
            """A PromQL range query over the last ``minutes``, for the dashboard's charts."""
            if not self.ctx.has("metrics"):
                return JSONResponse({"error": "no metrics", "reason": "the metrics component is not running"}, 404)
            end = time.time()
            start = end - minutes * 60
            step = step or max(1.0, (end - start) / 300)
            if (end - start) / step > MAX_POINTS:
                return JSONResponse(
                    {"error": "too many points", "reason": f"at most {MAX_POINTS} points; raise step"}, 400
                )
            from devbox.mocks.metrics.promql import QueryError

            metrics: Any = self.ctx.component("metrics")
            try:
                series = metrics.query_range(query, start, end, step)
            except QueryError as exc:
                return JSONResponse({"error": "bad query", "reason": str(exc)}, 400)
            return {
                "query": query,
                "start": start,
                "end": end,
                "step": step,
                "series": [{"labels": labels, "points": points} for labels, points in series],
            }

        return [("api", router)]
