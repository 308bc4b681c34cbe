"""``v1.PolarisGRPC`` on the ``polaris_grpc`` listener: a thin servicer over :class:`PolarisApi`.

Transport only: reads the token from the ``X-Polaris-Token`` metadata, hands messages to the
protocol object and returns its answers. Discover is the bidi stream: one answer per request,
in order.

LIMITATIONS: no server push; clients re-ask (polaris-go does every ~2 s) and unchanged answers
are the cheap 200001.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from mocks.naming.polaris import PolarisApi

LOG = logging.getLogger(__name__)


def _token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "x-polaris-token" and value:
            return str(value)
    return None


def servicer(api: PolarisApi) -> Any:
    """A ``PolarisGRPCServicer`` instance bound to ``api``."""
    base = api.pb.grpcapi.PolarisGRPCServicer

    class PolarisServicer(base):  # type: ignore[misc, valid-type]
        async def ReportClient(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return api.report_client(request)

        async def RegisterInstance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return api.register(request, _token(context))

        async def DeregisterInstance(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return api.deregister(request, _token(context))

        async def Heartbeat(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
            return api.heartbeat(request, _token(context))

        async def Discover(
            self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async for request in request_iterator:
                yield api.discover(request)

    return PolarisServicer()


def registrar(api: PolarisApi) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        api.pb.grpcapi.add_PolarisGRPCServicer_to_server(servicer(api), server)

    return register
