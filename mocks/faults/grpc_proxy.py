"""The gRPC-aware proxy: a passthrough in front of one gRPC instance that sees every call.

A gRPC service's fault proxy is TCP-level (:class:`~devbox.mocks.faults.proxy.FaultProxy` in
``tcp`` mode): HTTP/2 headers are compressed, so it cannot tell one call from the next. When devbox
traces the service (zero-code tracing, ``trace: auto|on``), its proxy is this one instead: a
``grpc.aio`` server whose generic handler takes every method as a raw-bytes stream-stream call (no
(de)serializers: it needs no ``.proto``), and forwards it over one ``grpc.aio`` channel to the
instance, streaming both ways, with the invocation metadata (minus pseudo and hop headers), the
deadline, the instance's initial and trailing metadata, status code and details.

Per call it makes the SERVER span (name ``pkg.Service/Method``, ``rpc.system``, ``rpc.service``,
``rpc.method``, ``rpc.grpc.status_code``, error on a non-OK status), continuing the caller's
``traceparent`` or B3 context from the metadata (or starting a trace), and sends its own span id
downstream as ``traceparent`` (and B3 when the caller spoke B3), so an instrumented service's spans
nest under it. Health checks (``grpc.health.v1.Health``) are forwarded and spanned like any call,
marked ``devbox.probe``: their metric method ``grpc.health.v1.Health/Check`` is the one RED queries
and the release gate leave out, as ``GET /healthz`` for HTTP.

Faults apply per call, scoped like HTTP rules (caller from ``x-devbox-caller`` / baggage or the
calling socket, instance, ``path`` = the method path ``/pkg.Service/Method``): latency waits before
forwarding; an abort answers UNAVAILABLE (what a client sees of a reset connection); an error
answers the gRPC status of the rule's HTTP status (:data:`HTTP_TO_GRPC`: 503 UNAVAILABLE, 500
INTERNAL...). ``method`` scopes never match a gRPC call (there is no HTTP method to compare).

LIMITATIONS: an instance that stopped answering gives callers UNAVAILABLE per call (the TCP proxy
stops listening instead, so callers get "connection refused"); compression is re-done per hop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import grpc.aio
from devbox.mocks.faults.proxy import (
    Decider,
    FaultSink,
    Front,
    RequestHead,
    SpanSink,
    TraceContext,
    incoming_context,
)
from devbox.mocks.faults.rules import Decision, caller_of

LOG = logging.getLogger(__name__)

#: Metadata a proxy must not copy: pseudo headers, HTTP/2 hop headers and those gRPC sets itself.
HOP_KEYS = frozenset({"te", "content-type", "user-agent", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding",
                      "grpc-status", "grpc-message", "connection", "host", "content-length"})
#: Context headers the proxy replaces with its own span when it makes one.
TRACE_KEYS = frozenset({"traceparent", "b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled"})
PROBE_SERVICE = "grpc.health.v1.Health"

#: An injected error's HTTP status as a gRPC status (gRPC's own HTTP-to-status mapping, plus 5xx ones).
HTTP_TO_GRPC = {
    400: grpc.StatusCode.INTERNAL, 401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED, 429: grpc.StatusCode.UNAVAILABLE, 500: grpc.StatusCode.INTERNAL,
    501: grpc.StatusCode.UNIMPLEMENTED, 502: grpc.StatusCode.UNAVAILABLE, 503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.UNAVAILABLE,
}
_OPTIONS = [("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)]

Metadata = tuple[tuple[str, "str | bytes"], ...]


def _identity(data: bytes) -> bytes:
    return data


def grpc_status(http_status: int) -> grpc.StatusCode:
    return HTTP_TO_GRPC.get(http_status, grpc.StatusCode.INTERNAL if http_status >= 500 else grpc.StatusCode.UNKNOWN)


def _peer(context: grpc.aio.ServicerContext) -> tuple[str, int]:
    """``ipv4:127.0.0.1:5050`` / ``ipv6:[::1]:5050`` as (host, port)."""
    address = (context.peer() or "").partition(":")[2]
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0


def _copyable(metadata: Any) -> list[tuple[str, str | bytes]]:
    return [(k, v) for k, v in (metadata or ()) if not k.startswith(":") and k.lower() not in HOP_KEYS]


def grpc_span(ctx: TraceContext, method: str, code: grpc.StatusCode, peer: tuple[str, int], start: float,
              end: float, details: str = "", fault: Decision | None = None) -> dict[str, Any]:
    """The proxy's SERVER span of one gRPC call, as OTLP/JSON (semantic conventions for RPC)."""
    full = method.lstrip("/")
    rpc_service, _, rpc_method = full.rpartition("/")
    attrs: list[dict[str, Any]] = [
        {"key": "rpc.system", "value": {"stringValue": "grpc"}},
        {"key": "rpc.service", "value": {"stringValue": rpc_service}},
        {"key": "rpc.method", "value": {"stringValue": rpc_method}},
        {"key": "rpc.grpc.status_code", "value": {"intValue": str(code.value[0])}},
        {"key": "client.address", "value": {"stringValue": str(peer[0])}},
        {"key": "devbox.span.source", "value": {"stringValue": "proxy"}},
    ]
    if rpc_service == PROBE_SERVICE:
        attrs.append({"key": "devbox.probe", "value": {"boolValue": True}})
    if fault is not None:
        attrs.append({"key": "devbox.fault", "value": {"stringValue": ",".join(fault.rules)}})
    failed = code != grpc.StatusCode.OK
    span: dict[str, Any] = {
        "traceId": ctx.trace_id,
        "spanId": ctx.span_id,
        "name": full,
        "kind": 2,
        "startTimeUnixNano": str(int(start * 1e9)),
        "endTimeUnixNano": str(int(max(end, start + 1e-6) * 1e9)),
        "attributes": attrs,
        "status": {"code": 2, "message": details or code.name} if failed else {"code": 0},
    }
    if ctx.parent_id:
        span["parentSpanId"] = ctx.parent_id
    return span


class _Passthrough(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc has no type stubs
    """Takes every method of every service, as raw bytes both ways."""

    def __init__(self, proxy: GrpcProxy) -> None:
        self.proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method

        # an async generator function itself: grpc.aio tells streaming behaviours apart by that
        async def behaviour(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
            async for message in self.proxy.forward(str(method), requests, context):
                yield message

        return grpc.stream_stream_rpc_method_handler(behaviour)


class GrpcProxy(Front):
    """A gRPC passthrough on an ephemeral port in front of one gRPC instance (``mode`` ``grpc``).

    Same surface as :class:`~devbox.mocks.faults.proxy.FaultProxy` for the faults component: ``address``,
    ``instance_id``, ``on_span``, ``blocked``, ``listening``, ``start``, ``suspend``, ``stop``.
    """

    mode = "grpc"

    def __init__(self, *, service: str, instance_id: str, upstream: tuple[str, int], decide: Decider,
                 on_fault: FaultSink | None = None, on_span: SpanSink | None = None) -> None:
        super().__init__(service=service, instance_id=instance_id, upstream=upstream, decide=decide,
                         on_fault=on_fault, on_span=on_span)
        self.server: grpc.aio.Server | None = None
        self._channel: grpc.aio.Channel | None = None

    @property
    def listening(self) -> bool:
        return self.server is not None

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Listen (again, on the same port after :meth:`suspend`) and return the address."""
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                f"{self.upstream[0] if self.upstream[0] not in ('', '0.0.0.0') else '127.0.0.1'}:{self.upstream[1]}",
                options=[*_OPTIONS, ("grpc.enable_http_proxy", 0)])
        host, port = self.address if self.address else (host, 0)
        server = grpc.aio.server(handlers=[_Passthrough(self)], options=[*_OPTIONS, ("grpc.so_reuseport", 0)])
        bound = server.add_insecure_port(f"{host}:{port}")
        if not bound:
            raise OSError(f"cannot listen on {host}:{port}")
        await server.start()
        self.server = server
        self.address = (host, bound)
        return self.address

    async def suspend(self) -> None:
        """Stop accepting connections (a forced circuit open); :meth:`start` listens again."""
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop(0)

    async def stop(self) -> None:
        await self.suspend()
        if self._channel is not None:
            with contextlib.suppress(Exception):
                await self._channel.close()
            self._channel = None

    async def forward(self, method: str, requests: AsyncIterator[bytes],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        """One call: decide its faults, forward it, stream the answers back, report its span."""
        self.connections += 1
        metadata = _copyable(context.invocation_metadata())
        head = RequestHead("POST", method, "HTTP/2", [(k, v) for k, v in metadata if isinstance(v, str)])
        peer = _peer(context)
        start = time.time()
        decision = await self.decide(self.service, caller_of(head.lower_map()), None, method, peer, self.instance_id)
        trace = incoming_context(head) if self.on_span is not None else None
        if decision.abort or decision.status is not None:
            code = grpc.StatusCode.UNAVAILABLE if decision.abort else grpc_status(decision.status or 503)
            details = ("connection aborted (injected by devbox)" if decision.abort
                       else f"{self.service} answered {decision.status} (injected by devbox)")
            if trace is not None and trace.sampled:
                self._span(grpc_span(trace, method, code, peer, start, time.time(), details, decision))
            else:
                self._report(decision, head, start, time.time())
            await context.abort(code, details)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
            self._report(decision, head, start, time.time())
        context_headers = self.downstream_context(trace)
        if context_headers is not None:
            outgoing = [(k, v) for k, v in metadata if k.lower() not in TRACE_KEYS]
            outgoing += [(k.lower(), v) for k, v in context_headers.items()]
        else:
            outgoing = metadata
        code, details = grpc.StatusCode.OK, ""
        assert self._channel is not None
        call = self._channel.stream_stream(method, request_serializer=_identity, response_deserializer=_identity)(
            requests, metadata=tuple(outgoing), timeout=context.time_remaining())
        try:
            initial = await call.initial_metadata()
            with contextlib.suppress(Exception):
                await context.send_initial_metadata(_copyable(initial))
            async for message in call:
                yield message
            code, details = await call.code(), await call.details() or ""
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            code, details, trailing = exc.code(), exc.details() or "", exc.trailing_metadata()
        except asyncio.CancelledError:
            code, details, trailing = grpc.StatusCode.CANCELLED, "cancelled by the caller", None
            call.cancel()
            raise
        finally:
            if trace is not None and trace.sampled:
                self._span(grpc_span(trace, method, code, peer, start, time.time(), details))
        if trailing:
            context.set_trailing_metadata(tuple(_copyable(trailing)))
        if code != grpc.StatusCode.OK:
            context.set_code(code)
            context.set_details(details)

    def _span(self, span: dict[str, Any]) -> None:
        if self.on_span is not None:
            try:
                self.on_span(self.service, self.instance_id, span)
            except Exception:
                LOG.exception("reporting a proxy span failed")

    def _report(self, decision: Decision, head: RequestHead | None, start: float, end: float) -> None:
        if self.on_fault is not None:
            try:
                self.on_fault(self.instance_id, decision, head, start, end)
            except Exception:
                LOG.exception("reporting a fault failed")
