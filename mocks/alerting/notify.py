"""Notifications: Alertmanager's webhook payload (version 4), a terminal line, forwarding upstream.

Payload building is pure; :class:`Notifier` sends in background tasks so a slow receiver never
delays an evaluation. Transitions are grouped per alertname (Alertmanager's ``group_by:
[alertname]``) and each group is one POST per receiver, retried with backoff on connection
errors and 5xx.

Likely causes: when a group has a firing alert and the notifier was given a ``suspects`` lookup (the
alerting component's, through :class:`~devbox.platform.ports.SuspectsPort`), the group waits at most
:data:`SUSPECTS_TIMEOUT` for the ranking of ``devbox why`` and its top :data:`TOP_SUSPECTS` suspects,
each with its one-line reason, go into the terminal line and, as the ``suspects`` annotation, into
each firing alert of the payload; when the ranking is late or fails it is sent without and says so.

LIMITATIONS: no group_wait/group_interval/repeat_interval: a group is sent on the evaluation
that changed it; only webhook receivers (no email, Slack, ...).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from devbox.mocks.alerting.config import WebhookReceiver
from devbox.mocks.alerting.matchers import matches_all, parse_matchers
from devbox.mocks.alerting.models import AlertState, Transition

from devbox.httpcore_loader import load_httpx

if TYPE_CHECKING:
    import httpx

LOG = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"
#: How long a firing notification waits for its likely causes before it goes without them.
SUSPECTS_TIMEOUT = 1.0
TOP_SUSPECTS = 3
#: Labels that name the service an alert is about (else the alert rule is asked about).
SERVICE_LABELS = ("callee", "service", "job", "service_name")
#: A group with more transitions than this gets one terminal line (counts and a few examples), not
#: one line each: 20k posted alerts were 20k log lines written on the loop.
TERMINAL_LINES = 10
#: A receiver's payload for a group with more alerts than this is built on a thread, off the loop.
BUILD_INLINE = 200

Notified = tuple[Transition, float, str]

#: suspects(alertname or service, at) -> ranked suspects (``subject``, ``score``, ``reason``)
SuspectsFn = Callable[[str, float], Awaitable[Sequence[Mapping[str, Any]]]]


#: The times an RFC 3339 answer can carry: years 1 to 9999, in UTC (Unix seconds).
EARLIEST, LATEST = -62135596800.0, 253402300799.0


def check_time(ts: float, name: str, given: object) -> float:
    """``ts`` if an answer can carry it (see :data:`EARLIEST`); ValueError naming ``name`` if not."""
    if not EARLIEST <= ts <= LATEST:
        raise ValueError(f"{name}: {given!r} is out of range (years 1 to 9999 in UTC)")
    return ts


def rfc3339(ts: float | None) -> str:
    if ts is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(maps: list[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def webhook_alert(t: Transition, *, starts_at: float, generator_url: str = "") -> dict[str, Any]:
    resolved = t.to_state is AlertState.RESOLVED
    return {
        "status": "resolved" if resolved else "firing",
        "labels": dict(t.labels),
        "annotations": dict(t.annotations),
        "startsAt": rfc3339(starts_at),
        "endsAt": rfc3339(t.at) if resolved else ZERO_TIME,
        "generatorURL": generator_url,
        "fingerprint": t.fingerprint,
    }


def _target(t: Transition) -> str:
    """What ``devbox why`` is asked about for ``t``: the service it names, else its alert name."""
    return next((t.labels[k] for k in SERVICE_LABELS if t.labels.get(k)), t.alertname)


def _label_text(t: Transition) -> str:
    return "{" + ",".join(f"{k}={v}" for k, v in sorted(t.labels.items()) if k != "alertname") + "}"


def _with_note(alert: dict[str, Any], suspects: str | None) -> dict[str, Any]:
    if suspects is not None:
        alert["annotations"]["suspects"] = suspects
    return alert


def webhook_payload(
    receiver: str, alertname: str, alerts: list[dict[str, Any]], *, external_url: str
) -> dict[str, Any]:
    """The JSON Alertmanager POSTs to a webhook receiver, for one group."""
    labels = [a["labels"] for a in alerts]
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alertname}"}}',
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": {"alertname": alertname},
        "commonLabels": _common(labels),
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }


def upstream_alert(
    labels: dict[str, str],
    annotations: dict[str, str],
    *,
    starts_at: float,
    ends_at: float | None,
    generator_url: str = "",
) -> dict[str, Any]:
    """A postableAlert for a real Alertmanager's ``POST /api/v2/alerts``."""
    body: dict[str, Any] = {"labels": labels, "annotations": annotations, "startsAt": rfc3339(starts_at)}
    if ends_at is not None:
        body["endsAt"] = rfc3339(ends_at)
    if generator_url:
        body["generatorURL"] = generator_url
    return body


class Notifier:
    """Sends notifications for notified transitions; counts deliveries for ``info()``."""

    def __init__(
        self,
        receivers: list[WebhookReceiver],
        *,
        terminal: bool = True,
        upstream: str | None = None,
        external_url: str = "",
    ) -> None:
        self.receivers = receivers
        self._matchers = {r.name: [m for item in r.matchers for m in parse_matchers(item)] for r in receivers}
        self.terminal = terminal
        self.upstream = upstream.rstrip("/") if upstream else None
        self.external_url = external_url
        self.stats = {"sent": 0, "failed": 0, "retries": 0, "forwarded": 0, "forward_failed": 0}
        self._client: httpx.AsyncClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Where likely causes come from (set by the alerting component); None: notifications go without.
        self.suspects: SuspectsFn | None = None
        self.suspects_timeout = SUSPECTS_TIMEOUT

    async def start(self) -> None:
        pass  # the HTTP client is made on the first notification (see _http)

    def _http(self) -> httpx.AsyncClient:
        # Not at start: an httpx client loads the CA bundle (~50 ms of CPU) as it is made, which
        # `devbox up` would pay for a project that never notifies anyone.
        if self._client is None:
            httpx = load_httpx()

            self._client = httpx.AsyncClient()
        return self._client

    async def stop(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3)
        for task in self._tasks:
            task.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def notify(
        self,
        transitions: list[Notified],
        companions: dict[str, list[Notified]] | None = None,
    ) -> None:
        """``(transition, starts_at, generator_url)`` for each notified transition of one evaluation.

        ``companions``: per alertname, the group's other firing (already notified) alerts; like
        Alertmanager, a group's notification lists every alert of the group, not only the new one."""
        if not transitions:
            return
        companions = companions or {}
        groups: dict[str, list[Notified]] = {}
        for item in transitions:
            groups.setdefault(item[0].alertname, []).append(item)
        for alertname, items in groups.items():
            if self.suspects is not None and any(t.to_state is AlertState.FIRING for t, _, _ in items):
                self._spawn(self._with_suspects(alertname, items, companions.get(alertname, [])))
            else:
                self._send_group(alertname, items, companions.get(alertname, []), {})

    async def _with_suspects(self, alertname: str, items: list[Notified],
                             companions: list[Notified]) -> None:
        """Rank each firing alert's likely causes (bounded in time: a notification is not held up
        for long), then send the group with them."""
        firing = [t for t, _, _ in items if t.to_state is AlertState.FIRING]
        # one ranking per service and time, not per alert (20k posted alerts name a few services)
        asked = {(_target(t), t.at): t for t in firing}
        found = await asyncio.gather(*(self._suspects_text(t) for t in asked.values()))
        texts = dict(zip(asked, found, strict=True))
        notes = {t.fingerprint: texts[(_target(t), t.at)] for t in firing}
        self._send_group(alertname, items, companions, notes)

    async def _suspects_text(self, t: Transition) -> str:
        assert self.suspects is not None
        target = _target(t)
        try:
            ranked = await asyncio.wait_for(self.suspects(target, t.at), self.suspects_timeout)
        except TimeoutError:
            return (f"not ranked: devbox why took longer than {self.suspects_timeout:g} s "
                    f"(run `devbox why {t.alertname}`)")
        except Exception as exc:  # the ranking is a courtesy: the notification goes anyway
            LOG.info("ranking the suspects of %s failed", t.alertname, exc_info=True)
            return f"not ranked: {exc}"
        if not ranked:
            return "no suspect: nothing on the failing path changed or stands out"
        return "\n".join(f"{i}. {s['subject']} ({float(s['score']):.2f}): {s['reason']}"
                         for i, s in enumerate(ranked[:TOP_SUSPECTS], 1))

    def _send_group(self, alertname: str, items: list[Notified], companions: list[Notified],
                    notes: dict[str, str]) -> None:
        """One group's terminal lines and one POST per receiver; ``notes``: suspects text by fingerprint."""
        if self.terminal:
            self._terminal(alertname, items, notes)
        for receiver in self.receivers:
            if len(items) + len(companions) <= BUILD_INLINE:
                payload = self._payload(receiver, alertname, items, companions, notes)
                if payload is not None:
                    self._spawn(self._post(receiver, payload))
            else:
                self._spawn(self._build_and_post(receiver, alertname, items, companions, notes))

    def _terminal(self, alertname: str, items: list[Notified], notes: dict[str, str]) -> None:
        if len(items) > TERMINAL_LINES:
            resolved = sum(1 for t, _, _ in items if t.to_state is AlertState.RESOLVED)
            LOG.warning("ALERT %s: %d alerts changed (%d firing, %d resolved), e.g. %s (`devbox alerts ls` lists them)",
                        alertname, len(items), len(items) - resolved, resolved,
                        " ".join(_label_text(t) for t, _, _ in items[:3]))
            return
        for t, _, _ in items:
            LOG.warning(
                "ALERT %s %s%s value=%s %s%s",
                "RESOLVED" if t.to_state is AlertState.RESOLVED else "FIRING",
                alertname,
                _label_text(t),
                "-" if t.value is None else f"{t.value:.4g}",
                t.annotations.get("summary", ""),
                "\n  likely causes:\n  " + notes[t.fingerprint].replace("\n", "\n  ")
                if t.fingerprint in notes else "",
            )

    def _payload(self, receiver: WebhookReceiver, alertname: str, items: list[Notified],
                 companions: list[Notified], notes: dict[str, str]) -> dict[str, Any] | None:
        """The webhook body of one group for one receiver (None: no alert of it goes there)."""
        chosen = [
            _with_note(webhook_alert(t, starts_at=s, generator_url=g), notes.get(t.fingerprint))
            for t, s, g in items
            if matches_all(self._matchers[receiver.name], t.labels)
            and (receiver.send_resolved or t.to_state is not AlertState.RESOLVED)
        ]
        if not chosen:
            return None
        chosen += [
            webhook_alert(t, starts_at=s, generator_url=g)
            for t, s, g in companions
            if matches_all(self._matchers[receiver.name], t.labels)
        ]
        return webhook_payload(receiver.name, alertname, chosen, external_url=self.external_url)

    async def _build_and_post(self, receiver: WebhookReceiver, alertname: str, items: list[Notified],
                              companions: list[Notified], notes: dict[str, str]) -> None:
        # transitions are not changed once made: a big group's payload is built on a thread
        payload = await asyncio.to_thread(self._payload, receiver, alertname, items, companions, notes)
        if payload is not None:
            await self._post(receiver, payload)

    async def _post(self, receiver: WebhookReceiver, payload: dict[str, Any]) -> None:
        httpx = load_httpx()

        client = self._http()
        delay = 0.2
        for attempt in range(receiver.max_retries + 1):
            try:
                r = await client.post(receiver.url, json=payload, timeout=receiver.timeout)
                if r.status_code < 500:
                    if r.status_code >= 400:
                        LOG.warning(
                            "webhook %s refused the notification: %s %s", receiver.name, r.status_code, r.text[:200]
                        )
                        self.stats["failed"] += 1
                    else:
                        self.stats["sent"] += 1
                    return
                reason = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if attempt < receiver.max_retries:
                self.stats["retries"] += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        LOG.warning("webhook %s: giving up after %d attempts (%s)", receiver.name, receiver.max_retries + 1, reason)
        self.stats["failed"] += 1

    def forward(self, alerts: list[dict[str, Any]]) -> None:
        """POST postableAlerts to the upstream Alertmanager, if one is configured."""
        if self.upstream and alerts:
            self._spawn(self._forward(alerts))

    async def _forward(self, alerts: list[dict[str, Any]]) -> None:
        httpx = load_httpx()

        try:
            r = await self._http().post(f"{self.upstream}/api/v2/alerts", json=alerts, timeout=5.0)
            r.raise_for_status()
            self.stats["forwarded"] += len(alerts)
        except httpx.HTTPError as exc:
            self.stats["forward_failed"] += len(alerts)
            LOG.warning("forwarding %d alerts to %s failed: %s", len(alerts), self.upstream, exc)
