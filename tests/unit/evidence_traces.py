"""Synthetic shop-like traces as Zipkin JSON rows, for the diff and why tests (no platform).

gateway SERVER ─ CLIENT → users SERVER (``users_calls`` times, one after the other)
               └ CLIENT → orders SERVER ─ CLIENT → payment SERVER
Latencies are drawn from a seeded generator; ``orders_extra_ms`` is added to orders' own time,
``payment_error`` is the share of payment calls that fail, ``slow_instance_ms`` adds latency between
the gateway and one of the two users instances (as a proxy in front of it would), ``orders_unreached``
is the share of requests whose call to orders fails before it is sent (routing left no instance).
"""

from __future__ import annotations

import itertools
import random
from typing import Any

_ids = itertools.count(1)


def _id(width: int = 16) -> str:
    return f"{next(_ids):0{width}x}"


def _span(trace: str, parent: str | None, kind: str, service: str, name: str, start: float, dur: float, *,
          error: str | None = None, instance: str | None = None, remote: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"traceId": trace, "id": _id(), "kind": kind, "name": name.lower(),
                           "timestamp": int(start), "duration": max(int(dur), 1),
                           "localEndpoint": {"serviceName": service}, "tags": {}}
    if parent:
        row["parentId"] = parent
    if remote:
        row["remoteEndpoint"] = {"serviceName": remote}
    if instance:
        row["tags"]["service.instance.id"] = instance
    if error:
        row["tags"]["error"] = error
        row["annotations"] = [{"timestamp": int(start + dur),
                               "value": 'exception: {"exception.message":"declined","exception.type":"' + error + '"}'}]
    return row


def shop_rows(n: int, *, seed: int, t0: float = 1.7e15, users_calls: int = 1, orders_extra_ms: float = 0.0,
              payment_error: float = 0.0, slow_instance_ms: float = 0.0, orders_unreached: float = 0.0,
              gap_us: float = 200_000) -> list[dict]:
    rnd = random.Random(seed)
    rows: list[dict] = []
    for i in range(n):
        trace = _id(32)
        start = t0 + i * gap_us
        gw = _span(trace, None, "SERVER", "gateway", "GET /checkout/{user}", start, 0, instance="gw-1")
        rows.append(gw)
        cursor = start + rnd.uniform(1000, 3000)
        for _ in range(users_calls):
            instance = rnd.choice(("users-a", "users-b"))
            extra = slow_instance_ms * 1000 if instance == "users-a" else 0
            server = rnd.uniform(500, 2500)
            client = _span(trace, gw["id"], "CLIENT", "gateway", "GET", cursor, server + 300 + extra, remote="users")
            rows.append(client)
            rows.append(_span(trace, client["id"], "SERVER", "users", "GET /users/{user_id}", cursor + 150 + extra,
                              server, instance=instance))
            cursor += server + 300 + extra
        if rnd.random() < orders_unreached:
            # the call to orders fails before it is sent (no instance left by routing): no orders span
            rows.append(_span(trace, gw["id"], "CLIENT", "gateway", "GET", cursor, 400, remote="orders",
                              error="NoInstanceError: no instance of orders matches env=feature-x"))
            gw["duration"] = int(cursor + 900 - start)
            gw["tags"]["error"] = "503"
            continue
        own = rnd.uniform(8000, 16000) + orders_extra_ms * 1000
        pay = rnd.uniform(400, 1500)
        failed = rnd.random() < payment_error
        orders_dur = own + pay + 300
        oc = _span(trace, gw["id"], "CLIENT", "gateway", "GET", cursor, orders_dur + 300, remote="orders",
                   error="502" if failed else None)
        osrv = _span(trace, oc["id"], "SERVER", "orders", "GET /quote", cursor + 150, orders_dur,
                     error="502" if failed else None, instance="orders-1")
        pc = _span(trace, osrv["id"], "CLIENT", "orders", "POST", cursor + 150 + own, pay + 200, remote="payment",
                   error="500" if failed else None)
        ps = _span(trace, pc["id"], "SERVER", "payment", "POST /authorize", cursor + 250 + own, pay,
                   error="PaymentDeclined" if failed else None, instance="payment-1")
        rows += [oc, osrv, pc, ps]
        cursor += orders_dur + 300
        gw["duration"] = int(cursor + rnd.uniform(500, 1500) - start)
        if failed:
            gw["tags"]["error"] = "502"
    return rows
