"""orders: prices and places orders. Fans out to users (tier discount), inventory over gRPC
(product, reservation) and payment (authorize, charge) — every call by service name.

LIMITATIONS: nothing is stored; an order is priced, reserved and charged, then returned.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import grpc
import httpx
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from devbox import sdk

#: A call by name can fail before it is sent: no platform to ask, or no instance left to call.
UNRESOLVED = (sdk.NamingUnavailable, sdk.NoInstanceError)

DISCOUNT_PERCENT = {"gold": 10, "silver": 5, "bronze": 0}
GRPC_TO_HTTP = {
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
}


class OrderRequest(BaseModel):
    user: str
    sku: str
    qty: int = Field(1, ge=1, le=1000)
    slow: bool = Field(False, description="Force payment's fraud check (the slow path).")
    fail: Literal["payment"] | None = Field(None, description="Provoke a failure in that service.")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    channel = sdk.grpc_channel("inventory")
    async with sdk.http_client(timeout=5.0) as http:
        app.state.http = http
        app.state.inventory = pb_grpc.InventoryStub(channel)
        yield
    await channel.close()


app = FastAPI(title="orders", lifespan=lifespan)
sdk.bootstrap(app)
ME = sdk.identity("orders")


def _downstream_error(service: str, answer: httpx.Response) -> HTTPException:
    """4xx answers keep their meaning for our caller; 5xx become 502 naming the failing service."""
    try:
        detail = answer.json().get("detail", answer.text)
    except ValueError:
        detail = answer.text
    if answer.status_code < 500:
        return HTTPException(answer.status_code, f"{service}: {detail}")
    return HTTPException(502, f"{service} failed ({answer.status_code}): {detail}")


async def _call(http: httpx.AsyncClient, service: str, method: str, url: str, **kw: Any) -> dict:
    try:
        answer = await http.request(method, url, **kw)
    except (httpx.HTTPError, *UNRESOLVED) as exc:
        raise HTTPException(503, f"{service} unreachable: {exc}") from exc
    if answer.status_code >= 400:
        raise _downstream_error(service, answer)
    return answer.json()


async def _inventory(call: Any, request: Any) -> Any:
    try:
        return await call(request, timeout=5.0)
    except grpc.aio.AioRpcError as exc:
        status = GRPC_TO_HTTP.get(exc.code(), 502)
        raise HTTPException(status, f"inventory: {exc.details()}") from exc
    except UNRESOLVED as exc:
        raise HTTPException(503, f"inventory unreachable: {exc}") from exc


async def _user_and_product(request: Request, user: str, sku: str) -> tuple[dict, pb.Product]:
    """The two lookups every order needs, in parallel (the first fan-out)."""
    found = await asyncio.gather(
        _call(request.app.state.http, "users", "GET", f"http://users/users/{user}"),
        _inventory(request.app.state.inventory.GetProduct, pb.GetProductRequest(sku=sku)),
        return_exceptions=True,
    )
    for result in found:
        if isinstance(result, BaseException):
            raise result
    return found[0], found[1]  # type: ignore[return-value]


def _price(product: pb.Product, qty: int, tier: str) -> int:
    return product.price_cents * qty * (100 - DISCOUNT_PERCENT.get(tier, 0)) // 100


def _served(product: Any) -> dict[str, str]:
    by = product.served_by
    return {"service": by.service, "instance": by.instance, "env": by.env}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/quote")
async def quote(
    request: Request, user: str, sku: str, qty: int = 1, slow: bool = False, fail: Literal["payment"] | None = None
) -> dict:
    """What ``qty`` of ``sku`` would cost ``user``, and whether payment would authorize it."""
    profile, product = await _user_and_product(request, user, sku)
    amount = _price(product, qty, profile["tier"])
    auth = await _call(
        request.app.state.http, "payment", "POST", "http://payment/authorize",
        json={"user": user, "amount_cents": amount, "slow": slow, "fail": fail == "payment"},
    )
    return {
        "user": user, "sku": sku, "qty": qty, "amount_cents": amount, "in_stock": product.stock >= qty,
        "approved": auth["approved"], "fraud_checked": auth["fraud_checked"], "served_by": ME.as_dict(),
        "calls": {"users": profile["served_by"], "inventory": _served(product), "payment": auth["served_by"]},
    }


@app.post("/orders", status_code=201)
async def place(order: OrderRequest, request: Request) -> dict:
    """Price, reserve stock, charge: users + inventory in parallel, then inventory, then payment."""
    order_id = f"ord-{uuid.uuid4().hex[:12]}"
    profile, product = await _user_and_product(request, order.user, order.sku)
    amount = _price(product, order.qty, profile["tier"])
    reservation = await _inventory(
        request.app.state.inventory.Reserve, pb.ReserveRequest(sku=order.sku, qty=order.qty, order_id=order_id)
    )
    payment = await _call(
        request.app.state.http, "payment", "POST", "http://payment/charges",
        json={"user": order.user, "amount_cents": amount, "order_id": order_id, "slow": order.slow,
              "fail": order.fail == "payment"},
    )
    # a business metric next to the RPC reports devbox derives from spans (007's attribute report)
    sdk.metrics.counter("shop_orders_placed", "Orders placed and paid.").incr(tier=profile["tier"], sku=order.sku)
    return {
        "id": order_id, "user": order.user, "sku": order.sku, "qty": order.qty, "amount_cents": amount,
        "status": "paid", "reservation": reservation.id, "payment": payment["id"],
        "fraud_checked": payment["fraud_checked"], "served_by": ME.as_dict(),
        "calls": {"users": profile["served_by"], "inventory": _served(reservation), "payment": payment["served_by"]},
    }


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("DEVBOX_HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8001")),
                log_level="warning")
