"""`devbox tour --auto` walks every step against the running shop: each step's check reads the
live platform (traces, indicators, alerts, naming, deploy events), so a pass means each lesson
really happened."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.learn_shop import devbox, running_shop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


def test_tour_auto_passes_every_step_on_the_shop(tmp_path: Path) -> None:
    with running_shop(tmp_path) as (shop, _):
        tour = devbox("tour", "--auto", "--timeout", "60", "--json", cwd=shop, timeout=500)
        assert tour.returncode == 0, tour.stdout[-4000:] + tour.stderr[-2000:]
        result = json.loads(tour.stdout[tour.stdout.index('{\n  "passed"'):])
        assert result["passed"] is True
        assert 8 <= len(result["steps"]) <= 12
        assert all(step["passed"] and step["seen"] for step in result["steps"])
        seen = " ".join(step["seen"] for step in result["steps"])
        assert "root cause payment" in seen and "ShopSuccessRateLow" in seen and "feature-x" in seen
        # what the tour added (a feature-x group of orders, the feature-env rule) is taken back after it
        assert "undone: the feature-x group of orders stopped; the feature-env routing rule removed" in " ".join(
            tour.stdout.split())
        rules = devbox("naming", "rules", "ls", "--json", cwd=shop)
        assert rules.returncode == 0 and "feature-env" not in rules.stdout, rules.stdout + rules.stderr
        orders = devbox("naming", "show", "orders", "--json", cwd=shop)
        assert orders.returncode == 0 and "feature-x" not in orders.stdout, orders.stdout + orders.stderr
