"""A firing notification names its likely causes (devbox why's top 3), within a bounded wait."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from devbox.mocks.alerting.config import WebhookReceiver
from devbox.mocks.alerting.models import AlertState, Transition
from devbox.mocks.alerting.notify import Notifier

SUSPECTS = [{"subject": f"s{i}", "score": 1 - i / 10, "reason": f"reason {i}"} for i in range(5)]


def _transition(to: AlertState, labels: dict[str, str]) -> Transition:
    return Transition(rule_id="r", alertname="ShopSuccessRateLow", labels={"alertname": "ShopSuccessRateLow", **labels},
                      annotations={"summary": "low"}, from_state=AlertState.PENDING, to_state=to, at=time.time(),
                      value=80.0, fingerprint="fp-" + to.value)


async def _send(suspects: Any, to: AlertState = AlertState.FIRING) -> tuple[list[dict[str, Any]], list[str], float]:
    """The payloads the receiver got, the targets asked about, and how long until the first arrived."""
    received: list[dict[str, Any]] = []
    asked: list[str] = []
    got = asyncio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(request.content))
        got.set()
        return httpx.Response(200)

    async def ask(target: str, at: float) -> Sequence[Mapping[str, Any]]:
        asked.append(target)
        return await suspects(target, at)

    notifier = Notifier([WebhookReceiver(name="hook", url="http://hook.invalid/")], terminal=False)
    notifier._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    notifier.suspects = ask
    notifier.suspects_timeout = 0.3
    start = time.monotonic()
    notifier.notify([(_transition(to, {"callee": "payment"}), time.time(), "")])
    await asyncio.wait_for(got.wait(), 5)
    took = time.monotonic() - start
    await notifier.stop()
    return received, asked, took


def test_firing_notification_lists_the_top_three_suspects() -> None:
    async def ranked(target: str, at: float) -> list[dict[str, Any]]:
        return SUSPECTS

    [payload], asked, _ = asyncio.run(_send(ranked))
    assert asked == ["payment"]  # the service the alert is about, from its callee label
    note = payload["alerts"][0]["annotations"]["suspects"]
    assert note.splitlines() == ["1. s0 (1.00): reason 0", "2. s1 (0.90): reason 1", "3. s2 (0.80): reason 2"]


def test_a_slow_ranking_does_not_hold_the_notification_and_says_so() -> None:
    async def slow(target: str, at: float) -> list[dict[str, Any]]:
        await asyncio.sleep(30)
        return SUSPECTS

    [payload], _, took = asyncio.run(_send(slow))
    assert took < 2, took
    assert payload["alerts"][0]["annotations"]["suspects"].startswith("not ranked: devbox why took longer than 0.3 s")


def test_a_resolved_notification_asks_for_nothing() -> None:
    async def ranked(target: str, at: float) -> list[dict[str, Any]]:
        return SUSPECTS

    [payload], asked, _ = asyncio.run(_send(ranked, AlertState.RESOLVED))
    assert asked == [] and "suspects" not in payload["alerts"][0]["annotations"]
