"""``devbox tour``: a guided walk through the running shop that checks the live platform at each step.

Each :class:`Step` explains a concept in two or three sentences, tells the learner what to do,
and then polls the platform's HTTP API until what the learner did shows up there (a trace, an
indicator, an alert, a routing change, a reload) — the check never reads printed text. With
``--auto`` the tour does each step's action itself, so CI proves every step works.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.console import Console

from devbox.learn.explain import explain_request
from devbox.learn.reader import Reader

LOG = logging.getLogger(__name__)

CHECKOUT = "GET /checkout/{user}"
POLL_SECONDS = 0.5


class Learner:
    """What the tour remembers between steps: where the gateway is, which traces it saw."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.since_us = 0
        self.facts: dict[str, Any] = {}
        self.http = httpx.Client(timeout=15)

    def gateway(self) -> str:
        services = self.reader.need("/api/deploy/services")["services"]
        for svc in services:
            if svc["service"] == "gateway":
                for inst in svc.get("instances") or []:
                    if inst.get("state") == "ready":
                        return f"http://127.0.0.1:{inst['port']}"
        raise LookupError("no ready gateway instance: is the shop running (`devbox up` in scenarios/shop)?")

    def checkout(self, query: str = "", headers: dict[str, str] | None = None) -> int:
        return self.http.get(f"{self.gateway()}/checkout/alice{query}", headers=headers).status_code

    def new_traces(self, **params: Any) -> list[dict[str, Any]]:
        found = self.reader.need("/api/traces", limit=50, lookback=600_000, **params)["traces"]
        return [t for t in found if t["start_us"] >= self.since_us and t["root_name"] == CHECKOUT]

    def instances(self, service: str) -> list[dict[str, Any]]:
        data = self.reader.maybe(f"/api/naming/services/default/{service}") or {}
        return data.get("instances") or []


Check = Callable[[Learner], "str | None"]


@dataclass
class Step:
    """One lesson: the concept, what to do (and the command that does it), and how to tell it happened."""

    title: str
    concept: str
    todo: str
    check: Check
    act: Callable[[Learner], None] | None = None
    page: str = ""
    #: Keep acting while waiting (an alert needs failures sustained over its ``for`` duration).
    repeat: bool = False
    notes: list[str] = field(default_factory=list)


# --- checks and actions: each check answers a sentence when it sees the effect, else None ----------


def registered(learner: Learner) -> str | None:
    services = {s["name"]: s for s in learner.reader.need("/api/naming/services")}
    missing = [n for n in ("gateway", "orders", "users", "payment", "inventory")
               if not services.get(n) or not services[n]["healthy"]]
    if missing:
        return None
    return ", ".join(f"{n}: {s['healthy']} healthy" for n, s in sorted(services.items()))


def send_checkout(learner: Learner) -> None:
    learner.checkout()


def checkout_traced(learner: Learner) -> str | None:
    ok = [t for t in learner.new_traces() if not t["errors"]]
    if not ok:
        return None
    learner.facts["trace"] = ok[0]["trace_id"]
    return f"trace {ok[0]['trace_id']}: {ok[0]['spans']} spans across {', '.join(ok[0]['services'])}"


def critical_path(learner: Learner) -> str | None:
    trace = learner.facts.get("trace")
    if not trace:
        return None
    path = learner.reader.need(f"/api/traces/{trace}/critical-path")
    if not path["segments"]:
        return None
    return "critical path: " + ", ".join(f"{s['service']} {s['share']:.0%}" for s in path["services"])


def read_trace(learner: Learner) -> None:
    learner.reader.need(f"/api/traces/{learner.facts['trace']}/critical-path")


def indicators(learner: Learner) -> str | None:
    data = learner.reader.maybe("/api/metrics/query", metric="success_rate", group_by="callee", window=300)
    values = {
        s["labels"].get("callee"): s["points"][-1][1]
        for s in (data or {}).get("series", []) if s["points"] and s["points"][-1][1] is not None
    }
    if not {"orders", "users", "payment"} <= set(values):
        return None
    return "success_rate by callee: " + ", ".join(f"{k} {v:.0f}%" for k, v in sorted(values.items()))


def break_payment(learner: Learner) -> None:
    learner.checkout("?fail=payment")


def payment_root_cause(learner: Learner) -> str | None:
    for t in learner.new_traces(errors="true"):
        why = learner.reader.need(f"/api/traces/{t['trace_id']}/why")
        if any(c["service"] == "payment" for c in why["causes"]):
            learner.facts["failed"] = t["trace_id"]
            return f"trace {t['trace_id']}: root cause payment · {why['causes'][0]['name']}"
    return None


def alert_fires(learner: Learner) -> str | None:
    for alert in learner.reader.need("/api/alerts", state="active")["alerts"]:
        if alert["state"] == "firing" and alert["labels"].get("callee") == "payment":
            return f"{alert['alertname']} firing for payment (value {alert['value']:.0f})"
    return None


def isolate_one_orders(learner: Learner) -> None:
    first = sorted(learner.instances("orders"), key=lambda i: i["port"])[0]
    learner.reader.api.request("PUT", f"/api/naming/instances/{first['id']}/isolate", json={"isolated": True})
    learner.checkout()


def failed_over(learner: Learner) -> str | None:
    isolated = {i["id"] for i in learner.instances("orders") if i["isolated"]}
    if not isolated:
        return None
    learner.facts["isolated"] = sorted(isolated)
    served: list[str] = []
    for t in learner.new_traces():
        if t["errors"]:
            continue
        spans = learner.reader.need(f"/api/traces/{t['trace_id']}")["spans"]
        served += [(s.get("resource") or {}).get("service.instance.id", "") for s in spans
                   if s["service"] == "orders" and s["kind"] == "SERVER"]
    if len(served) < 3 or isolated & set(served):
        return None
    return f"{len(served)} orders calls since, none to the isolated instance {sorted(isolated)[0][:12]}"


def unisolate(learner: Learner) -> None:
    for ref in learner.facts.pop("isolated", []):
        learner.reader.api.request("PUT", f"/api/naming/instances/{ref}/isolate", json={"isolated": False})


FEATURE_RULE = {
    "name": "feature-env", "service": "*",
    "destinations": [{"labels": {"env": "$env"}}, {"labels": {"env": {"type": "IN", "value": "base,"}}, "priority": 1}],
}


def feature_env(learner: Learner) -> None:
    unisolate(learner)
    if not any(i["metadata"].get("env") == "feature-x" for i in learner.instances("orders")):
        learner.reader.api.post("/api/deploy/services/orders/start",
                                json={"group": "feature-x", "tags": {"env": "feature-x"}})
        learner.facts["started_group"] = True
    rules = learner.reader.need("/api/naming/rules")
    if not any(r.get("name") == "feature-env" for r in rules):
        learner.reader.api.post("/api/naming/rules", json=FEATURE_RULE)
        learner.facts["added_rule"] = True
    learner.checkout(headers={"baggage": "env=feature-x"})


def undo(learner: Learner) -> list[str]:
    """Take back what the tour's own actions (``--auto``) added to the project; what was undone."""
    http = learner.reader.api.http  # not the CLI's client: what is gone already (replaced, removed) is fine
    done = []
    isolated = learner.facts.pop("isolated", [])
    back = [http.put(f"/api/naming/instances/{ref}/isolate", json={"isolated": False}).is_success for ref in isolated]
    if any(back):
        done.append("the isolated orders instance back in rotation")
    if learner.facts.pop("started_group", False) and http.post(
            "/api/deploy/services/orders/stop", json={"group": "feature-x"}, timeout=60).is_success:
        done.append("the feature-x group of orders stopped")
    if learner.facts.pop("added_rule", False) and http.delete("/api/naming/rules/default/*/feature-env").is_success:
        done.append("the feature-env routing rule removed")
    return done


def feature_routed(learner: Learner) -> str | None:
    for t in learner.new_traces():
        spans = learner.reader.need(f"/api/traces/{t['trace_id']}")["spans"]
        envs = {s["service"]: (s.get("resource") or {}).get("devbox.env") for s in spans if s["kind"] == "SERVER"}
        if envs.get("orders") == "feature-x" and envs.get("users") == "base":
            return "a labelled checkout: orders answered from env=feature-x, users from base"
    return None


def reload_orders(learner: Learner) -> None:
    learner.reader.api.post("/api/deploy/services/orders/reload")


def reloaded(learner: Learner) -> str | None:
    events = learner.reader.need("/api/deploy/events", service="orders", limit=500)["events"]
    done = [e for e in events if e["kind"] == "reloaded" and e["ts"] * 1e6 >= learner.since_us]
    if not done:
        return None
    if learner.checkout() != 200:
        return None
    return f"orders reloaded ({done[-1].get('message') or 'new instances ready'}); a checkout still answers 200"


def explained(learner: Learner) -> str | None:
    trace = learner.facts.get("failed")
    if not trace:
        return None
    story = explain_request(learner.reader, trace)
    if not story["root_causes"] or story["root_causes"][0]["service"] != "payment":
        return None
    return str(story["root_causes"][0]["sentence"])


def steps() -> list[Step]:
    return [
        Step("Services register in naming (123 + 北极星 Polaris)",
             "devbox deploys each service by its start.sh (the 123 convention), waits until it is ready, "
             "then registers every instance in naming, the Polaris-compatible registry, and heartbeats it. "
             "Callers never hold addresses: they ask naming for a service by name on every call.",
             "Run `devbox naming ls` and `devbox naming show orders`: two orders instances, both healthy.",
             registered, page="#/naming"),
        Step("One request, one trace (天机阁 Tianjige)",
             "Every service exports OpenTelemetry spans to devbox's collector; the trace context travels in "
             "the `traceparent` header, so the spans of one request across five services form one tree.",
             "Send a checkout: `curl localhost:<gateway port>/checkout/alice` (ports: `devbox status`), "
             "then `devbox traces ls`.",
             checkout_traced, act=send_checkout, page="#/traces"),
        Step("Where the time went: the critical path",
             "A trace's duration is not the sum of its spans: calls run in parallel. The critical path is the "
             "chain of work the request actually waited for; shortening anything else does not make it faster.",
             "Run `devbox traces show TRACE_ID` (or `devbox explain request TRACE_ID`) on that trace.",
             critical_path, act=read_trace, page="#/traces"),
        Step("Caller/callee indicators (007)",
             "devbox derives 007-style reports from the spans with no code in the services: calls, errors and "
             "latency per caller, callee and method. Indicators such as success_rate are formulas over them.",
             "Run `devbox metrics query success_rate` (or open the Metrics page and pick success_rate by callee).",
             indicators, act=send_checkout, page="#/metrics"),
        Step("Break payment and find the root cause",
             "When a deep service fails, every caller above it fails too; the error shows up first at the entry. "
             "The collector walks the trace down to the deepest failing span that caused the others.",
             "Provoke a failure: `curl 'localhost:<gateway port>/checkout/alice?fail=payment'`, then "
             "`devbox traces why TRACE_ID`.",
             payment_root_cause, act=break_payment, page="#/traces"),
        Step("The alert fires",
             "Alert rules watch indicators: ShopSuccessRateLow fires for a service whose success rate stays "
             "under 95% for 10 s. A rule is pending first, then firing; silences mute it without changing it.",
             "Keep the failures coming for ~15 s (repeat the curl above) and watch `devbox alerts ls`.",
             alert_fires, act=break_payment, repeat=True, page="#/alerts"),
        Step("Routing fails over",
             "Naming filters instances before the balancer picks one: isolated, unhealthy or circuit-broken "
             "instances are left out, so callers move to the others without a restart or a config change.",
             "Take one orders instance out: `devbox naming isolate ORDERS_INSTANCE_ID`, then send a few checkouts; "
             "they keep succeeding on the other one (`devbox naming unisolate` puts it back).",
             failed_over, act=isolate_one_orders, repeat=True, page="#/naming"),
        Step("A feature environment is one routing rule",
             "A feature build runs beside base as instances tagged env=feature-x. One namespace-wide rule sends "
             "requests labelled env=feature-x to feature-x instances where they exist and to base elsewhere; the "
             "label travels with the request as OTel baggage.",
             "Follow scenarios/shop/README.md (\"feature\"): start a feature-x group of orders, add the rule, "
             "then `curl -H 'baggage: env=feature-x' localhost:<gateway port>/checkout/alice`.",
             feature_routed, act=feature_env, repeat=True, page="#/naming"),
        Step("Hot reload without a failed request",
             "devbox watches each service's folder: on a change it starts a new instance, waits until it is "
             "ready and registered, and only then drains the old one.",
             "Edit a file under scenarios/shop/orders/ (or `curl -X POST $API/api/deploy/services/orders/reload`) "
             "and watch `devbox status`.",
             reloaded, act=reload_orders, page="#/deploys"),
        Step("Explain it all",
             "`devbox explain` tells one request's story in sentences: which instance each hop went to and why "
             "(the routing rule, the balancer), how long each took, and what failed first.",
             "Run `devbox explain request FAILED_TRACE_ID` on the failed checkout, and `devbox explain service "
             "payment`.",
             explained, page="#/traces"),
    ]


class Tour:
    """Runs the steps in order; stops at the first one whose effect never shows up."""

    def __init__(self, reader: Reader, *, auto: bool, timeout: float, out: Console) -> None:
        self.learner = Learner(reader)
        self.auto = auto
        self.timeout = timeout
        self.out = out

    def run(self, start: int = 1) -> dict[str, Any]:
        """The steps from ``start``; with ``auto``, what its own actions added is taken back after."""
        try:
            return self._run(start)
        finally:
            if self.auto:
                undone = undo(self.learner)
                if undone:
                    self.out.print(f"[dim]undone: {'; '.join(undone)}[/]", highlight=False)

    def _run(self, start: int) -> dict[str, Any]:
        all_steps = steps()
        results: list[dict[str, Any]] = []
        for number, step in enumerate(all_steps, start=1):
            if number < start:
                continue
            self.out.rule(f"[bold]{number}/{len(all_steps)} · {step.title}")
            self.out.print(step.concept, highlight=False)
            self.out.print(f"[cyan]→ {step.todo}[/]", highlight=False)
            if step.page:
                self.out.print(f"[dim]dashboard: {self.learner.reader.base}/{step.page}[/]", highlight=False)
            seen, error = self._wait(step)
            results.append({"step": number, "title": step.title, "passed": seen is not None,
                            "seen": seen, "error": error})
            if seen is None:
                self.out.print(f"[red]✗ not seen within {self.timeout:.0f} s[/]"
                               + (f": {error}" if error else ""), highlight=False)
                return {"passed": False, "steps": results}
            self.out.print(f"[green]✓ {seen}[/]", highlight=False)
        self.out.print("[bold green]Tour complete.[/] Open the dashboard to explore: " + self.learner.reader.base)
        return {"passed": True, "steps": results}

    def _wait(self, step: Step) -> tuple[str | None, str | None]:
        self.learner.since_us = int(time.time() * 1e6)
        deadline = time.monotonic() + self.timeout
        acted = False
        error: str | None = None
        if not self.auto:
            self.out.print("[dim]waiting for it to happen on the platform…[/]")
        while time.monotonic() < deadline:
            try:
                if self.auto and step.act and (step.repeat or not acted):
                    step.act(self.learner)
                    acted = True
                seen = step.check(self.learner)
                if seen:
                    return seen, None
            except (httpx.HTTPError, LookupError, KeyError) as exc:
                error = f"{exc.__class__.__name__}: {exc}"
                LOG.debug("tour step %s: %s", step.title, error)
            time.sleep(POLL_SECONDS)
        return None, error
