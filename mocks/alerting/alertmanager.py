"""Alertmanager API v2 subset on the ``alertmanager`` listener, so ``amtool`` works against devbox.

Served: ``/api/v2/status``, ``/receivers``, ``/alerts`` GET/POST, ``/alerts/groups``,
``/silences`` GET/POST, ``/silence/{id}`` GET/DELETE, plus ``/-/healthy`` and ``/-/ready``.
Shapes follow the official OpenAPI file (gettableAlert, gettableSilence, alertmanagerStatus).
Handlers refuse with :mod:`devbox.platform.errors`; :func:`render_error` is this listener's error
shape: a JSON string body with the 4xx status, as Alertmanager answers.

LIMITATIONS: no clustering (cluster status ``disabled``), no inhibition (``inhibitedBy`` is
always empty), groups are per receiver and alertname only, no ``/api/v2/alerts`` ``receiver``
routing tree beyond each webhook receiver's own matchers.
"""

from __future__ import annotations

import asyncio
import json
import re
from datetime import datetime
from typing import Any

from devbox.mocks.alerting.config import WebhookReceiver
from devbox.mocks.alerting.http import decode_json, read_json, refused
from devbox.mocks.alerting.matchers import matcher_from_api, matches_all, parse_filters, parse_matchers
from devbox.mocks.alerting.models import LABEL_NAME, Alert, AlertState, Matcher, Silence, SilenceState, fingerprint
from devbox.mocks.alerting.notify import check_time, rfc3339
from devbox.mocks.alerting.service import AlertingService
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

import devbox
from devbox.platform.errors import ApiError, NotFound
from devbox.regex import compile_re2

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}

#: The Alertmanager release whose API v2 this imitates (amtool compares it with its own version).
AM_API_VERSION = "0.25.0"
#: Alertmanager's silence states, in the order it lists them.
_SILENCE_ORDER = {SilenceState.ACTIVE: 0, SilenceState.PENDING: 1, SilenceState.EXPIRED: 2}


def render_error(exc: ApiError) -> Response:
    """A refused request as Alertmanager answers one: the reason as a JSON string, with the status."""
    return JSONResponse(exc.reason, status_code=exc.status)


# --- reading requests (ValueError says what is wrong; handlers refuse it as a 400) ------------


def _bool(request: Request, name: str, default: bool = True) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ValueError(f"{name}: {raw!r} is not a boolean (true or false)")


def _filters(request: Request) -> list[Matcher]:
    try:
        return parse_filters(request.query_params.getlist("filter"))
    except ValueError as exc:
        raise ValueError(f"bad filter: {exc}") from None


def _receiver_regex(request: Request) -> Any:
    raw = request.query_params.get("receiver")
    if not raw:
        return None
    try:
        return compile_re2(raw)
    except ValueError as exc:
        raise ValueError(f"receiver: bad regex {raw!r}: {exc}") from None


def _time(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be an RFC 3339 date-time string")
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{name}: {value!r} is not an RFC 3339 date-time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{name}: {value!r} has no time zone (add Z or an offset)")
    if parsed.year <= 1:
        return None  # Go's zero time: what amtool sends for "not set"
    return check_time(parsed.timestamp(), name, value)


def _label_set(value: Any, name: str, *, check_names: bool) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be an object of string values")
    for key, item in value.items():
        if not isinstance(item, str):
            raise ValueError(f"{name}.{key} must be a string")
        if check_names and not LABEL_NAME.match(key):
            raise ValueError(f"{name}: invalid label name {key!r}")
    return dict(value)


def postable_alerts(body: Any, now: float) -> list[dict[str, Any]]:
    """A ``postableAlerts`` body as the core's posted alerts; the whole batch is refused on any error."""
    if not isinstance(body, list):
        raise ValueError("the body is a JSON array of postableAlert objects")
    parsed = []
    for i, item in enumerate(body):
        if not isinstance(item, dict):
            raise ValueError(f"alert {i}: must be an object with labels")
        labels = _label_set(item.get("labels"), f"alert {i}: labels", check_names=True)
        if not labels:
            raise ValueError(f"alert {i}: labels must not be empty")
        starts = _time(item.get("startsAt"), f"alert {i}: startsAt")
        ends = _time(item.get("endsAt"), f"alert {i}: endsAt")
        if starts is not None and ends is not None and ends < starts:
            raise ValueError(f"alert {i}: endsAt is before startsAt")
        generator = item.get("generatorURL") or ""
        if not isinstance(generator, str):
            raise ValueError(f"alert {i}: generatorURL must be a string")
        parsed.append(
            {
                "labels": labels,
                "fingerprint": fingerprint(labels),  # here, on the request's thread, not on the loop
                "annotations": _label_set(item.get("annotations"), f"alert {i}: annotations", check_names=False),
                "starts_at": min(starts, now) if starts is not None else None,
                "ends_at": ends,
                "generator_url": generator,
            }
        )
    return parsed


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def _skip(text: str, i: int) -> int:
    """The index of the first character at or after ``i`` that is not JSON whitespace."""
    found = _SPACE.match(text, i)
    return found.end() if found is not None else i


def _json_array(raw: bytes) -> list[Any] | None:
    """A JSON array decoded one element at a time, or None when ``raw`` is not a well-formed array.

    ``json.loads`` holds the GIL for the whole body (a 2 MB, 20k-alert POST: ~50 ms of CPU, 100+ ms
    on a busy machine), and this runs on a thread beside the loop: element by element, the loop
    gets its turn in between."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        return None
    i = _skip(text, 0)
    if text[i:i + 1] != "[":
        return None
    out: list[Any] = []
    i = _skip(text, i + 1)
    if text[i:i + 1] == "]":
        return out if _skip(text, i + 1) == len(text) else None
    while True:
        try:
            item, i = _DECODER.raw_decode(text, i)
        except (ValueError, RecursionError):
            return None
        out.append(item)
        i = _skip(text, i)
        if text[i:i + 1] == ",":
            i = _skip(text, i + 1)
            continue
        return out if text[i:i + 1] == "]" and _skip(text, i + 1) == len(text) else None


def _posted_alerts(raw: bytes, now: float) -> list[dict[str, Any]]:
    body = _json_array(raw)
    if body is None:  # not an array, or malformed: the one reading (and its error message) of every body
        body = decode_json(raw, required=False)
    return postable_alerts(body, now)


def _empty_ok() -> Response:
    """Alertmanager's bodiless 200 (POST /alerts, DELETE /silence), with a Content-Type like every
    other answer of this API, so clients and conformance checks that read it are not left guessing."""
    return Response(b"", status_code=200, media_type="application/json")


def postable_silence(body: Any, service: AlertingService, now: float) -> Silence:
    """A ``postableSilence`` as a validated silence (not stored yet); an unknown ``id`` is a 404."""
    if not isinstance(body, dict):
        raise ValueError("the body is a postableSilence object")
    raw = body.get("matchers")
    if not isinstance(raw, list) or not raw:
        raise ValueError("matchers: at least one matcher is required")
    try:
        matchers = [matcher_from_api(m) for m in raw]
    except ValueError as exc:
        raise ValueError(f"matchers: {exc}") from None
    for name in ("createdBy", "comment"):
        if not isinstance(body.get(name), str):
            raise ValueError(f"{name} is required (a string)")
    starts = _time(body.get("startsAt"), "startsAt")
    ends = _time(body.get("endsAt"), "endsAt")
    if starts is None or ends is None:
        raise ValueError("startsAt and endsAt are required")
    silence_id = body.get("id") or None
    if silence_id is not None and not isinstance(silence_id, str):
        raise ValueError("id must be a string")
    try:
        return service.core.make_silence(
            matchers=matchers,
            starts_at=starts,
            ends_at=ends,
            created_by=body["createdBy"],
            comment=body["comment"],
            now=now,
            silence_id=silence_id,
        )
    except KeyError:
        raise NotFound(f"silence {silence_id} not found") from None
    except ValueError as exc:
        raise ValueError(f"invalid silence: {exc}") from None


# --- response shapes ----------------------------------------------------------------------------


def _receiver_matches(receiver: WebhookReceiver, labels: dict[str, str]) -> bool:
    return matches_all([m for item in receiver.matchers for m in parse_matchers(item)], labels)


def receivers_of(service: AlertingService, labels: dict[str, str]) -> list[dict[str, str]]:
    config = service.config
    out = [{"name": r.name} for r in config.receivers if r.name and _receiver_matches(r, labels)]
    if config.terminal or not out:
        out.append({"name": "terminal"})
    return out


def gettable_alert(service: AlertingService, alert: Alert, now: float) -> dict[str, Any]:
    silenced = service.core.silenced_by(alert.labels, now)
    if alert.ends_at is not None:
        ends = alert.ends_at
    elif alert.state is AlertState.RESOLVED:
        ends = alert.resolved_at or now
    else:
        ends = max(alert.last_seen, now) + max(4 * service.config.interval, 60.0)
    body: dict[str, Any] = {
        "labels": alert.labels,
        "annotations": alert.annotations,
        "receivers": receivers_of(service, alert.labels),
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
    generator = alert.generator_url or service.generator_url(alert.rule_id)
    if generator:
        body["generatorURL"] = generator
    return body


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


def status_body(service: AlertingService) -> dict[str, Any]:
    receivers = "".join(f"- name: {r.name}\n  webhook_configs:\n  - url: {r.url}\n" for r in service.config.receivers)
    original = "# devbox alerting (Alertmanager API v2 subset)\nroute:\n  receiver: terminal\n  group_by: [alertname]\n"
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
        "uptime": rfc3339(service.started_at),
    }


def alert_groups(alerts: list[dict[str, Any]], *, muted: bool) -> list[dict[str, Any]]:
    """Gettable alerts grouped per receiver and alertname (groups of only silenced alerts unless ``muted``)."""
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for alert in alerts:
        for receiver in alert["receivers"]:
            key = (receiver["name"], alert["labels"].get("alertname", ""))
            grouped.setdefault(key, []).append(alert)
    out = []
    for (receiver, alertname), items in sorted(grouped.items()):
        if not muted and all(a["status"]["silencedBy"] for a in items):
            continue
        out.append(
            {"labels": {"alertname": alertname}, "routeLabels": {}, "receiver": {"name": receiver}, "alerts": items}
        )
    return out


class AlertmanagerApi:
    """The Alertmanager API v2 handlers over one :class:`AlertingService`."""

    def __init__(self, service: AlertingService) -> None:
        self.service = service

    def _selected_alerts(self, request: Request) -> list[dict[str, Any]]:
        with refused():
            active = _bool(request, "active")
            silenced = _bool(request, "silenced")
            _bool(request, "inhibited")
            _bool(request, "unprocessed")
            filters = _filters(request)
            receiver = _receiver_regex(request)
        now = self.service.clock()
        out = []
        for alert in self.service.core.alerts():
            if not matches_all(filters, alert.labels):
                continue
            item = gettable_alert(self.service, alert, now)
            muted = bool(item["status"]["silencedBy"])
            if (not active and not muted) or (not silenced and muted):
                continue
            if receiver and not any(receiver.fullmatch(r["name"]) for r in item["receivers"]):
                continue
            out.append(item)
        return sorted(out, key=lambda a: (a["labels"].get("alertname", ""), a["fingerprint"]))

    async def healthy(self) -> Response:
        return Response("OK\n", media_type="text/plain")

    async def status(self) -> Any:
        return status_body(self.service)

    async def receivers(self) -> Any:
        return [{"name": "terminal"}] + [{"name": r.name} for r in self.service.config.receivers]

    async def get_alerts(self, request: Request) -> Any:
        return self._selected_alerts(request)

    async def post_alerts(self, request: Request) -> Any:
        raw = await request.body()
        with refused():
            # decoding and checking 20k alerts takes ~0.3 s: on a thread, the loop keeps answering
            parsed = await asyncio.to_thread(_posted_alerts, raw, self.service.clock())
        await self.service.post_alerts(parsed)
        return _empty_ok()

    async def groups(self, request: Request) -> Any:
        with refused():
            muted = _bool(request, "muted")
        return alert_groups(self._selected_alerts(request), muted=muted)

    async def get_silences(self, request: Request) -> Any:
        with refused():
            filters = _filters(request)
            wanted = {state: _bool(request, state.value) for state in _SILENCE_ORDER}
        now = self.service.clock()
        out = []
        for s in self.service.core.silences.values():
            if not wanted[s.state(now)]:
                continue
            by_name = {m.name: m.value for m in s.matchers}
            if all(f.name in by_name and f.matches({f.name: by_name[f.name]}) for f in filters):
                out.append(s)
        # Alertmanager's order: active first, then pending, then expired; newest end first within.
        out.sort(key=lambda s: (_SILENCE_ORDER[s.state(now)], -s.ends_at))
        return [gettable_silence(s, now) for s in out]

    async def post_silence(self, request: Request) -> Any:
        with refused():
            silence = postable_silence(await read_json(request, required=False), self.service, self.service.clock())
        self.service.save_silence(silence)
        return {"silenceID": silence.id}

    def _silence(self, silence_id: str) -> Silence:
        silence = self.service.core.silences.get(silence_id)
        if silence is None:
            raise NotFound(f"silence {silence_id} not found")
        return silence

    async def get_silence(self, silence_id: str) -> Any:
        return gettable_silence(self._silence(silence_id), self.service.clock())

    async def delete_silence(self, silence_id: str) -> Any:
        self.service.expire_silence(self._silence(silence_id).id)
        return _empty_ok()

    def router(self) -> APIRouter:
        r = APIRouter(tags=["alertmanager"])
        routes: list[tuple[str, str, Any]] = [
            ("GET", "/-/healthy", self.healthy),
            ("GET", "/-/ready", self.healthy),
            ("GET", "/api/v2/status", self.status),
            ("GET", "/api/v2/receivers", self.receivers),
            ("GET", "/api/v2/alerts", self.get_alerts),
            ("POST", "/api/v2/alerts", self.post_alerts),
            ("GET", "/api/v2/alerts/groups", self.groups),
            ("GET", "/api/v2/silences", self.get_silences),
            ("POST", "/api/v2/silences", self.post_silence),
            ("GET", "/api/v2/silence/{silence_id}", self.get_silence),
            ("DELETE", "/api/v2/silence/{silence_id}", self.delete_silence),
        ]
        for method, path, handler in routes:
            r.add_api_route(path, handler, methods=[method])
        return r


__all__ = ["AM_API_VERSION", "AlertmanagerApi", "render_error"]
