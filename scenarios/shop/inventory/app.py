"""inventory: the product catalog and stock, over gRPC (grpc.aio) with the standard health service.

Called by the gateway (catalog) and by orders (price lookup, reservations), always by service name
through devbox naming. LIMITATIONS: stock is a fixed catalog; a reservation checks availability but
does not decrement it, so load tests can run for as long as they like.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import grpc
import inventory_pb2 as pb
import inventory_pb2_grpc as pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from devbox import sdk

LOG = logging.getLogger("inventory")

#: sku -> (name, price in cents, stock). sku-3 costs more than payment's fraud-check threshold.
CATALOG: dict[str, tuple[str, int, int]] = {
    "sku-1": ("Coffee beans 1 kg", 1_250, 500),
    "sku-2": ("Hand grinder", 8_900, 50),
    "sku-3": ("Espresso machine", 64_900, 5),
    "sku-4": ("Milk jug", 1_900, 0),
}


class Inventory(pb_grpc.InventoryServicer):
    def __init__(self, me: sdk.Identity) -> None:
        self.served_by = pb.ServedBy(service=me.service, instance=me.instance_id, env=me.tags.get("env", ""))

    def _product(self, sku: str) -> pb.Product:
        name, price, stock = CATALOG[sku]
        return pb.Product(sku=sku, name=name, price_cents=price, stock=stock, served_by=self.served_by)

    async def ListProducts(self, request: pb.ListProductsRequest, context: grpc.aio.ServicerContext):
        return pb.ListProductsResponse(products=[self._product(sku) for sku in CATALOG], served_by=self.served_by)

    async def GetProduct(self, request: pb.GetProductRequest, context: grpc.aio.ServicerContext):
        if request.sku not in CATALOG:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.sku!r}")
        return self._product(request.sku)

    async def Reserve(self, request: pb.ReserveRequest, context: grpc.aio.ServicerContext):
        if request.sku not in CATALOG:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no product {request.sku!r}")
        if request.qty <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "qty must be at least 1")
        stock = CATALOG[request.sku][2]
        if request.qty > stock:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION, f"only {stock} of {request.sku} left, {request.qty} wanted"
            )
        return pb.Reservation(
            id=f"res-{uuid.uuid4().hex[:12]}", sku=request.sku, qty=request.qty, served_by=self.served_by
        )


async def serve(port: int) -> None:
    me = sdk.identity("inventory")
    sdk.bootstrap()  # before the server exists, so the gRPC server instrumentation wraps it
    server = grpc.aio.server(interceptors=[sdk.logs.grpc_interceptor()])  # a line per call with its trace id
    pb_grpc.add_InventoryServicer_to_server(Inventory(me), server)
    checker = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    server.add_insecure_port(f"{os.environ.get('DEVBOX_HOST', '127.0.0.1')}:{port}")
    await server.start()
    await checker.set("", health_pb2.HealthCheckResponse.SERVING)
    await checker.set("shop.inventory.v1.Inventory", health_pb2.HealthCheckResponse.SERVING)
    LOG.info("inventory %s serving gRPC on port %d", me.instance_id, port)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(int(os.environ.get("PORT", "50051"))))
