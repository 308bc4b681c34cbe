"""Load for the shop example: a mix of the gateway's three entry points, as real shoppers would.

    locust -f loadtests/shop.py --headless -u 20 -r 5 -t 30s --host http://127.0.0.1:<gateway port>

Run it as a subprocess (importing locust monkey-patches the stdlib with gevent; keep it out of
the platform process). ``devbox load --env feature-x`` sets ``DEVBOX_LOAD_ENV=feature-x`` (plain
Locust: set it yourself; the older ``SHOP_ENV`` still works) and every request then carries
``baggage: env=feature-x``, so naming routes it to the feature environment's instances.

Most orders take the fast path; sku-3 costs more than
payment's fraud-check threshold, so about one order in five takes the slow path.
"""

from __future__ import annotations

import os
import random

from locust import HttpUser, between, tag, task

SKUS = ("sku-1", "sku-1", "sku-2", "sku-2", "sku-3")


class Shopper(HttpUser):
    wait_time = between(0.05, 0.2)

    def on_start(self) -> None:
        self.user_id = f"u{random.randint(1, 100_000)}"
        env = os.environ.get("DEVBOX_LOAD_ENV") or os.environ.get("SHOP_ENV")
        if env:  # a session header: every request this user sends carries it
            self.client.headers["baggage"] = f"env={env}"

    @tag("products")
    @task(3)
    def products(self) -> None:
        self.client.get("/products", name="GET /products")

    @tag("checkout")
    @task(5)
    def checkout(self) -> None:
        self.client.get(
            f"/checkout/{self.user_id}", params={"sku": random.choice(SKUS)}, name="GET /checkout/{user}"
        )

    @tag("orders")
    @task(2)
    def order(self) -> None:
        body = {"user": self.user_id, "sku": random.choice(SKUS), "qty": 1}
        self.client.post("/orders", json=body, name="POST /orders")
