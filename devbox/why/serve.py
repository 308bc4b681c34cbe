"""``devbox why`` inside the platform: the :class:`~devbox.platform.ports.SuspectsPort` the alerts'
notifications ask, and ``GET /api/why?alert=|service=&at=&window=`` for the dashboard's alert detail.

Both run the same gathering as the CLI (:func:`devbox.why.gather.gather`, over the platform's own
HTTP API) in a worker thread, so the ranking a notification shows is the one ``devbox why`` prints.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Query

from devbox.platform.errors import BadRequest, NotFound
from devbox.platform.ports import PortError

#: Seconds of evidence read back from the moment asked about (and as many before that).
WINDOW = 120.0


class WhyService:
    """Ranks suspects for a target by reading the platform's own API (``api_url()``: known once it listens)."""

    def __init__(self, api_url: Callable[[], str], token: str | None = None) -> None:
        self.api_url = api_url
        self.token = token

    def _report(self, target: str, at: float, window: float) -> dict[str, Any]:
        from devbox.snapshot.collect import Platform
        from devbox.why.gather import gather

        return gather(Platform(self.api_url(), self.token, timeout=10), target, at=repr(at), window=window)

    async def report(self, target: str, at: float | None = None, window: float = WINDOW) -> dict[str, Any]:
        """The ranked report (headline, suspects, notes); LookupError for an unknown target."""
        return await asyncio.to_thread(self._report, target, time.time() if at is None else at, window)

    async def suspects(self, target: str, at: float) -> list[Mapping[str, Any]]:
        try:
            report = await self.report(target, at)
        except LookupError as exc:
            raise PortError(str(exc)) from None
        return list(report["suspects"])

    async def route(
        self,
        alert: str | None = Query(None, description="An alert rule's name or id."),
        service: str | None = Query(None, description="A service."),
        at: float | None = Query(None, description="When (epoch s); default now, or the alert's last firing."),
        window: float = Query(WINDOW, gt=0, le=3600, description="Seconds of evidence before `at`."),
    ) -> dict[str, Any]:
        """``GET /api/why``: the suspects of an alert or a service, as ``devbox why --json`` prints them."""
        target = alert or service
        if not target or (alert and service):
            raise BadRequest("ask about one of alert= or service=")
        try:
            if at is None:
                return await asyncio.to_thread(self._report_now, target, window)
            return await self.report(target, at, window)
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    def _report_now(self, target: str, window: float) -> dict[str, Any]:
        # no explicit moment: an alert is asked about at its last firing (as `devbox why ALERT` does)
        from devbox.snapshot.collect import Platform
        from devbox.why.gather import gather

        return gather(Platform(self.api_url(), self.token, timeout=10), target, window=window)
