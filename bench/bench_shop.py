"""Benchmark of the example system (scenarios/shop) on the platform: what tracing costs per request.

The shop is deployed twice in one run, from its own devbox.yaml on ephemeral ports: once with
every service sampling no traces (the baseline: calls still resolve by name through devbox
naming) and once sampling every trace (OTLP export to the platform, and the platform ingesting,
storing and deriving RPC metrics). For each entry point a single sequential client measures
latency percentiles and requests/s; the traced figures are given as ratios to the baseline.

Usage: python bench/bench_shop.py [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from devbox.config import Ports, load_config
from devbox.testing import running_platform

REPO = Path(__file__).resolve().parent.parent
ENTRIES: list[tuple[str, Callable[[httpx.Client], httpx.Response]]] = [
    ("GET /products (gRPC, 1 hop)", lambda c: c.get("/products")),
    ("GET /checkout/{user} (5 services)", lambda c: c.get("/checkout/u42", params={"sku": "sku-1"})),
    ("POST /orders (5 services)", lambda c: c.post("/orders", json={"user": "u42", "sku": "sku-2"})),
]


def measure(gateway: str, requests: int) -> dict[str, tuple[float, float, float]]:
    """entry -> (p50 ms, p99 ms, requests/s) for one sequential client."""
    out = {}
    with httpx.Client(base_url=gateway, timeout=30) as client:
        for name, call in ENTRIES:
            for _ in range(20):  # warm caches, connections, JIT-less but lazy imports
                call(client).raise_for_status()
            took = []
            started = time.perf_counter()
            for _ in range(requests):
                t0 = time.perf_counter()
                call(client).raise_for_status()
                took.append(time.perf_counter() - t0)
            elapsed = time.perf_counter() - started
            cuts = statistics.quantiles(took, n=100)
            out[name] = (cuts[49] * 1000, cuts[98] * 1000, requests / elapsed)
    return out


def run(sampling: float, requests: int) -> dict[str, tuple[float, float, float]]:
    with tempfile.TemporaryDirectory(prefix="bench-shop-") as state:
        config = load_config(REPO / "scenarios" / "shop" / "devbox.yaml")
        config.platform.ports = Ports.ephemeral()
        config.platform.state_dir = state
        for svc in config.services:
            svc.reload = False
            svc.sampling = sampling
        with running_platform(config=config) as p:
            errors = p.call(p.component("deploy").wait_deployed(120), timeout=130)
            if errors:
                raise SystemExit(f"deploy failed: {errors}")
            found = httpx.get(p.url("api") + "/api/deploy/services/gateway").json()
            port = found["deployments"][0]["instances"][0]["port"]
            return measure(f"http://127.0.0.1:{port}", requests)


def run_in_child(sampling: float, requests: int) -> dict[str, tuple[float, float, float]]:
    """One platform per process: each run starts from a fresh interpreter (and gRPC runtime)."""
    done = subprocess.run(
        [sys.executable, __file__, "--requests", str(requests), "--sampling", str(sampling)],
        capture_output=True, text=True, timeout=600, check=True,
    )
    return {k: tuple(v) for k, v in json.loads(done.stdout.strip().splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="Measured requests per entry point and run.")
    parser.add_argument("--sampling", type=float, default=None, help=argparse.SUPPRESS)  # one run, JSON out
    args = parser.parse_args()
    if args.sampling is not None:
        print(json.dumps(run(args.sampling, args.requests)))
        return
    base = run_in_child(0.0, args.requests)
    traced = run_in_child(1.0, args.requests)
    print(f"shop through the gateway, one sequential client, {args.requests} requests per entry:")
    print(f"  {'entry':<36} {'sampling 0 (baseline)':>30} {'sampling 1 (every trace)':>34}")
    for name, _ in ENTRIES:
        b50, b99, brps = base[name]
        t50, t99, trps = traced[name]
        print(
            f"  {name:<36} p50 {b50:6.1f} ms p99 {b99:6.1f} ms {brps:6.0f}/s"
            f"   p50 {t50 / b50:4.2f}x p99 {t99 / b99:4.2f}x {trps / brps:4.2f}x req/s"
        )


if __name__ == "__main__":
    main()
