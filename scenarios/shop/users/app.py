"""users: profiles and loyalty tiers — the shared downstream (gateway, orders and payment ask it).

LIMITATIONS: a fixed set of people plus synthetic ones (``u<number>``) for load tests.
"""

from __future__ import annotations

import os
import re

import uvicorn
from fastapi import FastAPI, HTTPException

from devbox import sdk

#: id -> (name, tier, risk score 0..100 used by payment's fraud check)
PEOPLE: dict[str, tuple[str, str, int]] = {
    "alice": ("Alice", "gold", 5),
    "bob": ("Bob", "silver", 20),
    "carol": ("Carol", "bronze", 35),
    "mallory": ("Mallory", "bronze", 95),
}
TIERS = ("bronze", "silver", "gold")
SYNTHETIC = re.compile(r"^u(\d{1,9})$")

app = FastAPI(title="users")
sdk.bootstrap(app)
ME = sdk.identity("users")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/users/{user_id}")
async def get_user(user_id: str) -> dict:
    if user_id in PEOPLE:
        name, tier, risk = PEOPLE[user_id]
    elif match := SYNTHETIC.match(user_id):
        number = int(match.group(1))
        name, tier, risk = f"User {number}", TIERS[number % len(TIERS)], number % 50
    else:
        raise HTTPException(404, f"no user {user_id!r}")
    return {"id": user_id, "name": name, "tier": tier, "risk": risk, "served_by": ME.as_dict()}


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("DEVBOX_HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8004")),
                log_level="warning")
