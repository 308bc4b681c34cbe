"""``devbox explain``: one request's path, or one service's place in the system, in plain sentences.

The request story is built from what the platform recorded: the trace's spans (each hop is a
CLIENT span and the SERVER span it caused), the ``devbox.naming.pick`` span events the SDK adds for
every routing decision (which instance, which rule, which balancer, what was filtered out — the
breaker among them), the collector's root-cause and critical-path analyses. Every pick event is
read — an OTel span event, or the ``devbox.naming.pick: {...}`` Zipkin annotation it becomes when
the spans went through Zipkin — so a span that picked several times (a gateway's) gives each hop
its own decision. Only a span with no pick event at all (an SDK from before pick events) falls back
to the ``devbox.naming.*`` span attributes, which hold its last pick only, and the story says so.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from typing import Any

from devbox.learn.reader import Reader

LOG = logging.getLogger(__name__)

PICK_EVENT = "devbox.naming.pick"
NAMING_ATTR = "devbox.naming."
PROBES = ("GET /healthz", "grpc.health.v1.Health/Check")


def fmt_us(us: float) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.2f} s"
    if us >= 1_000:
        return f"{us / 1_000:.1f} ms"
    return f"{us:.0f} µs"


# --- one request ------------------------------------------------------------------------------


def _status(span: dict[str, Any]) -> str:
    attrs = span.get("attributes") or {}
    code = attrs.get("http.status_code") or attrs.get("http.response.status_code") or attrs.get("rpc.grpc.status_code")
    text = f"{code}" if code not in (None, "") else ""
    if span.get("status_message"):
        text = f"{text} {span['status_message']}".strip()
    return text


def _picks(span: dict[str, Any]) -> list[dict[str, Any]]:
    """Every pick recorded on ``span``, in time order: its ``devbox.naming.pick`` OTel events and the
    Zipkin annotations such events become (``devbox.naming.pick: {attributes as JSON}``)."""
    timed = [(int(e.get("time_us") or 0), dict(e.get("attributes") or {}))
             for e in span.get("events") or [] if e.get("name") == PICK_EVENT]
    for t, value in span.get("annotations") or []:
        if str(value).startswith(PICK_EVENT + ": {"):
            try:
                attrs = json.loads(str(value)[len(PICK_EVENT) + 2:])
            except ValueError:
                continue
            if isinstance(attrs, dict) and (int(t), attrs) not in timed:
                timed.append((int(t), attrs))
    return [attrs for _, attrs in sorted(timed, key=lambda pair: pair[0])]


def _pick_from_attributes(span: dict[str, Any]) -> dict[str, Any] | None:
    attrs = span.get("attributes") or {}
    pick = {k[len(NAMING_ATTR):]: v for k, v in attrs.items() if k.startswith(NAMING_ATTR)}
    return pick or None


def _port(span: dict[str, Any]) -> str | None:
    attrs = span.get("attributes") or {}
    if attrs.get("net.host.port"):
        return str(attrs["net.host.port"])
    host = str(attrs.get("http.host") or attrs.get("server.address") or "")
    return host.rsplit(":", 1)[-1] if ":" in host else None


class _Trace:
    """The spans of one trace as a tree, and the picks each caller made."""

    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self.spans = {s["span_id"]: s for s in spans}
        self.children: dict[str | None, list[dict[str, Any]]] = defaultdict(list)
        for s in sorted(spans, key=lambda s: s["start_us"]):
            parent = s.get("parent_id") if s.get("parent_id") in self.spans else None
            self.children[parent].append(s)
        self.used: set[tuple[str, int]] = set()

    def roots(self) -> list[dict[str, Any]]:
        return self.children[None]

    def pick_for(self, client: dict[str, Any], server: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """The routing decision that sent ``client``'s call to ``server``'s instance, and where it
        was read from (``event``, ``attributes``, ``unmatched`` — the caller's pick events were all
        used by its other calls — or ``none``).

        The SDK picks while the caller's span is current, so the event sits on the CLIENT span
        or on one of its ancestors in the same service; several picks for the same callee are
        told apart by the chosen port, else taken in order, each used for one call only."""
        callee, port = server["service"], _port(server)
        holders: list[dict[str, Any]] = []
        span: dict[str, Any] | None = client
        while span is not None and span["service"] == client["service"]:
            holders.append(span)
            span = self.spans.get(span.get("parent_id") or "")
        candidates = [
            (holder["span_id"], i, pick)
            for holder in holders for i, pick in enumerate(_picks(holder))
            if pick.get("service") == callee
        ]
        fresh = [c for c in candidates if (c[0], c[1]) not in self.used]
        chosen = next((c for c in fresh if port and str(c[2].get("instance", "")).endswith(f":{port}")), None)
        chosen = chosen or (fresh[0] if fresh else None)
        if chosen:
            self.used.add((chosen[0], chosen[1]))
            return dict(chosen[2]), "event"
        if candidates:  # picks of this callee were recorded, each already the decision of another call
            return None, "unmatched"
        if any(_picks(holder) for holder in holders):  # it records its picks: none was for this callee
            return None, "none"
        for holder in holders:  # an SDK that records no pick events: the attributes say the last pick
            pick = _pick_from_attributes(holder)
            if pick and pick.get("service") == callee:
                return pick, "attributes"
        return None, "none"


def _breaker_story(pick: dict[str, Any], names: dict[str, str]) -> list[str]:
    """What the circuit breakers did at this pick, as the SDK recorded it then (``breaker``: the chosen
    instance's state; ``breaker_open``/``breaker_open_ids``: the instances its breaker kept out)."""
    out = []
    skipped_ids = list(pick.get("breaker_open_ids") or [])
    skipped = list(pick.get("breaker_open") or [])
    for i, addr in enumerate(skipped):
        who = names.get(skipped_ids[i] if i < len(skipped_ids) else "") or addr
        out.append(f"{who}{f' ({addr})' if who != addr else ''} was skipped: its circuit breaker was open")
    state = pick.get("breaker")
    if state == "half_open":
        out.append("the chosen instance's breaker was half-open: this call was one of its probes")
    elif state == "open":  # recover-all: every instance was out, so an open one was called anyway
        out.append("the chosen instance's breaker was open (every instance was out: recover-all called it anyway)")
    elif state == "closed" and not skipped:
        out.append("its circuit breaker was closed")
    return out


def _why_pick(pick: dict[str, Any] | None, source: str, names: dict[str, str] | None = None) -> str:
    if not pick and source == "unmatched":
        return "none of the caller's recorded picks is left for this call (each of its picks of this service was " \
               "the decision of another of its calls)"
    if not pick:
        return "no routing decision was recorded for this call (the caller did not resolve it through devbox naming)"
    parts = []
    if pick.get("rule"):
        target = f" → {pick['destination']}" if pick.get("destination") else ""
        parts.append(f"routing rule {pick['rule']!r}{target}")
    parts.append(str(pick.get("reason") or "no reason recorded"))
    filtered = pick.get("filtered") or []
    if "breaker_open" in pick:  # the breaker's exclusions get their own sentence below
        filtered = [f for f in filtered if not str(f).startswith("circuit_breaker:")]
    if filtered:
        parts.append("filtered out first: " + ", ".join(str(f) for f in filtered))
    if pick.get("failover"):
        parts.append("failover: the preferred instances were unavailable")
    parts.extend(_breaker_story(pick, names or {}))
    balancer = pick.get("balancer")
    if balancer:
        among = f" among {pick['candidates']} candidate(s)" if pick.get("candidates") is not None else ""
        parts.append(f"{balancer} balancer{among}")
    text = "; ".join(parts)
    if source == "attributes":
        text += " (from the caller span's attributes: it has no pick events, so only its last pick is known)"
    return text


def request_story(
    trace: dict[str, Any], why: dict[str, Any], critical: dict[str, Any], names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """What happened to one request, as data (``hops``, ``root_cause``, ``time``) and ``sentences``."""
    names = names or {}
    spans = trace["spans"]
    tree = _Trace(spans)

    def instance_of(span: dict[str, Any]) -> str:
        rid = (span.get("resource") or {}).get("service.instance.id", "")
        return names.get(rid, rid[:12] if rid else "?")

    hops: list[dict[str, Any]] = []
    sentences: list[str] = []
    t0 = min(s["start_us"] for s in spans)
    total = max(s["start_us"] + s["duration_us"] for s in spans) - t0

    def walk(span: dict[str, Any], depth: int) -> None:
        for child in tree.children[span["span_id"]]:
            servers = [c for c in tree.children[child["span_id"]] if c["kind"] == "SERVER"]
            if child["kind"] == "CLIENT" and servers:
                for server in servers:
                    pick, source = tree.pick_for(child, server)
                    hop = {
                        "depth": depth + 1,
                        "caller": child["service"], "caller_span": child["span_id"],
                        "callee": server["service"], "operation": server["name"], "span_id": server["span_id"],
                        "instance": instance_of(server),
                        "address": (pick or {}).get("instance"),
                        "pick": pick, "pick_source": source, "why": _why_pick(pick, source, names),
                        "duration_us": server["duration_us"], "call_us": child["duration_us"],
                        "offset_us": server["start_us"] - t0,
                        "error": bool(server["error"]), "status": _status(server) or _status(child),
                    }
                    hops.append(hop)
                    outcome = f"failed ({hop['status']})" if hop["error"] else "answered"
                    overhead = child["duration_us"] - server["duration_us"]
                    sentences.append(
                        f"{'  ' * (depth + 1)}{hop['caller']} called {hop['callee']} {hop['operation']!r} at "
                        f"+{fmt_us(hop['offset_us'])}: it went to {hop['instance']}"
                        + (f" ({hop['address']})" if hop["address"] else "") + f" because {hop['why']}. "
                        f"It {outcome} in {fmt_us(server['duration_us'])}"
                        + (f" (+{fmt_us(overhead)} on the way)" if overhead > 1000 else "") + "."
                    )
                    walk(server, depth + 1)
            else:
                walk(child, depth)

    for root in tree.roots():
        outcome = f"failed ({_status(root)})" if root["error"] else "succeeded"
        sentences.append(
            f"{root['service']} ({instance_of(root)}) received {root['name']!r}; it {outcome} "
            f"after {fmt_us(root['duration_us'])}."
        )
        walk(root, 0)

    shares = [
        {"service": row["service"], "share": row["share"], "us": row.get("self_us", 0)}
        for row in critical.get("services", [])
    ]
    if shares:
        where = ", ".join(f"{row['service']} {row['share']:.0%}" for row in shares)
        sentences.append(f"Where the time went (critical path, {fmt_us(critical.get('duration_us', total))}): {where}.")
        slowest = max(critical.get("segments", []), key=lambda seg: seg.get("self_us", 0), default=None)
        if slowest:
            sentences.append(
                f"The longest stretch on it: {slowest['service']} · {slowest['name']} "
                f"({fmt_us(slowest['self_us'])} of its own time)."
            )
    causes = []
    for cause in why.get("causes", []) if why.get("failed") else []:
        path = cause.get("path") or []
        via = []
        for hop in path[1:-1]:
            if hop["service"] not in via and hop["service"] not in (cause["service"], path[0]["service"]):
                via.append(hop["service"])
        code = _status(cause) or "an error"
        text = f"{cause['service']} · {cause['name']} failed with {code}"
        if path and path[0]["span_id"] != cause["span_id"]:
            text += f"; it made {path[0]['service']}'s {path[0]['name']} fail"
            if via:
                text += " via " + ", ".join(via)
        causes.append({"service": cause["service"], "operation": cause["name"], "span_id": cause["span_id"],
                       "status": code, "sentence": text})
        sentences.append(f"Root cause: {text}.")
    if not why.get("failed"):
        sentences.append("Nothing failed in this request.")
    return {
        "trace_id": trace["trace_id"], "duration_us": total, "spans": len(spans),
        "failed": bool(why.get("failed")), "root_causes": causes, "hops": hops,
        "critical_path": shares, "sentences": sentences,
    }


def instance_names(reader: Reader) -> dict[str, str]:
    """naming instance id → deploy's instance name (``orders-2``), for readable sentences."""
    data = reader.maybe("/api/deploy/services") or {}
    return {
        i["id"]: i["name"] for s in data.get("services", []) for i in s.get("instances") or [] if i.get("id")
    }


def explain_request(reader: Reader, trace_id: str) -> dict[str, Any]:
    trace = reader.need(f"/api/traces/{trace_id}")
    why = reader.need(f"/api/traces/{trace_id}/why")
    critical = reader.need(f"/api/traces/{trace_id}/critical-path")
    return request_story(trace, why, critical, instance_names(reader))


# --- one service ------------------------------------------------------------------------------


def _rule_applies(rule: dict[str, Any], service: str, indicators: dict[str, dict[str, Any]]) -> bool:
    """A rule watches a service when its expression (or its indicator's formula) names it, or when
    it is split by callee and names no service at all (then it makes one alert per service)."""
    short = rule.get("short") or {}
    indicator = indicators.get(short.get("indicator", ""), {})
    text = f"{rule.get('expr', '')} {short.get('filter') or ''} {indicator.get('formula', '')}"
    if f'"{service}"' in text or f"={service}" in text:
        return True
    if "callee=" in text or "caller=" in text:
        return False
    return "by (callee)" in text or "callee" in (indicator.get("dimensions") or [])


def explain_service(reader: Reader, name: str, lookback_ms: int = 3_600_000) -> dict[str, Any]:
    deployed = (reader.maybe(f"/api/deploy/services/{name}") or {}).get("deployments") or []
    naming = reader.maybe(f"/api/naming/services/default/{name}")
    topo = reader.maybe("/api/topology", service=name, lookback=lookback_ms) or {}
    if not deployed and naming is None and not topo.get("service"):
        from devbox.cli.common import fail

        fail(f"no service {name!r}: not deployed, not registered in naming, not seen in traces")
    links = topo.get("service") or {}
    edges = [e for e in topo.get("edges", []) if name in (e["caller"], e["callee"])]
    instances = []
    for inst in (naming or {}).get("instances", []):
        meta = inst.get("metadata") or {}
        instances.append({
            "name": meta.get("devbox.instance", inst["id"][:12]), "address": f"{inst['host']}:{inst['port']}",
            "healthy": inst["healthy"], "isolated": inst.get("isolated", False), "weight": inst.get("weight"),
            "tags": {k: v for k, v in meta.items() if not k.startswith("devbox.")},
        })
    indicators = {}
    for metric in ("success_rate", "error_rate", "avg_latency_seconds"):
        data = reader.maybe("/api/metrics/query", metric=metric, filter=f"callee={name}", window=300)
        points = [p for s in (data or {}).get("series", []) for p in s.get("points", []) if p[1] is not None]
        if points:
            indicators[metric] = round(float(points[-1][1]), 4)
    known = {m["name"]: m for m in (reader.maybe("/api/metrics/ls") or {}).get("metrics", [])}
    rules = [
        {"name": r["name"], "expr": r["expr"], "for": r.get("for"), "state": r.get("state")}
        for r in (reader.maybe("/api/alerts/rules") or {}).get("rules", []) if _rule_applies(r, name, known)
    ]
    active = [
        {"alertname": a["alertname"], "state": a["state"], "value": a.get("value"), "labels": a["labels"]}
        for a in (reader.maybe("/api/alerts", state="active") or {}).get("alerts", [])
        if name in (a["labels"].get("callee"), a["labels"].get("service"))
    ]
    events = (reader.maybe("/api/deploy/events", service=name, limit=200) or {}).get("events", [])
    deploys = [
        {"ts": e["ts"], "instance": e.get("instance"), "kind": e["kind"], "message": e.get("message", "")}
        for e in events if e["kind"] not in ("health",)
    ][-10:]
    rules_of_routing = (naming or {}).get("routing") or []
    sentences = []
    if deployed:
        d = deployed[0]
        sentences.append(
            f"{name} is a {d['protocol']} service run by devbox from {d['path']} ({d['replicas']} replica(s), "
            f"{d['ready']} ready, registered {d['register']}), tagged "
            + (", ".join(f"{k}={v}" for k, v in (d.get("tags") or {}).items()) or "with nothing") + "."
        )
    else:
        sentences.append(f"{name} is not deployed by devbox; it is known from naming or from traces.")
    sentences.append(
        f"Called by: {', '.join(links.get('callers', [])) or 'nobody (an entry point)'}"
        f" — transitively {', '.join(links.get('callers_transitive', [])) or 'nobody'}."
    )
    sentences.append(
        f"Calls: {', '.join(links.get('callees', [])) or 'nobody (a leaf)'}"
        f" — transitively {', '.join(links.get('callees_transitive', [])) or 'nobody'}."
    )
    if instances:
        sentences.append("Instances in naming: " + "; ".join(
            f"{i['name']} at {i['address']} ({'healthy' if i['healthy'] else 'unhealthy'}"
            f"{', isolated' if i['isolated'] else ''}, weight {i['weight']})" for i in instances) + ".")
    if rules_of_routing:
        sentences.append(f"{len(rules_of_routing)} routing rule(s) decide which of its instances a caller gets.")
    if naming and naming.get("circuit_breaker"):
        sentences.append(f"A circuit breaker is configured: {naming['circuit_breaker']}.")
    if indicators:
        sentences.append("Indicators (last 5 min, as callee): " + ", ".join(
            f"{k} {v}" for k, v in indicators.items()) + ".")
    if rules:
        sentences.append("Alert rules watching it: " + ", ".join(r["name"] for r in rules) + ".")
    if active:
        sentences.append("Active now: " + ", ".join(f"{a['alertname']} ({a['state']}, {a['value']})" for a in active)
                         + ".")
    if deploys:
        last = deploys[-1]
        sentences.append(f"{len(deploys)} recent deploy event(s); the last: {last['kind']} {last['instance'] or ''} "
                         f"— {last['message']}.")
    causes = _likely_causes(reader, name)
    if causes:
        sentences.append("Likely causes of its recent trouble (`devbox why " + name + "`): " + "; ".join(
            f"{i}. {c['subject']} ({c['score']:.2f}): {c['reason']}" for i, c in enumerate(causes, 1)) + ".")
    return {
        "service": name, "deployment": deployed[0] if deployed else None, "callers": links.get("callers", []),
        "callers_transitive": links.get("callers_transitive", []), "callees": links.get("callees", []),
        "callees_transitive": links.get("callees_transitive", []), "edges": edges, "instances": instances,
        "routing_rules": rules_of_routing, "indicators": indicators, "alert_rules": rules, "active_alerts": active,
        "deploys": deploys, "likely_causes": causes, "sentences": sentences,
    }


def _likely_causes(reader: Reader, name: str, window: float = 120.0) -> list[dict[str, Any]]:
    """The top suspects of devbox why when the service's recent traces failed or slowed; [] when
    nothing stands out (or the evidence cannot be read: explain still tells the rest)."""
    from devbox.snapshot.collect import Platform
    from devbox.why.gather import gather

    try:
        report = gather(Platform(reader.base, reader.api.token), name, window=window)
    except Exception as exc:  # explain is a reading aid: a failed ranking must not hide the rest
        LOG.debug("likely causes of %s: %s", name, exc)
        return []
    return [s for s in report["suspects"] if s["score"] >= 0.3][:3]
