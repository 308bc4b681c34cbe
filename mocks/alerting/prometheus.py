"""Alerting's part of the Prometheus HTTP API, on the ``prometheus`` listener: ``GET /api/v1/rules``
and ``GET /api/v1/alerts`` in Prometheus's envelope (``{"status": "success", "data": ...}``), as
Grafana's alerting view and the Prometheus web UI read them.

:class:`PrometheusView` builds the ``data`` of both and is what alerting provides as
:class:`devbox.platform.ports.AlertsView`. Errors on this listener are rendered by its owner
(metrics) in Prometheus's error envelope; these two routes refuse nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from devbox.mocks.alerting.engine import RuleEvaluator
from devbox.mocks.alerting.models import Alert, AlertState
from devbox.mocks.alerting.notify import rfc3339
from devbox.mocks.alerting.service import AlertingService
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse


def prom_value(value: float | None) -> str:
    """A sample value as the Prometheus API writes it (``1.5e+00``, ``NaN``, ``+Inf``)."""
    if value is None or math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return f"{value:e}"


def prom_alert(alert: Alert) -> dict[str, Any]:
    return {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "state": alert.state.value,
        "activeAt": rfc3339(alert.active_at),
        "value": prom_value(alert.value),
    }


def _first(params: Mapping[str, str], name: str) -> str | None:
    """Prometheus's list filters (``rule_name[]``) and the plain spelling; one value each."""
    return params.get(f"{name}[]") or params.get(name)


class PrometheusView:
    """Alerting's state in Prometheus's API shapes (the :class:`~devbox.platform.ports.AlertsView`)."""

    def __init__(self, service: AlertingService) -> None:
        self.service = service

    def prometheus_alerts(self) -> dict[str, Any]:
        """``data`` of ``GET /api/v1/alerts``: pending and firing alerts of the rules."""
        alerts = [a for a in self.service.core.alerts(include_pending=True) if a.rule_id is not None]
        return {"alerts": [prom_alert(a) for a in alerts]}

    def prometheus_rules(self, params: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``data`` of ``GET /api/v1/rules`` (``type=alert|record``, ``rule_name[]``, ``rule_group[]``,
        ``file[]`` filters, one value each)."""
        params = params or {}
        if params.get("type") == "record":
            return {"groups": []}
        name, group_name, wanted_file = (_first(params, k) for k in ("rule_name", "rule_group", "file"))
        groups: dict[str, dict[str, Any]] = {}
        for evaluator in self.service.core.evaluators.values():
            rule = evaluator.rule
            file = rule.source.rsplit(":", 1)[0] if ":" in rule.source else rule.source
            if (name and rule.name != name) or (group_name and rule.group != group_name):
                continue
            if wanted_file and file != wanted_file:
                continue
            group = groups.setdefault(rule.group, self._group(evaluator, file))
            group["rules"].append(self._rule(evaluator))
        return {"groups": list(groups.values())}

    def _group(self, evaluator: RuleEvaluator, file: str) -> dict[str, Any]:
        return {
            "name": evaluator.rule.group,
            "file": file,
            "rules": [],
            "interval": self.service.config.interval,
            "limit": 0,
            "evaluationTime": 0,
            "lastEvaluation": rfc3339(evaluator.last_eval),
        }

    @staticmethod
    def _rule(evaluator: RuleEvaluator) -> dict[str, Any]:
        rule = evaluator.rule
        alerts = [a for a in evaluator.alerts.values() if a.state in (AlertState.PENDING, AlertState.FIRING)]
        return {
            "state": evaluator.to_json()["state"],
            "name": rule.name,
            "query": rule.expr,
            "duration": rule.for_s,
            "keepFiringFor": rule.keep_firing_for_s,
            "labels": rule.labels,
            "annotations": rule.annotations,
            "alerts": [prom_alert(a) for a in alerts],
            "health": evaluator.health,
            "lastError": evaluator.last_error or "",
            "evaluationTime": evaluator.last_duration,
            "lastEvaluation": rfc3339(evaluator.last_eval),
            "type": "alerting",
        }


def _success(data: Any) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


class PrometheusAlertsApi:
    """The two routes; ``view`` answers them."""

    def __init__(self, view: PrometheusView) -> None:
        self.view = view

    async def rules(self, request: Request) -> JSONResponse:
        return _success(self.view.prometheus_rules(dict(request.query_params)))

    async def alerts(self) -> JSONResponse:
        return _success(self.view.prometheus_alerts())

    def router(self) -> APIRouter:
        r = APIRouter(tags=["prometheus"])
        r.add_api_route("/api/v1/rules", self.rules, methods=["GET"])
        r.add_api_route("/api/v1/alerts", self.alerts, methods=["GET"])
        return r
