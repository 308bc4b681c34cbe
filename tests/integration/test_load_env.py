"""``devbox load --env feature-x`` lands on the feature environment: the shop with a feature-x
build of orders next to base (as in scenarios/shop/feature_routing.scenario.yaml), a short Locust
run whose requests carry ``baggage: env=feature-x``, and every orders call of the run served by
the feature-x instance — none by base."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.config import load_config
from devbox.load import locust
from devbox.scenario import checks
from devbox.scenario.session import Session
from devbox.testing import wait_for

SHOP = Path(__file__).resolve().parents[2] / "scenarios" / "shop"
FEATURE_ROUTING = [
    {"name": "feature-env", "sources": [{"arguments": [{"key": "env", "value": "*"}]}],
     "destinations": [{"name": "same env", "labels": {"env": "$env"}},
                      {"name": "base", "labels": {"env": {"type": "IN", "value": "base,"}}, "priority": 1}]},
    {"name": "base-default", "priority": 1,
     "destinations": [{"name": "base", "labels": {"env": {"type": "IN", "value": "base,"}}}]},
]

# slow: the whole shop deployed and a Locust run (make test-quick leaves those out)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240),
              pytest.mark.skipif(not locust.available(), reason="locust not installed")]


def test_load_with_env_reaches_only_env_tagged_instances() -> None:
    with Session(load_config(SHOP / "devbox.yaml"), seed=7) as session:
        session.do("up", add=[{"service": "orders", "tags": {"env": "feature-x"}}])
        session.do("routing_rule", service="*", rules=FEATURE_ROUTING)
        # POST /orders only: every request reaches orders
        record = session.do("load", name="fx", users=3, seconds=5, tags=["orders"], env="feature-x")
        assert record["params"]["env"] == "feature-x" and record["total"]["requests"] > 0
        env_of = {i.id: dict(i.metadata).get("env") for i in session.all_instances() if i.service == "orders"}
        start_us, end_us = int(record["started_at"] * 1e6), int(record["ended_at"] * 1e6)

        def orders_served_by() -> dict[str, int]:
            served: dict[str, int] = {}
            for span in session._spans():
                probe = "healthz" in span.name.lower()  # devbox's own health checks hit base too
                in_run = start_us <= span.start_us <= end_us
                if span.service == "orders" and span.kind == "SERVER" and not probe and in_run:
                    env = str(env_of.get(checks.span_instance(span)))
                    served[env] = served.get(env, 0) + 1
            return served if sum(served.values()) >= record["total"]["requests"] else {}

        served = wait_for(orders_served_by, 30, "a server span of orders for every request of the run")
        assert set(served) == {"feature-x"}, served
