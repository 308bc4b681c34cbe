"""Alertmanager API v2 subset on the ``alertmanager`` listener, so ``amtool`` works against devbox.

Served: ``/api/v2/status``, ``/receivers``, ``/alerts`` GET/POST, ``/alerts/groups``,
``/silences`` GET/POST, ``/silence/{id}`` GET/DELETE, plus ``/-/healthy`` and ``/-/ready``.
Shapes follow the official OpenAPI file (gettableAlert, gettableSilence, alertmanagerStatus);
errors are a JSON string body with a 4xx status, as Alertmanager answers.

LIMITATIONS: no clustering (cluster status ``disabled``), no inhibition (``inhibitedBy`` is
always empty), groups are per receiver and alertname only, no ``/api/v2/alerts`` ``receiver``
routing tree beyond each webhook receiver's own matchers.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from devbox.mocks.alerting.matchers import matcher_from_api, matches_all, parse_filters
from devbox.mocks.alerting.models import LABEL_NAME, Alert, AlertState, Silence, SilenceState
from devbox.mocks.alerting.notify import rfc3339
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import devbox

if TYPE_CHECKING:
    from devbox.mocks.alerting.component import AlertingComponent

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


#: The Alertmanager release whose API v2 this imitates (amtool compares it with its own version).
AM_API_VERSION = "0.25.0"


class BadRequest(ValueError):
    pass


def bad(reason: str, status: int = 400) -> JSONResponse:
    return JSONResponse(reason, status_code=status)


def _bool(request: Request, name: str, default: bool = True) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise BadRequest(f"{name}: {raw!r} is not a boolean (true or false)")


def _filters(request: Request) -> list[Any]:
    try:
        return parse_filters(request.query_params.getlist("filter"))
    except ValueError as exc:
        raise BadRequest(f"bad filter: {exc}") from None


def _receiver_regex(request: Request) -> re.Pattern[str] | None:
    raw = request.query_params.get("receiver")
    if not raw:
        return None
    try:
        return re.compile(raw)
    except re.error as exc:
        raise BadRequest(f"receiver: bad regex: {exc}") from None


def _time(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{name}: {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"{name}: {value!r} has no time zone (add Z or an offset)")
    if parsed.year <= 1:
        return None  # Go's zero time: what amtool sends for "not set"
    return parsed.timestamp()


def _label_set(value: Any, name: str, *, check_names: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{name} must be an object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            raise BadRequest(f"{name}.{key} must be a string")
        if check_names and not LABEL_NAME.match(key):
            raise BadRequest(f"{name}: invalid label name {key!r}")
    return dict(value)


def alertmanager_router(component: AlertingComponent) -> APIRouter:
    router = APIRouter(tags=["alertmanager"])

    def receivers_of(labels: dict[str, str]) -> list[dict[str, str]]:
        out = [{"name": r.name} for r in component.config.receivers if r.name and _receiver_matches(r, labels)]
        if component.config.terminal or not out:
            out.append({"name": "terminal"})
        return out

    def _receiver_matches(receiver: Any, labels: dict[str, str]) -> bool:
        from devbox.mocks.alerting.matchers import parse_matchers

        return matches_all([m for item in receiver.matchers for m in parse_matchers(item)], labels)

    def gettable_alert(alert: Alert, now: float) -> dict[str, Any]:
        silenced = component.core.silenced_by(alert.labels, now)
        if alert.ends_at is not None:
            ends = alert.ends_at
        elif alert.state is AlertState.RESOLVED:
            ends = alert.resolved_at or now
        else:
            ends = max(alert.last_seen, now) + max(4 * component.config.interval, 60.0)
        body: dict[str, Any] = {
            "labels": alert.labels,
            "annotations": alert.annotations,
            "receivers": receivers_of(alert.labels),
            "fingerprint": alert.fingerprint,
            "startsAt": rfc3339(alert.fired_at or alert.active_at),
            "updatedAt": rfc3339(alert.last_seen or now),
            "endsAt": rfc3339(ends),
            "status": {
                "state": "suppressed" if silenced else "active",
                "silencedBy": silenced,
                "inhibitedBy": [],
                "mutedBy": [],
            },
        }
        generator = alert.generator_url or component._generator_url(alert.rule_id)
        if generator:
            body["generatorURL"] = generator
        return body

    def selected_alerts(request: Request) -> list[dict[str, Any]]:
        active = _bool(request, "active")
        silenced = _bool(request, "silenced")
        _bool(request, "inhibited")
        _bool(request, "unprocessed")
        filters = _filters(request)
        receiver = _receiver_regex(request)
        now = component.clock()
        out = []
        for alert in component.core.alerts():
            if not matches_all(filters, alert.labels):
                continue
            item = gettable_alert(alert, now)
            muted = bool(item["status"]["silencedBy"])
            if not active and not muted:
                continue
            if not silenced and muted:
                continue
            if receiver and not any(receiver.fullmatch(r["name"]) for r in item["receivers"]):
                continue
            out.append(item)
        return sorted(out, key=lambda a: (a["labels"].get("alertname", ""), a["fingerprint"]))

    def gettable_silence(s: Silence, now: float) -> dict[str, Any]:
        return {
            "id": s.id,
            "status": {"state": s.state(now).value},
            "updatedAt": rfc3339(s.updated_at),
            "matchers": [m.to_api() for m in s.matchers],
            "startsAt": rfc3339(s.starts_at),
            "endsAt": rfc3339(s.ends_at),
            "createdBy": s.created_by,
            "comment": s.comment,
            "annotations": {},
        }

    @router.get("/-/healthy")
    @router.get("/-/ready")
    async def healthy() -> Response:
        return Response("OK\n", media_type="text/plain")

    @router.get("/api/v2/status")
    async def status() -> Any:
        receivers = "".join(
            f"- name: {r.name}\n  webhook_configs:\n  - url: {r.url}\n" for r in component.config.receivers
        )
        original = (
            "# devbox alerting (Alertmanager API v2 subset)\nroute:\n  receiver: terminal\n  group_by: [alertname]\n"
        )
        original += "receivers:\n- name: terminal\n" + receivers
        return {
            "cluster": {"name": "devbox", "status": "disabled", "peers": []},
            "versionInfo": {
                # The Alertmanager API level imitated; amtool warns when it differs from its own.
                "version": AM_API_VERSION,
                "revision": f"devbox-{devbox.__version__}",
                "branch": "main",
                "buildUser": "devbox",
                "buildDate": "",
                "goVersion": "none",
            },
            "config": {"original": original},
            "uptime": rfc3339(component.started_at),
        }

    @router.get("/api/v2/receivers")
    async def receivers() -> Any:
        names = [{"name": "terminal"}] + [{"name": r.name} for r in component.config.receivers]
        return names

    @router.get("/api/v2/alerts")
    async def get_alerts(request: Request) -> Any:
        try:
            return selected_alerts(request)
        except BadRequest as exc:
            return bad(str(exc))

    @router.post("/api/v2/alerts")
    async def post_alerts(request: Request) -> Any:
        try:
            raw = await request.body()
            try:
                body = json.loads(raw or b"null")
            except ValueError as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            if not isinstance(body, list):
                raise BadRequest("the body is a JSON array of postableAlert objects")
            now = component.clock()
            parsed = []
            for i, item in enumerate(body):
                if not isinstance(item, dict):
                    raise BadRequest(f"alert {i}: must be an object with labels")
                labels = _label_set(item.get("labels"), f"alert {i}: labels", check_names=True)
                if not labels:
                    raise BadRequest(f"alert {i}: labels must not be empty")
                starts = _time(item.get("startsAt"), f"alert {i}: startsAt")
                ends = _time(item.get("endsAt"), f"alert {i}: endsAt")
                if starts is not None and ends is not None and ends < starts:
                    raise BadRequest(f"alert {i}: endsAt is before startsAt")
                generator = item.get("generatorURL") or ""
                if not isinstance(generator, str):
                    raise BadRequest(f"alert {i}: generatorURL must be a string")
                parsed.append(
                    {
                        "labels": labels,
                        "annotations": _label_set(
                            item.get("annotations"), f"alert {i}: annotations", check_names=False
                        ),
                        "starts_at": min(starts, now) if starts is not None else None,
                        "ends_at": ends,
                        "generator_url": generator,
                    }
                )
        except BadRequest as exc:
            return bad(str(exc))
        await component.post_alerts(parsed)
        return Response(status_code=200)

    @router.get("/api/v2/alerts/groups")
    async def groups(request: Request) -> Any:
        try:
            muted_ok = _bool(request, "muted")
            alerts = selected_alerts(request)
        except BadRequest as exc:
            return bad(str(exc))
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for alert in alerts:
            for receiver in alert["receivers"]:
                key = (receiver["name"], alert["labels"].get("alertname", ""))
                grouped.setdefault(key, []).append(alert)
        out = []
        for (receiver, alertname), items in sorted(grouped.items()):
            if not muted_ok and all(a["status"]["silencedBy"] for a in items):
                continue
            out.append(
                {
                    "labels": {"alertname": alertname},
                    "routeLabels": {},
                    "receiver": {"name": receiver},
                    "alerts": items,
                }
            )
        return out

    @router.get("/api/v2/silences")
    async def get_silences(request: Request) -> Any:
        try:
            filters = _filters(request)
            wanted = {
                SilenceState.ACTIVE: _bool(request, "active"),
                SilenceState.EXPIRED: _bool(request, "expired"),
                SilenceState.PENDING: _bool(request, "pending"),
            }
        except BadRequest as exc:
            return bad(str(exc))
        now = component.clock()
        out = []
        for s in component.core.silences.values():
            if not wanted[s.state(now)]:
                continue
            by_name = {m.name: m.value for m in s.matchers}
            if not all(f.name in by_name and f.matches({f.name: by_name[f.name]}) for f in filters):
                continue
            out.append(s)
        # Alertmanager's order: active first, then pending, then expired; newest end first within.
        order = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}
        out.sort(key=lambda s: (order[s.state(now)], -s.ends_at))
        return [gettable_silence(s, now) for s in out]

    @router.post("/api/v2/silences")
    async def post_silence(request: Request) -> Any:
        now = component.clock()
        try:
            try:
                body = json.loads(await request.body() or b"null")
            except ValueError as exc:
                raise BadRequest(f"the body is not valid JSON: {exc}") from None
            if not isinstance(body, dict):
                raise BadRequest("the body is a postableSilence object")
            raw = body.get("matchers")
            if not isinstance(raw, list) or not raw:
                raise BadRequest("matchers: at least one matcher is required")
            try:
                matchers = [matcher_from_api(m) for m in raw]
            except ValueError as exc:
                raise BadRequest(f"matchers: {exc}") from None
            for name in ("createdBy", "comment"):
                if not isinstance(body.get(name), str):
                    raise BadRequest(f"{name} is required (a string)")
            starts = _time(body.get("startsAt"), "startsAt")
            ends = _time(body.get("endsAt"), "endsAt")
            if starts is None or ends is None:
                raise BadRequest("startsAt and endsAt are required")
            silence_id = body.get("id") or None
            if silence_id is not None and not isinstance(silence_id, str):
                raise BadRequest("id must be a string")
            try:
                silence = component.core.make_silence(
                    matchers=matchers,
                    starts_at=starts,
                    ends_at=ends,
                    created_by=body["createdBy"],
                    comment=body["comment"],
                    now=now,
                    silence_id=silence_id,
                )
            except KeyError:
                return bad(f"silence {silence_id} not found", 404)
            except ValueError as exc:
                raise BadRequest(f"invalid silence: {exc}") from None
        except BadRequest as exc:
            return bad(str(exc))
        component.save_silence(silence)
        return {"silenceID": silence.id}

    @router.get("/api/v2/silence/{silence_id}")
    async def get_silence(silence_id: str) -> Any:
        silence = component.core.silences.get(silence_id)
        if silence is None:
            return bad(f"silence {silence_id} not found", 404)
        return gettable_silence(silence, component.clock())

    @router.delete("/api/v2/silence/{silence_id}")
    async def delete_silence(silence_id: str) -> Any:
        if silence_id not in component.core.silences:
            return bad(f"silence {silence_id} not found", 404)
        component.expire_silence(silence_id)
        return Response(status_code=200)

    return router
