"""Alerting figures, each as a ratio against a baseline measured in the same run.

- time from an injected error burst to the alert firing, against the rule's ``for`` + the
  evaluation interval (the least a Prometheus-style evaluator can take once the indicator has
  crossed the threshold), and the detection part (burst → pending) on its own;
- one evaluation round of N rules over the stored data, against the evaluation interval (how much
  of its budget the evaluator uses);
- a 1 h backtest of one rule at a 1 s step, against one instant query of the same expression.

The platform (metrics + alerting) runs in this process on ephemeral ports; traffic is 007 custom
reports over HTTP, 10 per second per service, so the success-rate indicator is measured the way a
service would report it.

Run: ``python bench/bench_alerting.py [--rounds 3] [--for 2] [--interval 1] [--rules 50]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from devbox.config import ProjectConfig
from devbox.testing import running_platform


class Traffic(threading.Thread):
    def __init__(self, api: str, services: list[str]) -> None:
        super().__init__(daemon=True)
        self.api = api
        self.healthy = dict.fromkeys(services, True)
        self.stopped = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self.stopped.is_set():
                reports = [
                    {
                        "name": "shop",
                        "dimensions": {"service": s},
                        "values": [
                            {"name": "calls", "value": 1, "policy": "SUM"},
                            {"name": "ok", "value": 1 if good else 0, "policy": "SUM"},
                        ],
                    }
                    for s, good in list(self.healthy.items())
                ]
                client.post(self.api + "/api/metrics/custom", json=reports)
                self.stopped.wait(0.1)


def wait(check: Any, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return time.time()
        time.sleep(0.01)
    raise SystemExit("timed out: the alert did not change state")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--for", dest="for_s", type=float, default=2.0, help="The rule's for, seconds.")
    parser.add_argument("--interval", type=float, default=1.0, help="Evaluation interval, seconds.")
    parser.add_argument("--window", type=float, default=2.0, help="The indicator's rate window, seconds.")
    parser.add_argument("--rules", type=int, default=50, help="Rules in the evaluation-cost figure.")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench-alerting-"))
    metrics = {
        "indicators": {
            "shop_success_rate": {
                "formula": "shop_ok_total * 100 / shop_calls_total",
                "by": ["service"],
                "window": args.window,
            }
        }
    }
    rule = {
        "name": "LowSuccess",
        "indicator": "shop_success_rate",
        "filter": {"service": "orders"},
        "comparison": "<",
        "threshold": 90,
        "duration": args.for_s,
    }
    config = ProjectConfig.for_tests(
        root, metrics=metrics, alerting={"interval": args.interval, "rules": [rule], "terminal": False}
    )
    with running_platform(config=config, components=["metrics", "alerting"]) as p:
        api = p.url("api")
        stamps: dict[str, float] = {}
        p.platform.events.alert_transition.add_listener(
            lambda transition: stamps.setdefault(transition.to_state.value, time.time())
        )
        traffic = Traffic(api, ["orders"])
        traffic.start()
        time.sleep(args.window + 2 * args.interval)
        to_fire, to_pending = [], []
        for _ in range(args.rounds):
            stamps.clear()
            burst = time.time()
            traffic.healthy["orders"] = False
            wait(lambda: "firing" in stamps, args.for_s + args.window + 10 * args.interval + 10)
            to_fire.append(stamps["firing"] - burst)
            to_pending.append(stamps.get("pending", stamps["firing"]) - burst)
            traffic.healthy["orders"] = True
            wait(lambda: "resolved" in stamps, args.window + 10 * args.interval + 10)
            time.sleep(args.interval)
        traffic.stopped.set()
        traffic.join()

        baseline = args.for_s + args.interval
        fire = statistics.median(to_fire)
        pending = statistics.median(to_pending)
        print(
            f"error burst → firing: median {fire:.2f} s over {args.rounds} rounds "
            f"(min {min(to_fire):.2f}, max {max(to_fire):.2f})"
        )
        print(f"  baseline for + interval = {baseline:.2f} s → ratio {fire / baseline:.2f}")
        print(
            f"  of which burst → pending (indicator crossing the threshold, window {args.window:g} s): "
            f"{pending:.2f} s; pending → firing {fire - pending:.2f} s vs for {args.for_s:g} s "
            f"(ratio {(fire - pending) / args.for_s:.2f})"
        )

        component: Any = p.component("alerting")
        many = [
            {"alert": f"R{i}", "expr": f'shop_success_rate{{service="orders"}} < {i}', "group": "bench"}
            for i in range(args.rules)
        ]
        for body in many:
            httpx.post(api + "/api/alerts/rules", json=body).raise_for_status()
        rounds = []
        for _ in range(5):
            started = time.perf_counter()
            p.call(component.service.evaluate_once())
            rounds.append(time.perf_counter() - started)
        cost = statistics.median(rounds)
        print(
            f"one evaluation round of {args.rules + 1} rules: {cost * 1000:.1f} ms "
            f"= {cost / args.interval:.3f} of the {args.interval:g} s interval"
        )

        metrics_component: Any = p.component("metrics")
        expr = 'shop_success_rate{service="orders"} < 90'
        now = time.time()
        started = time.perf_counter()
        metrics_component.query_instant(expr, now)
        instant = time.perf_counter() - started
        started = time.perf_counter()
        r = httpx.post(api + "/api/alerts/rules/test", json={"rule": rule, "since": "1h", "step": "1s"}, timeout=120)
        r.raise_for_status()
        backtest = time.perf_counter() - started
        print(
            f"backtest over 1 h at 1 s (3601 evaluations, {len(r.json()['episodes'])} episodes): "
            f"{backtest * 1000:.0f} ms = {backtest / instant:.0f}x one instant query ({instant * 1000:.2f} ms)"
        )


if __name__ == "__main__":
    main()
