"""The alerting component: wires :class:`~devbox.mocks.alerting.service.AlertingService` to the
platform — its config, state folder and events, the metrics query port it evaluates rules with,
and the routers of its three adapters.

Listeners: ``alertmanager`` (its own: the Alertmanager API v2 subset, errors rendered by
:func:`devbox.mocks.alerting.alertmanager.render_error`); routes on ``api`` (``/api/alerts...``) and
on ``prometheus`` (``/api/v1/rules``, ``/api/v1/alerts``). Provides
:class:`devbox.platform.ports.AlertsView`; looks up :class:`devbox.platform.ports.MetricsQueryPort`.

Rules come from devbox.yaml (``alerting.groups`` / ``alerting.rules``), rule files
(``alerting.rule_files``, hot-reloaded by a watchdog observer) and the HTTP API (stored in
alerting.db). A file whose rules do not parse keeps its previous rules active; its errors are
listed with file and line by ``GET /api/alerts/rules``.

LIMITATIONS: one Alertmanager-like receiver route (every alert to every matching receiver),
no inhibition, no clustering; only rules are hot-reloaded (receivers, interval and the upstream
URL are read at start); see :mod:`devbox.mocks.alerting.engine` and :mod:`devbox.mocks.alerting.notify`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devbox.mocks.alerting.alertmanager import AlertmanagerApi
from devbox.mocks.alerting.api import AlertsApi
from devbox.mocks.alerting.models import Transition
from devbox.mocks.alerting.prometheus import PrometheusAlertsApi, PrometheusView
from devbox.mocks.alerting.service import AlertingService
from devbox.mocks.alerting.sources import RuleSources

from devbox.platform.component import Component
from devbox.platform.ports import AlertsView, MetricsQueryPort, SuspectsPort

if TYPE_CHECKING:
    from fastapi import APIRouter

    from devbox.platform.component import PlatformContext

LOG = logging.getLogger(__name__)


class AlertingComponent(Component):
    name = "alerting"

    def __init__(self, ctx: PlatformContext, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(ctx)
        config = ctx.config.alerting
        sources = RuleSources(config, root=ctx.config.root, source=ctx.config.source)
        self.service = AlertingService(
            config,
            sources=sources,
            db_path=ctx.state_dir / "alerting.db",
            url=self._url,
            on_transition=self._announce,
            clock=clock,
        )
        self.view = PrometheusView(self.service)
        ctx.provide(AlertsView, self.view)

    def _url(self, listener: str) -> str | None:
        return self.ctx.url(listener) if listener in self.ctx.addresses else None

    def _announce(self, transition: Transition) -> None:
        self.ctx.events.alert_transition.fire(transition=transition)

    def http_routes(self) -> list[tuple[str, APIRouter]]:
        return [
            ("api", AlertsApi(self.service).router()),
            ("alertmanager", AlertmanagerApi(self.service).router()),
            ("prometheus", PrometheusAlertsApi(self.view).router()),
        ]

    async def start(self) -> None:
        self.service.metrics = self.ctx.lookup(MetricsQueryPort)
        await self.service.start()
        why = self.ctx.lookup(SuspectsPort)
        if why is not None and self.service.notifier is not None:  # firing notifications name likely causes
            self.service.notifier.suspects = why.suspects

    async def stop(self) -> None:
        await self.service.stop()

    def info(self) -> dict[str, Any]:
        return self.service.info()
