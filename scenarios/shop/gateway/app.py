"""gateway: the shop's HTTP entry. Fans out to users and orders, reads the catalog from inventory
over gRPC, and passes routing labels on: a request with ``baggage: env=feature-x`` is served by
feature-x instances wherever they exist, all along the call chain (devbox naming + OTel baggage).

Entry points: ``GET /products``, ``GET /checkout/{user}?sku=&qty=&slow=&fail=``, ``POST /orders``.
"""

from __future__ import annotations

import asyncio
import os
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


class OrderRequest(BaseModel):
    user: str
    sku: str
    qty: int = Field(1, ge=1, le=1000)
    slow: bool = Field(False, description="Force payment's fraud check (the slow path).")
    fail: Literal["payment"] | None = Field(None, description="Provoke a failure in that service.")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    channel = sdk.grpc_channel("inventory")
    async with sdk.http_client(timeout=10.0) as http:
        app.state.http = http
        app.state.inventory = pb_grpc.InventoryStub(channel)
        yield
    await channel.close()


app = FastAPI(title="gateway", lifespan=lifespan)
sdk.bootstrap(app)
ME = sdk.identity("gateway")


async def _call(http: httpx.AsyncClient, service: str, method: str, url: str, **kw: Any) -> dict:
    """A downstream call; its 4xx keep their meaning, its 5xx become 502 naming the service."""
    try:
        answer = await http.request(method, url, **kw)
    except (httpx.HTTPError, *UNRESOLVED) as exc:
        raise HTTPException(503, f"{service} unreachable: {exc}") from exc
    if answer.status_code >= 400:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text
        status = answer.status_code if answer.status_code < 500 else 502
        raise HTTPException(status, f"{service}: {detail}")
    return answer.json()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/products")
async def products(request: Request) -> dict:
    try:
        catalog = await request.app.state.inventory.ListProducts(pb.ListProductsRequest(), timeout=5.0)
    except grpc.aio.AioRpcError as exc:
        raise HTTPException(502, f"inventory: {exc.details()}") from exc
    except UNRESOLVED as exc:
        raise HTTPException(503, f"inventory unreachable: {exc}") from exc
    return {
        "products": [
            {"sku": p.sku, "name": p.name, "price_cents": p.price_cents, "stock": p.stock} for p in catalog.products
        ],
        "served_by": ME.as_dict(),
        "calls": {"inventory": {"service": catalog.served_by.service, "instance": catalog.served_by.instance,
                                "env": catalog.served_by.env}},
    }


@app.get("/checkout/{user}")
async def checkout(
    user: str,
    request: Request,
    sku: str = "sku-1",
    qty: int = 1,
    slow: bool = False,
    fail: Literal["payment"] | None = None,
) -> dict:
    """The checkout page: the user's profile and a priced, pre-authorized quote, fetched in parallel."""
    params: dict[str, Any] = {"user": user, "sku": sku, "qty": qty, "slow": slow}
    if fail:
        params["fail"] = fail
    found = await asyncio.gather(
        _call(request.app.state.http, "users", "GET", f"http://users/users/{user}"),
        _call(request.app.state.http, "orders", "GET", "http://orders/quote", params=params),
        return_exceptions=True,
    )
    for result in found:
        if isinstance(result, BaseException):
            raise result
    profile, quote = found
    return {"user": profile, "quote": quote, "served_by": ME.as_dict()}


@app.post("/orders", status_code=201)
async def place_order(order: OrderRequest, request: Request) -> dict:
    placed = await _call(
        request.app.state.http, "orders", "POST", "http://orders/orders", json=order.model_dump(exclude_none=True)
    )
    return {"order": placed, "served_by": ME.as_dict()}


if __name__ == "__main__":
    uvicorn.run(app, host=os.environ.get("DEVBOX_HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
                log_level="warning")
