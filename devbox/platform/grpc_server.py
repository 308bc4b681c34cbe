"""The grpc side of a gRPC listener: everything in the platform that imports ``grpc``.

Loaded by a listener's first client's bytes (see :mod:`devbox.platform.grpc_front`), never at start:
grpc with a running server is ~13 MB of a platform's memory that an idle one, or one whose
services speak only HTTP, does without. One ``grpc.aio`` server per listener, bound to a loopback
port the front relays to, with the listener's interceptors (the platform token, then the error map)
and one handler table that answers UNAVAILABLE "starting" until the components' registrars are in.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc

from devbox.platform.auth import HOW, candidates, matches
from devbox.platform.errors import ApiError
from devbox.platform.http import HEAD_TIMEOUT_S
from devbox.platform.platform import STARTING_REASON

LOG = logging.getLogger(__name__)

GRPC_MAX_MESSAGE = 64 * 1024 * 1024
#: Seconds a gRPC connection may go without an RPC in flight before it is sent GOAWAY and closed: one
#: that sent its preface and then half a frame (or nothing) is not held forever (grpc has no read
#: timeout past the handshake). A real client's channel reconnects on its next call; an open stream
#: counts as a call in flight, and the Polaris SDKs heartbeat and refresh far more often than this.
GRPC_IDLE_S = 300.0


async def _unavailable(request_iterator: Any, context: Any) -> Any:
    await context.abort(grpc.StatusCode.UNAVAILABLE, STARTING_REASON)
    yield  # pragma: no cover  # a generator: the kind of handler that fits any call shape


#: stream-stream with raw bytes fits every call (unary or streaming) without reading its request.
_STARTING_HANDLER = grpc.stream_stream_rpc_method_handler(_unavailable)


class Table(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no type stubs
    """What a gRPC listener's registrars add, served through the one handler its server has had
    since it was started (a grpc server takes handlers only before it starts): every call is
    answered UNAVAILABLE "starting" until ``ready``. Registrars use it as they would the server."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []
        self.ready = False

    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self.handlers.extend(handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict[str, Any]) -> None:
        """Generated ``add_*Servicer_to_server`` also passes its generic handler, which serves these."""

    def serve(self, registrars: Iterable[Callable[[Any], None]]) -> None:
        for registrar in registrars:
            registrar(self)
        self.ready = True

    def service(self, handler_call_details: Any) -> Any:
        if not self.ready:
            return _STARTING_HANDLER
        for handler in self.handlers:
            found = handler.service(handler_call_details)
            if found is not None:
                return found
        return None


# --- the error map: an ApiError a servicer raises aborts the call with its status ----------------

async def abort(context: Any, exc: ApiError) -> None:
    """End the gRPC call with the error's status and reason (``context.abort`` raises)."""
    await context.abort(grpc.StatusCode[exc.grpc_status], exc.reason)


def _unary(behavior: Callable[..., Any]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: Any) -> Any:
        try:
            result = behavior(request, context)
            return await result if inspect.isawaitable(result) else result
        except ApiError as exc:
            await abort(context, exc)

    return call


def _streaming(behavior: Callable[..., Any]) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def call(request: Any, context: Any) -> AsyncIterator[Any]:
        try:
            responses = behavior(request, context)
            if hasattr(responses, "__aiter__"):
                async for response in responses:
                    yield response
            else:
                for response in responses:
                    yield response
        except ApiError as exc:
            await abort(context, exc)

    return call


class ApiErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Wraps every servicer method of a gRPC listener so an ``ApiError`` it raises aborts the call
    with ``grpc.StatusCode[exc.grpc_status]`` and the reason as details."""

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        kinds = {
            "unary_unary": (grpc.unary_unary_rpc_method_handler, _unary),
            "stream_unary": (grpc.stream_unary_rpc_method_handler, _unary),
            "unary_stream": (grpc.unary_stream_rpc_method_handler, _streaming),
            "stream_stream": (grpc.stream_stream_rpc_method_handler, _streaming),
        }
        for kind, (make, wrap) in kinds.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                return make(
                    wrap(behavior),
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler


# --- the platform token (see devbox.platform.auth for which credentials count) -------------------

def _refuse_unary(reason: str) -> Callable[[Any, Any], Awaitable[Any]]:
    async def refuse(_request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)

    return refuse


def _refuse_streaming(reason: str) -> Callable[[Any, Any], Any]:
    async def refuse(_request: Any, context: Any) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, reason)
        yield  # pragma: no cover - abort raises; this only makes the function a generator

    return refuse


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc has no type stubs
    """Refuses every call on a gRPC listener whose metadata does not carry the platform token,
    with UNAUTHENTICATED, before the servicer sees a byte of the request."""

    def __init__(self, token: str) -> None:
        self.token = token

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Any]], handler_call_details: Any
    ) -> Any:
        handler = await continuation(handler_call_details)
        pairs = handler_call_details.invocation_metadata or ()
        metadata = [(str(k), v if isinstance(v, str) else "") for k, v in pairs]
        if handler is None or matches(self.token, candidates(metadata)):
            return handler
        LOG.info("gRPC %s refused: no or wrong platform token", handler_call_details.method)
        reason = f"unauthorized: {HOW}"
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(_refuse_unary(reason))
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(_refuse_unary(reason))
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(_refuse_streaming(reason))
        return grpc.stream_stream_rpc_method_handler(_refuse_streaming(reason))


# --- the server ------------------------------------------------------------------------------

@dataclass
class Backend:
    """A listener's running grpc server, its handler table, and the loopback address it serves on."""

    server: Any  # grpc.aio.Server
    table: Table
    address: tuple[str, int]

    async def stop(self, grace: float) -> None:
        await self.server.stop(grace=grace)


async def start(listener: str, *, token: str | None) -> Backend:
    """A started grpc server for ``listener`` on a free loopback port, every call "starting" until
    its table is served. RuntimeError when no loopback port can be bound."""
    options = [
        ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE),
        ("grpc.max_send_message_length", GRPC_MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
        # A connection that has not sent the HTTP/2 preface and SETTINGS within this is sent GOAWAY
        # and closed, as an HTTP listener closes one whose request head is late. Without it grpc
        # closes such a connection after 60 s (its SETTINGS-ack timeout; the handshake's own is 120 s).
        ("grpc.server_handshake_timeout_ms", int(HEAD_TIMEOUT_S * 1000)),
        ("grpc.max_connection_idle_ms", int(GRPC_IDLE_S * 1000)),
    ]
    interceptors: list[Any] = [ApiErrorInterceptor()]
    if token:
        interceptors.insert(0, TokenInterceptor(token))
    table = Table()
    server = grpc.aio.server(handlers=[table], options=options, interceptors=interceptors)
    port = server.add_insecure_port("127.0.0.1:0")
    if port == 0:
        raise RuntimeError(f"{listener}: grpc could not bind a loopback port to serve on")
    await server.start()
    return Backend(server=server, table=table, address=("127.0.0.1", port))
