"""``v1.PolarisGRPC`` on the ``polaris_grpc`` listener: a thin handler set over :class:`PolarisApi`.

Transport only: reads the token from the ``X-Polaris-Token`` metadata, decodes the official
messages itself (so undecodable bytes get Polaris's ParseException 400001 in a proper
``Response`` rather than a gRPC error), hands them to the protocol object and returns its answers.
Discover is the bidi stream: one answer per request, in order.

LIMITATIONS: no server push; clients re-ask (polaris-go does every ~2 s) and unchanged answers
are the cheap 200001.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from devbox.mocks.naming.models import Code, NamingError
from devbox.mocks.naming.polaris import PolarisApi
from google.protobuf.message import DecodeError

LOG = logging.getLogger(__name__)

SERVICE = "v1.PolarisGRPC"


def _token(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "x-polaris-token" and value:
            return str(value)
    return None


def _identity(data: bytes) -> bytes:
    return data


def _serialize(message: Any) -> bytes:
    return message.SerializeToString()


def handlers(api: PolarisApi) -> grpc.GenericRpcHandler:
    """The generic handler serving every ``v1.PolarisGRPC`` method."""
    pb = api.pb

    def decode(factory: Callable[[], Any], raw: bytes) -> Any:
        message = factory()
        try:
            message.ParseFromString(raw)
        except (DecodeError, RuntimeWarning) as exc:
            raise NamingError(Code.ParseException, f"undecodable {message.DESCRIPTOR.name}: {exc}") from None
        return message

    def unary(
        factory: Callable[[], Any], op: Callable[..., Any], with_token: bool = True, write: bool = True
    ) -> grpc.RpcMethodHandler:
        async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                message = decode(factory, raw)
            except NamingError as exc:
                return api.error(exc)
            answer = op(message, _token(context)) if with_token else op(message)
            if write:
                await api.service.durable()  # acknowledged means committed to naming.db
            return answer

        return grpc.unary_unary_rpc_method_handler(
            handle, request_deserializer=_identity, response_serializer=_serialize
        )

    async def discover(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for raw in requests:
            try:
                request = decode(pb.request.DiscoverRequest, raw)
            except NamingError as exc:
                yield pb.response.DiscoverResponse(code={"value": int(exc.code)}, info={"value": exc.reason})
                continue
            yield api.discover(request)

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ReportClient": unary(pb.client.Client, api.report_client, with_token=False, write=False),
            "RegisterInstance": unary(pb.service.Instance, api.register),
            "DeregisterInstance": unary(pb.service.Instance, api.deregister),
            "Heartbeat": unary(pb.service.Instance, api.heartbeat),
            "Discover": grpc.stream_stream_rpc_method_handler(
                discover, request_deserializer=_identity, response_serializer=_serialize
            ),
        },
    )


def registrar(api: PolarisApi) -> Callable[[grpc.aio.Server], None]:
    def register(server: grpc.aio.Server) -> None:
        server.add_generic_rpc_handlers((handlers(api),))

    return register
