"""Bring a snapshot back into a running platform (one with no services), for inspection.

Everything goes through the platform's public APIs, as a user's scripts would:

- registry: services and instances through ``POST /api/naming/services|instances`` (registered
  without heartbeat checks, so they stay listed: weight, isolation, tags and ids as recorded, and
  healthy — an instance unhealthy when the snapshot was taken is marked so only in the file), routing
  rules through ``POST /api/naming/rules``;
- spans re-sent to the Zipkin listener (``POST /api/v2/spans``): the trace views, topology and
  root cause work on them, and the metrics component derives its span metrics from them again
  (``rpc_server_requests_total`` and the 007 indicators) at the spans' own times;
- alert rules through ``POST /api/alerts/rules`` (also those devbox.yaml had declared), silences
  through ``POST /api/alerts/silences``.

Read-only, kept in the file and shown by ``devbox snapshot show``: the alert transitions, deploy
events and releases of the window (no API writes history), the fault rules that were in effect
(not re-armed: there is no instance behind them) and the raw metric samples (the OTLP and custom
metrics of the services are not re-ingested; the span-derived ones come back from the spans).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx

from devbox.snapshot.format import Evidence

LOG = logging.getLogger(__name__)

SPAN_BATCH = 500


def restore(ev: Evidence, api: httpx.Client, zipkin: str) -> dict[str, Any]:
    """Write ``ev``'s registry, rules, spans, alert rules and silences into the platform at ``api``;
    returns counts, and the refusals (what the platform said) instead of stopping at the first."""
    done: dict[str, Any] = {"services": 0, "instances": 0, "routing_rules": 0, "spans": 0, "alert_rules": 0,
                            "silences": 0, "refused": []}

    def post(what: str, url: str, body: Any) -> bool:
        response = api.post(url, json=body)
        if response.status_code >= 400:
            done["refused"].append(f"{what}: {response.status_code} {response.text[:200]}")
            return False
        return True

    for s in ev.services:
        body = {"namespace": s.get("namespace", "default"), "name": s["name"], "owners": s.get("owners") or "devbox",
                "comment": s.get("comment") or "", "metadata": s.get("metadata") or {}}
        done["services"] += post(f"service {s['name']}", "/api/naming/services", body)
    for i in ev.instances:
        body = {k: i[k] for k in ("namespace", "service", "host", "port", "protocol", "version", "weight",
                                  "metadata", "isolated", "id") if i.get(k) is not None}
        body["health_check"] = False
        done["instances"] += post(f"instance {i.get('service')}/{i.get('id')}", "/api/naming/instances", body)
    for r in ev.routing_rules:
        body = {k: v for k, v in r.items() if k not in ("revision", "created", "updated", "ctime", "mtime", "id")}
        done["routing_rules"] += post(f"rule {r.get('name')}", "/api/naming/rules", body)
    for start in range(0, len(ev.spans), SPAN_BATCH):
        batch = ev.spans[start:start + SPAN_BATCH]
        response = api.post(f"{zipkin}/api/v2/spans", content=json.dumps(batch),
                            headers={"Content-Type": "application/json"})
        if response.status_code >= 400:
            done["refused"].append(f"spans: {response.status_code} {response.text[:200]}")
        else:
            done["spans"] += len(batch)
    for rule in ev.alert_rules:
        body = {"alert": rule["name"], "expr": rule["expr"], "for": f"{float(rule.get('for') or 0):g}s",
                "labels": rule.get("labels") or {}, "annotations": rule.get("annotations") or {},
                "group": rule.get("group") or "snapshot"}
        done["alert_rules"] += post(f"alert rule {rule.get('id')}", "/api/alerts/rules", body)
    for s in ev.silences:
        if s.get("state") not in (None, "active", "pending"):
            continue
        body = {"matchers": s.get("matchers"), "starts_at": s.get("starts_at"), "ends_at": s.get("ends_at"),
                "created_by": s.get("created_by") or "snapshot", "comment": s.get("comment") or ""}
        done["silences"] += post("silence", "/api/alerts/silences", body)
    return done
