"""devbox's own alert API on the ``api`` listener, under ``/api/alerts``.

Alerts, rules (list/create/update/delete, validated), the backtest (``POST /api/alerts/rules/test``),
history by rule/service/time, and silences (the same ones the Alertmanager port serves).
Handlers refuse with :mod:`devbox.platform.errors`; the listener renders ``{"error", "reason"}``
with a 4xx status.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from devbox.mocks.alerting.config import parse_duration
from devbox.mocks.alerting.http import read_json, refused
from devbox.mocks.alerting.matchers import matcher_from_api, parse_matchers
from devbox.mocks.alerting.models import Alert, AlertState, Matcher, Rule, Silence
from devbox.mocks.alerting.notify import check_time
from devbox.mocks.alerting.rules import export_rule_file, rule_from_json
from devbox.mocks.alerting.service import AlertingService
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from devbox.platform.errors import BadRequest

#: Backtests over more steps than this are refused (each step is one evaluation).
MAX_BACKTEST_STEPS = 20000


def finite(data: Any) -> Any:
    """JSON has no NaN or Inf (PromQL gives them, e.g. 0/0): write them as Prometheus does, as strings."""
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else "+Inf" if data > 0 else "-Inf"
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list):
        return [finite(v) for v in data]
    return data


def parse_time(value: Any, *, now: float, name: str) -> float:
    """Unix seconds, RFC 3339, or a duration meaning that long ago (``1h``)."""
    found = _parse_time(value, now=now, name=name)
    if not math.isfinite(found):
        raise ValueError(f"{name}: {value!r} is not a finite time")
    return check_time(found, name, value)


def _parse_time(value: Any, *, now: float, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        for parse in (float, lambda t: datetime.fromisoformat(t).timestamp(), lambda t: now - parse_duration(t)):
            try:
                return float(parse(text))
            except ValueError:
                pass
    raise ValueError(f"{name}: {value!r} is not a time (Unix seconds, RFC 3339, or a duration ago like 1h)")


def alert_json(alert: Alert, service: AlertingService, now: float) -> dict[str, Any]:
    return {
        "rule": alert.rule_id,
        "alertname": alert.labels.get("alertname", ""),
        "labels": alert.labels,
        "annotations": alert.annotations,
        "state": alert.state.value,
        "value": alert.value,
        "active_at": alert.active_at,
        "fired_at": alert.fired_at,
        "fingerprint": alert.fingerprint,
        "silenced_by": service.core.silenced_by(alert.labels, now),
        "external": alert.rule_id is None,
    }


def silence_json(s: Silence, now: float) -> dict[str, Any]:
    return {
        "id": s.id,
        "matchers": [m.to_api() for m in s.matchers],
        "matchers_text": ", ".join(str(m) for m in s.matchers),
        "starts_at": s.starts_at,
        "ends_at": s.ends_at,
        "created_by": s.created_by,
        "comment": s.comment,
        "updated_at": s.updated_at,
        "state": s.state(now).value,
    }


def backtest_request(body: Any, service: AlertingService, now: float) -> tuple[Rule, float, float, float | None]:
    """``(rule, start, end, step)`` of a backtest body; ValueError says what is wrong with it."""
    if not isinstance(body, dict):
        raise ValueError('the body is {"rule": {...}} or {"id": "group/name"}, plus since/start/end/step')
    if "rule" in body:
        rule = rule_from_json(body["rule"], source="test")
    elif "id" in body:
        rule = service.find_rule(str(body["id"]))
    else:
        raise ValueError('give the rule to test: {"rule": {...}} or {"id": "group/name"}')
    end = parse_time(body.get("end", now), now=now, name="end")
    if "start" in body:
        start = parse_time(body["start"], now=now, name="start")
    else:
        start = end - parse_duration(body.get("since", "1h"))
    step = parse_duration(body["step"]) if body.get("step") is not None else None
    if end <= start:
        raise ValueError("end must be after start")
    if step is not None and step <= 0:
        raise ValueError("step must be positive")
    if step is not None and (end - start) / step > MAX_BACKTEST_STEPS:
        raise ValueError(f"too many steps (over {MAX_BACKTEST_STEPS}): use a larger step or a shorter range")
    return rule, start, end, step


def silence_request(body: Any, service: AlertingService, now: float) -> Silence:
    """``{matchers: ["a=b", ...] | [{name,value,isRegex,isEqual}], duration|ends_at, starts_at?, created_by,
    comment}`` as a validated silence (not stored yet); ValueError says what is wrong."""
    if not isinstance(body, dict):
        raise ValueError("a silence is a JSON object")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise ValueError('matchers is a non-empty list: ["alertname=X", ...] or [{name, value, isRegex}]')
    matchers: list[Matcher] = []
    for item in raw:
        matchers.extend(parse_matchers(item) if isinstance(item, str) else [matcher_from_api(item)])
    starts = parse_time(body["starts_at"], now=now, name="starts_at") if body.get("starts_at") else now
    if body.get("ends_at") is not None:
        ends = parse_time(body["ends_at"], now=now, name="ends_at")
    else:
        ends = starts + parse_duration(body.get("duration", "1h"))
    return service.core.make_silence(
        matchers=matchers,
        starts_at=starts,
        ends_at=ends,
        created_by=str(body.get("created_by") or "devbox"),
        comment=str(body.get("comment") or ""),
        now=now,
    )


class AlertsApi:
    """The ``/api/alerts`` handlers over one :class:`AlertingService`."""

    def __init__(self, service: AlertingService) -> None:
        self.service = service

    async def list_alerts(self, state: str = "active") -> Any:
        now = self.service.clock()
        if state not in ("active", "firing", "pending", "all"):
            raise BadRequest("state is one of active (pending+firing), firing, pending, all", code="bad state")
        alerts = self.service.core.alerts(include_pending=state != "firing")
        if state == "pending":
            alerts = [a for a in alerts if a.state is AlertState.PENDING]
        return finite({"alerts": [alert_json(a, self.service, now) for a in alerts]})

    async def list_rules(self) -> Any:
        return {
            "rules": [e.to_json() for e in self.service.core.evaluators.values()],
            "errors": self.service.load_errors,
            "warnings": self.service.load_warnings,
        }

    async def reload(self) -> Any:
        errors = await self.service.reload_rules()
        return {"rules": len(self.service.core.evaluators), "errors": errors, "warnings": self.service.load_warnings}

    async def test_rule(self, request: Request) -> Any:
        with refused("invalid backtest"):
            body = await read_json(request)
            rule, start, end, step = backtest_request(body, self.service, self.service.clock())
        return finite(await self.service.backtest(rule, start=start, end=end, step=step))

    async def export_rules(self) -> Any:
        return PlainTextResponse(export_rule_file(self.service.export_rules()), media_type="application/yaml")

    async def get_rule(self, rule_id: str) -> Any:
        rule = self.service.find_rule(rule_id)
        return self.service.core.evaluators[rule.id].to_json()

    async def create_rule(self, request: Request) -> Any:
        with refused("invalid rule"):
            body = await read_json(request)
        rule = await self.service.put_rule(body)
        return JSONResponse(rule.to_json(), status_code=201)

    async def update_rule(self, rule_id: str, request: Request) -> Any:
        with refused("invalid rule"):
            body = await read_json(request)
        return (await self.service.put_rule(body, replace=rule_id)).to_json()

    async def delete_rule(self, rule_id: str) -> Any:
        return {"deleted": (await self.service.delete_rule(rule_id)).id}

    async def history(
        self,
        rule: str | None = None,
        service: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 500,
    ) -> Any:
        now = self.service.clock()
        with refused("bad time"):
            lo = parse_time(since, now=now, name="since") if since else None
            hi = parse_time(until, now=now, name="until") if until else None
        if not 1 <= limit <= 10000:
            raise BadRequest("limit is between 1 and 10000", code="bad limit")
        rows = await self.service.history(rule=rule, service=service, since=lo, until=hi, limit=limit)
        return finite({"transitions": rows})

    async def list_silences(self, state: str | None = None) -> Any:
        now = self.service.clock()
        silences = sorted(self.service.core.silences.values(), key=lambda s: s.starts_at, reverse=True)
        out = [silence_json(s, now) for s in silences]
        if state:
            out = [s for s in out if s["state"] == state]
        return {"silences": out}

    async def add_silence(self, request: Request) -> Any:
        now = self.service.clock()
        with refused("invalid silence"):
            silence = silence_request(await read_json(request), self.service, now)
        self.service.save_silence(silence)
        return JSONResponse(silence_json(silence, now), status_code=201)

    async def expire_silence(self, silence_id: str) -> Any:
        return silence_json(self.service.expire_silence(silence_id), self.service.clock())

    def router(self) -> APIRouter:
        r = APIRouter(prefix="/api/alerts", tags=["alerting"])
        routes: list[tuple[str, str, Any, int | None]] = [
            ("GET", "", self.list_alerts, None),
            ("GET", "/rules", self.list_rules, None),
            ("POST", "/reload", self.reload, None),
            ("POST", "/rules/test", self.test_rule, None),
            ("GET", "/rules/export", self.export_rules, None),
            ("GET", "/rules/{rule_id:path}", self.get_rule, None),
            ("POST", "/rules", self.create_rule, 201),
            ("PUT", "/rules/{rule_id:path}", self.update_rule, None),
            ("DELETE", "/rules/{rule_id:path}", self.delete_rule, None),
            ("GET", "/history", self.history, None),
            ("GET", "/silences", self.list_silences, None),
            ("POST", "/silences", self.add_silence, 201),
            ("DELETE", "/silences/{silence_id}", self.expire_silence, None),
        ]
        for method, path, handler, status in routes:
            r.add_api_route(path, handler, methods=[method], status_code=status)
        return r
