"""devbox's own alert API on the ``api`` listener, under ``/api/alerts``.

Alerts, rules (list/create/update/delete, validated), the backtest (``POST /api/alerts/rules/test``),
history by rule/service/time, and silences (the same ones the Alertmanager port serves).
Errors are ``{"error", "reason"}`` with a 4xx status.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from devbox.mocks.alerting.config import parse_duration
from devbox.mocks.alerting.matchers import matcher_from_api, parse_matchers
from devbox.mocks.alerting.models import AlertState, Silence
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from devbox.mocks.alerting.component import AlertingComponent


def error(status: int, message: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


async def json_body(request: Request) -> Any:
    raw = await request.body()
    if not raw:
        raise ValueError("the request needs a JSON body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None


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
    return found


def _parse_time(value: Any, *, now: float, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return float(text)
        except ValueError:
            pass
        from datetime import datetime

        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
        try:
            return now - parse_duration(text)
        except ValueError:
            pass
    raise ValueError(f"{name}: {value!r} is not a time (Unix seconds, RFC 3339, or a duration ago like 1h)")


def alert_json(alert: Any, component: AlertingComponent, now: float) -> dict[str, Any]:
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
        "silenced_by": component.core.silenced_by(alert.labels, now),
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


def api_router(component: AlertingComponent) -> APIRouter:
    router = APIRouter(prefix="/api/alerts", tags=["alerting"])

    @router.get("")
    async def list_alerts(state: str = "active") -> Any:
        now = component.clock()
        if state not in ("active", "firing", "pending", "all"):
            return error(400, "bad state", "state is one of active (pending+firing), firing, pending, all")
        alerts = component.core.alerts(include_pending=state != "firing")
        if state == "pending":
            alerts = [a for a in alerts if a.state is AlertState.PENDING]
        return finite({"alerts": [alert_json(a, component, now) for a in alerts]})

    @router.get("/rules")
    async def list_rules() -> Any:
        return {
            "rules": [e.to_json() for e in component.core.evaluators.values()],
            "errors": component.load_errors,
            "warnings": component.load_warnings,
        }

    @router.post("/reload")
    async def reload() -> Any:
        errors = await component.reload_rules()
        return {"rules": len(component.core.evaluators), "errors": errors, "warnings": component.load_warnings}

    @router.post("/rules/test")
    async def test_rule(request: Request) -> Any:
        now = component.clock()
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ValueError('the body is {"rule": {...}} or {"id": "group/name"}, plus since/start/end/step')
            if "rule" in body:
                from devbox.mocks.alerting.rules import rule_from_json

                rule = rule_from_json(body["rule"], source="test")
            elif "id" in body:
                rule = component.find_rule(str(body["id"]))
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
            if step is not None and (end - start) / step > 20000:
                raise ValueError("too many steps (over 20000): use a larger step or a shorter range")
        except KeyError as exc:
            return error(404, "no such rule", str(exc.args[0]))
        except ValueError as exc:
            return error(400, "invalid backtest", str(exc))
        from devbox.mocks.metrics.promql import QueryError

        try:
            return finite(await component.backtest(rule, start=start, end=end, step=step))
        except QueryError as exc:
            return error(400, "query failed", str(exc))
        except RuntimeError as exc:
            return error(409, "cannot backtest", str(exc))

    @router.get("/rules/export")
    async def export_rules() -> Any:
        from devbox.mocks.alerting.rules import export_rule_file
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(export_rule_file(component.core.rules), media_type="application/yaml")

    @router.get("/rules/{rule_id:path}")
    async def get_rule(rule_id: str) -> Any:
        try:
            rule = component.find_rule(rule_id)
        except KeyError as exc:
            return error(404, "no such rule", str(exc.args[0]))
        return component.core.evaluators[rule.id].to_json()

    @router.post("/rules", status_code=201)
    async def create_rule(request: Request) -> Any:
        try:
            body = await json_body(request)
            rule = await component.put_rule(body)
        except ValueError as exc:
            return error(400, "invalid rule", str(exc))
        except FileExistsError as exc:
            return error(409, "rule exists", str(exc))
        return JSONResponse(rule.to_json(), status_code=201)

    @router.put("/rules/{rule_id:path}")
    async def update_rule(rule_id: str, request: Request) -> Any:
        try:
            body = await json_body(request)
            rule = await component.put_rule(body, replace=rule_id)
        except ValueError as exc:
            return error(400, "invalid rule", str(exc))
        except KeyError as exc:
            return error(404, "no such rule", str(exc.args[0]))
        except (PermissionError, FileExistsError) as exc:
            return error(409, "cannot update", str(exc))
        return rule.to_json()

    @router.delete("/rules/{rule_id:path}")
    async def delete_rule(rule_id: str) -> Any:
        try:
            rule = await component.delete_rule(rule_id)
        except KeyError as exc:
            return error(404, "no such rule", str(exc.args[0]))
        except PermissionError as exc:
            return error(409, "cannot delete", str(exc))
        return {"deleted": rule.id}

    @router.get("/history")
    async def history(
        rule: str | None = None,
        service: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 500,
    ) -> Any:
        now = component.clock()
        try:
            lo = parse_time(since, now=now, name="since") if since else None
            hi = parse_time(until, now=now, name="until") if until else None
        except ValueError as exc:
            return error(400, "bad time", str(exc))
        if not 1 <= limit <= 10000:
            return error(400, "bad limit", "limit is between 1 and 10000")
        assert component.store is not None
        import asyncio

        rows = await asyncio.to_thread(
            component.store.history, rule=rule, service=service, since=lo, until=hi, limit=limit
        )
        return finite({"transitions": rows})

    @router.get("/silences")
    async def list_silences(state: str | None = None) -> Any:
        now = component.clock()
        silences = sorted(component.core.silences.values(), key=lambda s: s.starts_at, reverse=True)
        out = [silence_json(s, now) for s in silences]
        if state:
            out = [s for s in out if s["state"] == state]
        return {"silences": out}

    @router.post("/silences", status_code=201)
    async def add_silence(request: Request) -> Any:
        """``{matchers: ["a=b", ...] | [{name,value,isRegex,isEqual}], duration|ends_at, starts_at?, created_by,
        comment}``."""
        now = component.clock()
        try:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ValueError("a silence is a JSON object")
            raw = body.get("matchers")
            if not isinstance(raw, list) or not raw:
                raise ValueError('matchers is a non-empty list: ["alertname=X", ...] or [{name, value, isRegex}]')
            matchers = []
            for item in raw:
                matchers.extend(parse_matchers(item) if isinstance(item, str) else [matcher_from_api(item)])
            starts = parse_time(body["starts_at"], now=now, name="starts_at") if body.get("starts_at") else now
            if body.get("ends_at") is not None:
                ends = parse_time(body["ends_at"], now=now, name="ends_at")
            else:
                ends = starts + parse_duration(body.get("duration", "1h"))
            silence = component.core.make_silence(
                matchers=matchers,
                starts_at=starts,
                ends_at=ends,
                created_by=str(body.get("created_by") or "devbox"),
                comment=str(body.get("comment") or ""),
                now=now,
            )
        except ValueError as exc:
            return error(400, "invalid silence", str(exc))
        component.save_silence(silence)
        return JSONResponse(silence_json(silence, now), status_code=201)

    @router.delete("/silences/{silence_id}")
    async def expire_silence(silence_id: str) -> Any:
        try:
            silence = component.expire_silence(silence_id)
        except KeyError:
            return error(404, "no such silence", f"no silence {silence_id!r}; `devbox alerts silence ls` lists them")
        return silence_json(silence, component.clock())

    return router
