"""Load and capacity figures on the shop, as ratios measured in one run.

    python bench/bench_load.py [--users 5,15] [--seconds 15]

1. Prediction at a second load level: the fan-out of a run at the first user count predicts each
   service's calls at the second (Locust's entry requests x fan-out) against the span-derived
   counters; printed as predicted/measured per service (target: within 0.95-1.05).
2. Spans received vs sent during the second run: traces received / requests sent and spans
   received / spans expected (requests x spans per complete trace).
3. Tracing overhead: the shop's throughput at the same users with sampling off (``sampling: 0``)
   vs on (1.0), both closed-loop Locust runs: throughput(on) / throughput(off).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from devbox.config import Ports, load_config
from devbox.load import report as capacity_report
from devbox.load.platform import PlatformClient
from devbox.load.ramp import LoadSpec, Session
from devbox.load.runs import RunStore
from devbox.platform import registry
from devbox.testing import running_platform

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "scenarios" / "shop"
LOCUSTFILE = ROOT / "loadtests" / "shop.py"
READY = {"gateway": 1, "orders": 2, "inventory": 1, "payment": 1, "users": 2}


def shop(state: Path, sampling: float) -> Any:
    config = load_config(SHOP / "devbox.yaml")
    config.platform.ports = Ports.ephemeral()
    config.platform.state_dir = str(state)
    for svc in config.services:
        svc.reload = False
        svc.sampling = sampling  # injected as DEVBOX_SAMPLING / OTEL_TRACES_SAMPLER_ARG
    # faults opens the entry ports: the load goes through gateway's, as `devbox load` sends it
    components = [c for c in ("naming", "tracing", "metrics", "deploy", "faults") if c in registry.available()]
    return running_platform(config=config, components=components)


def wait_ready(api: str, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts: dict[str, int] = {}
        for dep in httpx.get(api + "/api/deploy/services", timeout=10).json()["services"]:
            counts[dep["service"]] = counts.get(dep["service"], 0) + dep["ready"]
        if counts == READY:
            return
        time.sleep(0.5)
    raise SystemExit("the shop did not come up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="5,15")
    parser.add_argument("--seconds", type=float, default=15.0)
    args = parser.parse_args()
    low, high = (int(u) for u in args.users.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    try:
        with shop(tmp / "on", 1.0) as p:
            wait_ready(p.url("api"))
            client = PlatformClient(p.url("api"))
            session = Session(client, RunStore(tmp / "on-runs"))
            first = session.run(LoadSpec(locustfile=LOCUSTFILE, target="gateway", users=low, spawn_rate=low,
                                         seconds=args.seconds))
            second = session.run(LoadSpec(locustfile=LOCUSTFILE, target="gateway", users=high, spawn_rate=high,
                                          seconds=args.seconds))
            window = {r["id"]: client.traces("gateway", int(r["started_at"] * 1e6), int(r["ended_at"] * 1e6))
                      for r in (first, second)}
            built = capacity_report.build(second, window[second["id"]], baseline=first,
                                          baseline_traces=window[first["id"]])
            on_rps = second["total"]["rps"]
            client.close()
        print(f"prediction at {high} users from the fan-out at {low} users (predicted/measured calls, error):")
        for row in built["accuracy"]["rows"]:
            ratio = row["predicted"] / row["measured"] if row["measured"] else float("nan")
            print(f"  {row['service']:<10} {ratio:.3f}  ({row['predicted']:.0f} / {row['measured']:.0f}, "
                  f"{(ratio - 1) * 100:+.1f}%)")
        spans = built["spans"]
        print(f"traces received / requests sent: {spans['traces_ratio']:.3f} "
              f"({spans['traces_received']} / {spans['requests_sent']})")
        print(f"spans received / spans expected: {spans['spans_ratio']:.3f} "
              f"({spans['spans_received']} / {spans['spans_expected']})")
        with shop(tmp / "off", 0.0) as p:
            wait_ready(p.url("api"))
            client = PlatformClient(p.url("api"))
            off = Session(client, RunStore(tmp / "off-runs")).run(
                LoadSpec(locustfile=LOCUSTFILE, target="gateway", users=high, spawn_rate=high, seconds=args.seconds))
            client.close()
        print(f"throughput with tracing on / off at {high} users: {on_rps / off['total']['rps']:.3f} "
              f"({on_rps:.1f} / {off['total']['rps']:.1f} req/s; p99 {second['total']['p99']} / "
              f"{off['total']['p99']} ms)")
        worst = built["accuracy"]["max_abs_error_pct"]
        print(f"largest prediction error: {worst:.1f}% ({'within' if worst <= 5 else 'outside'} the ±5% target)"
              if worst is not None else "no prediction (nothing measured)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
