"""payment: authorizes and captures payments; above a threshold (or with ``slow``) it runs a fraud
check first — the slow path, which also asks users for the payer's risk score.

Errors can be provoked for root-cause and alerting demos: ``fail: true`` in a request, or a
failure rate set at runtime with ``PUT /admin/faults`` (or the ``PAYMENT_ERROR_RATE`` env).
LIMITATIONS: no money moves; the card processor and the fraud scorer are a sleep and a rule.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from opentelemetry import trace
from pydantic import BaseModel, Field

from devbox import sdk

FRAUD_CHECK_ABOVE_CENTS = int(os.environ.get("FRAUD_CHECK_ABOVE_CENTS", "50000"))
FRAUD_CHECK_SECONDS = float(os.environ.get("FRAUD_CHECK_SECONDS", "0.25"))
MAX_RISK = 80


class Payment(BaseModel):
    user: str
    amount_cents: int = Field(gt=0)
    order_id: str | None = None
    slow: bool = Field(False, description="Force the fraud check whatever the amount.")
    fail: bool = Field(False, description="Make the card processor fail (503) for this request.")


class Faults(BaseModel):
    error_rate: float = Field(0.0, ge=0, le=1, description="Fraction of charges that fail with 503.")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with sdk.http_client(timeout=5.0) as http:
        app.state.http = http
        yield


app = FastAPI(title="payment", lifespan=lifespan)
sdk.bootstrap(app)
ME = sdk.identity("payment")
app.state.faults = Faults(error_rate=float(os.environ.get("PAYMENT_ERROR_RATE", "0")))
tracer = trace.get_tracer("shop.payment")


async def fraud_check(http: httpx.AsyncClient, payment: Payment) -> bool | None:
    """None when no check was needed, else whether the payer passed it."""
    if not (payment.slow or payment.amount_cents > FRAUD_CHECK_ABOVE_CENTS):
        return None
    with tracer.start_as_current_span("fraud-check") as span:
        try:
            answer = await http.get(f"http://users/users/{payment.user}")
        except (httpx.HTTPError, sdk.NamingUnavailable, sdk.NoInstanceError) as exc:
            raise HTTPException(503, f"users unreachable for the fraud check: {exc}") from exc
        if answer.status_code == 404:
            raise HTTPException(404, f"no user {payment.user!r}")
        if answer.status_code >= 400:
            raise HTTPException(502, f"users failed the fraud check lookup: {answer.text[:200]}")
        risk = int(answer.json()["risk"])
        await asyncio.sleep(FRAUD_CHECK_SECONDS)  # the external scoring provider
        span.set_attribute("shop.risk", risk)
        return risk < MAX_RISK


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _card_processor(payment: Payment, request: Request) -> None:
    """The card processor's answer: down for this request when provoked or by the fault rate."""
    if payment.fail or random.random() < request.app.state.faults.error_rate:
        raise HTTPException(503, "card processor unavailable")


@app.post("/authorize")
async def authorize(payment: Payment, request: Request) -> dict:
    checked = await fraud_check(request.app.state.http, payment)
    _card_processor(payment, request)
    return {"approved": checked is not False, "fraud_checked": checked is not None, "served_by": ME.as_dict()}


@app.post("/charges", status_code=201)
async def charge(payment: Payment, request: Request) -> dict:
    checked = await fraud_check(request.app.state.http, payment)
    if checked is False:
        raise HTTPException(402, "declined by the fraud check")
    _card_processor(payment, request)
    return {
        "id": f"pay-{uuid.uuid4().hex[:12]}",
        "order_id": payment.order_id,
        "amount_cents": payment.amount_cents,
        "status": "captured",
        "fraud_checked": checked is not None,
        "served_by": ME.as_dict(),
    }


@app.get("/admin/faults")
async def get_faults(request: Request) -> Faults:
    return request.app.state.faults


@app.put("/admin/faults")
async def set_faults(faults: Faults, request: Request) -> Faults:
    request.app.state.faults = faults
    return faults


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("DEVBOX_HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8003")),
                log_level="warning")
