"""Webhook payload building (Alertmanager's version 4 shape) without sockets."""

from __future__ import annotations

from devbox.mocks.alerting.models import AlertState, Transition, fingerprint
from devbox.mocks.alerting.notify import ZERO_TIME, rfc3339, upstream_alert, webhook_alert, webhook_payload


def transition(service: str, to: AlertState, at: float = 100.0) -> Transition:
    labels = {"alertname": "Low", "service": service, "severity": "page"}
    return Transition(
        rule_id="g/Low",
        alertname="Low",
        labels=labels,
        annotations={"summary": f"{service} low", "runbook": "http://wiki/low"},
        from_state=AlertState.PENDING if to is AlertState.FIRING else AlertState.FIRING,
        to_state=to,
        at=at,
        value=1.0,
        fingerprint=fingerprint(labels),
    )


def test_payload_shape_and_common_parts() -> None:
    firing = webhook_alert(transition("orders", AlertState.FIRING), starts_at=90.0, generator_url="http://p/graph")
    resolved = webhook_alert(transition("payment", AlertState.RESOLVED, at=120.0), starts_at=80.0)
    assert firing["endsAt"] == ZERO_TIME and firing["startsAt"] == rfc3339(90.0) == "1970-01-01T00:01:30.000Z"
    assert resolved["status"] == "resolved" and resolved["endsAt"] == rfc3339(120.0)
    payload = webhook_payload("ops", "Low", [firing, resolved], external_url="http://devbox:9093")
    assert payload["version"] == "4" and payload["status"] == "firing"
    assert payload["groupKey"] == '{}:{alertname="Low"}' and payload["groupLabels"] == {"alertname": "Low"}
    assert payload["commonLabels"] == {"alertname": "Low", "severity": "page"}
    assert payload["commonAnnotations"] == {"runbook": "http://wiki/low"}
    assert payload["truncatedAlerts"] == 0 and payload["externalURL"] == "http://devbox:9093"
    only_resolved = webhook_payload("ops", "Low", [resolved], external_url="")
    assert only_resolved["status"] == "resolved"


def test_upstream_alert_is_a_postable_alert() -> None:
    body = upstream_alert({"alertname": "A"}, {}, starts_at=0.0, ends_at=None)
    assert body == {"labels": {"alertname": "A"}, "annotations": {}, "startsAt": "1970-01-01T00:00:00.000Z"}
    assert upstream_alert({"a": "b"}, {}, starts_at=0, ends_at=60, generator_url="u")["endsAt"].startswith("1970")
