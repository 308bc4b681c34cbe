"""The fault proxy: a listener in front of one instance that applies fault rules to what it forwards.

HTTP services get an HTTP-aware proxy: it reads each request's head (method, path, headers),
asks for a :class:`~devbox.mocks.faults.rules.Decision`, then resets the connection, answers with an
error status, or waits and forwards. It forwards one request per upstream connection (it asks
both sides for ``Connection: close``), so a rule added later applies to the very next call even
on a client's pooled connection. gRPC services get a TCP-level proxy: latency on every chunk the
client sends, and aborts of new connections — unless devbox traces the service: then its proxy is
the gRPC-aware :class:`~devbox.mocks.faults.grpc_proxy.GrpcProxy`, which sees each call.

Zero-code tracing: given ``on_span``, the HTTP proxy makes the SERVER span of each request it
forwards (:func:`server_span`): it continues the caller's W3C ``traceparent`` or B3 context (or
starts a trace), and injects its own span as the parent downstream (``traceparent`` and, when the
caller spoke B3, the ``X-B3-*`` headers), so an instrumented service's own spans nest under it. The
span carries method, path, status and peer, so a service without any OpenTelemetry SDK shows up in
traces, topology and RED metrics.

LIMITATIONS: HTTP/1.1 only in HTTP mode (no h2c upgrade); in TCP mode rules cannot be scoped by
method or path (HTTP/2 headers are compressed) and an error rate is applied as a connection abort.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from devbox.mocks.faults.rules import Decision

LOG = logging.getLogger(__name__)

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024

#: on_span(service, instance_id, span as OTLP/JSON) — the proxy's server span of one request
SpanSink = Callable[[str, str, dict[str, Any]], None]

#: decide(service, caller, method, path, peer, instance_id) -> Decision
Decider = Callable[[str, "str | None", "str | None", "str | None", "tuple[str, int]", str], Awaitable[Decision]]


@dataclass
class RequestHead:
    method: str
    path: str
    version: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    def lower_map(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers}

    def encode(self, *, extra: dict[str, str] | None = None) -> bytes:
        lines = [f"{self.method} {self.path} {self.version}"]
        drop = {"connection", "keep-alive", "proxy-connection", *(k.lower() for k in (extra or {}))}
        lines += [f"{k}: {v}" for k, v in self.headers if k.lower() not in drop]
        lines += [f"{k}: {v}" for k, v in (extra or {}).items()]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class TraceContext:
    """The incoming context the proxy continues (or a new trace), and the span it makes."""

    trace_id: str
    parent_id: str | None
    span_id: str
    sampled: bool
    b3: bool

    def headers(self) -> dict[str, str]:
        """What to send downstream so the service's own spans become children of the proxy's span."""
        flags = "01" if self.sampled else "00"
        out = {"traceparent": f"00-{self.trace_id}-{self.span_id}-{flags}"}
        if self.b3:
            out.update({"X-B3-TraceId": self.trace_id, "X-B3-SpanId": self.span_id,
                        "X-B3-Sampled": "1" if self.sampled else "0",
                        "b3": f"{self.trace_id}-{self.span_id}-{'1' if self.sampled else '0'}"})
            if self.parent_id:
                out["X-B3-ParentSpanId"] = self.parent_id
        return out


def _hex(value: str | None, length: int) -> str | None:
    value = (value or "").strip().lower()
    if len(value) == 16 and length == 32:
        value = value.rjust(32, "0")  # 64-bit B3 trace ids
    if len(value) != length or value.strip("0") == "" or any(c not in "0123456789abcdef" for c in value):
        return None
    return value


def incoming_context(head: RequestHead) -> TraceContext:
    """Continue W3C ``traceparent``, else B3 (single ``b3`` or multi ``X-B3-*``), else a new trace."""
    span_id = os.urandom(8).hex()
    parts = (head.header("traceparent") or "").split("-")
    if len(parts) >= 4:
        trace, parent = _hex(parts[1], 32), _hex(parts[2], 16)
        if trace and parent:
            return TraceContext(trace, parent, span_id, parts[3][-1:] in "13579bdf", False)
    single = (head.header("b3") or "").split("-")
    if len(single) >= 2:
        trace, parent = _hex(single[0], 32), _hex(single[1], 16)
        if trace and parent:
            return TraceContext(trace, parent, span_id, (single[2:3] or ["1"])[0] != "0", True)
    trace, parent = _hex(head.header("x-b3-traceid"), 32), _hex(head.header("x-b3-spanid"), 16)
    if trace and parent:
        return TraceContext(trace, parent, span_id, head.header("x-b3-sampled") != "0", True)
    return TraceContext(os.urandom(16).hex(), None, span_id, True, False)


def server_span(ctx: TraceContext, head: RequestHead, status: int | None, peer: tuple[str, int],
                start: float, end: float, error: str = "") -> dict[str, Any]:
    """The proxy's SERVER span of one request, as OTLP/JSON (semantic conventions for HTTP)."""
    path = head.path.split("?")[0]
    attrs: list[dict[str, Any]] = [
        {"key": "http.request.method", "value": {"stringValue": head.method}},
        {"key": "url.path", "value": {"stringValue": path}},
        {"key": "client.address", "value": {"stringValue": str(peer[0])}},
        {"key": "devbox.span.source", "value": {"stringValue": "proxy"}},
    ]
    if status is not None:
        attrs.append({"key": "http.response.status_code", "value": {"intValue": str(status)}})
    failed = bool(error) or status is None or status >= 500
    span: dict[str, Any] = {
        "traceId": ctx.trace_id,
        "spanId": ctx.span_id,
        "name": f"{head.method} {path}",
        "kind": 2,
        "startTimeUnixNano": str(int(start * 1e9)),
        "endTimeUnixNano": str(int(max(end, start + 1e-6) * 1e9)),
        "attributes": attrs,
        "status": {"code": 2, "message": error or f"HTTP {status}"} if failed else {"code": 0},
    }
    if ctx.parent_id:
        span["parentSpanId"] = ctx.parent_id
    return span


def parse_head(data: bytes) -> RequestHead:
    """Parse an HTTP/1.x request head (up to and including the blank line). Raises ValueError."""
    text = data.decode("latin-1")
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"not an HTTP/1 request line: {lines[0][:80]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:80]!r}")
        headers.append((key.strip(), value.strip()))
    return RequestHead(parts[0], parts[1], parts[2], headers)


def error_response(status: int, reason: str) -> bytes:
    body = json.dumps({"error": "fault injected by devbox", "reason": reason, "status": status}).encode()
    head = (
        f"HTTP/1.1 {status} Injected Fault\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nx-devbox-fault: {status}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST, as a crashed peer would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float = 0.0) -> None:
    try:
        while True:
            data = await reader.read(CHUNK)
            if not data:
                break
            if delay:
                await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _pipe_response(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """Forward an HTTP response, telling the client the connection closes after it.

    The proxy forwards one request per connection; without ``Connection: close`` a keep-alive
    client would send its next request on a connection the proxy is closing, and fail.
    """
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        with contextlib.suppress(Exception):
            writer.close()
        return None
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ")
    status = int(status_line[1]) if len(status_line) > 1 and status_line[1].isdigit() else None
    kept = [line for line in lines[1:] if line and line.split(":", 1)[0].strip().lower()
            not in ("connection", "keep-alive")]
    writer.write(("\r\n".join([lines[0], *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
    await _pipe(reader, writer)
    return status


#: What a proxy reports of each fault it applied: instance id, the decision, the request, start, end.
FaultSink = Callable[[str, Decision, "RequestHead | None", float, float], None]


class Front:
    """What every proxy in front of one instance holds, whatever it speaks (HTTP/TCP here, gRPC in
    :mod:`~devbox.mocks.faults.grpc_proxy`): the faults component reads and sets these."""

    def __init__(self, *, service: str, instance_id: str, upstream: tuple[str, int], decide: Decider,
                 on_fault: FaultSink | None = None, on_span: SpanSink | None = None) -> None:
        self.service = service
        self.instance_id = instance_id
        self.upstream = upstream
        self.decide = decide
        self.on_fault = on_fault
        #: Where the server span of each forwarded request goes; None: no zero-code tracing.
        self.on_span = on_span
        #: Whether a span made now may yet be dropped (``trace: auto`` before devbox knows whether the
        #: service sends spans of its own); see :meth:`downstream_context`.
        self.provisional: Callable[[str], bool] | None = None
        self.address: tuple[str, int] | None = None
        #: Connections (HTTP/TCP) or calls (gRPC) forwarded: ``connections`` in ``GET /api/faults/proxies``.
        self.connections = 0
        #: Refusing connections on purpose (a forced circuit-breaker open), not because it died.
        self.blocked = False

    def downstream_context(self, trace: TraceContext | None) -> dict[str, str] | None:
        """The context headers that replace the caller's on the way to the instance: the proxy's span
        as the parent, so an instrumented service's spans nest under it.

        None — the caller's context goes through unchanged — while that span may yet be dropped and the
        caller sent a context: were the span dropped, the service's spans would hang from a span never
        stored, and the call from its caller would vanish from the tree (the shop's first checkouts
        lost orders -> inventory so). Without a caller context the proxy's span starts the trace, and an
        uninstrumented service that passes ``traceparent`` on links its own calls under it.

        LIMITATION: for :data:`~devbox.mocks.faults.component.AUTO_HOLD` seconds after its first request,
        an uninstrumented service that passes a caller's context on makes its own calls look like its
        caller's (``trace: on`` never holds). None as well when the proxy makes no span (``trace``
        None): the caller's context goes through."""
        if trace is None:
            return None
        if trace.parent_id and self.provisional is not None and self.provisional(self.service):
            return None
        return trace.headers()


class FaultProxy(Front):
    """Listens on an ephemeral port in front of ``upstream``; one per fronted instance."""

    def __init__(self, *, service: str, instance_id: str, upstream: tuple[str, int], mode: str, decide: Decider,
                 on_fault: FaultSink | None = None, on_span: SpanSink | None = None) -> None:
        super().__init__(service=service, instance_id=instance_id, upstream=upstream, decide=decide,
                         on_fault=on_fault, on_span=on_span)
        self.mode = mode  # "http" or "tcp"
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, host: str = "127.0.0.1") -> tuple[str, int]:
        """Listen (again, on the same port after the instance came back) and return the address."""
        port = self.address[1] if self.address else 0
        self.server = await asyncio.start_server(
            self._handle, self.address[0] if self.address else host, port, limit=MAX_HEAD, backlog=512,
            reuse_address=True,
        )
        sock = self.server.sockets[0]
        self.address = sock.getsockname()[:2]
        return self.address

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the instance behind the proxy; OSError when it refuses."""
        return await asyncio.open_connection(*self.upstream, limit=MAX_HEAD)

    def _upstream_gone(self, writer: asyncio.StreamWriter) -> None:
        """The instance refuses connections (it died): behave as it does, so clients fail over.

        This connection is reset, and the proxy stops listening until the instance is registered
        again (``start`` on the same port), so the next callers get "connection refused" — what
        naming SDKs retry on another instance.
        """
        _reset(writer)
        if self.server is not None and self.server.is_serving():
            LOG.info("%s %s refuses connections: fault proxy stops listening", self.service, self.instance_id)
            self.server.close()

    @property
    def listening(self) -> bool:
        return self.server is not None and self.server.is_serving()

    async def suspend(self) -> None:
        """Stop accepting connections (a forced circuit open); :meth:`start` listens again."""
        if self.server is not None:
            self.server.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            # end open connections by closing their sockets (cancelling the handler tasks would
            # make asyncio's stream callback log a CancelledError for each)
            for writer in list(self._writers):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
            if self._tasks:
                await asyncio.wait(list(self._tasks), timeout=2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        try:
            if self.mode == "http":
                await self._http(reader, writer)
            else:
                await self._tcp(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            if task is not None:
                self._tasks.discard(task)
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _http(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raw = await reader.readuntil(b"\r\n\r\n")
        try:
            head = parse_head(raw)
        except ValueError as exc:
            writer.write(error_response(400, f"devbox fault proxy: {exc}").replace(b"Injected Fault", b"Bad Request"))
            await writer.drain()
            return
        headers = head.lower_map()
        from devbox.mocks.faults.rules import caller_of

        peer = writer.get_extra_info("peername") or ("", 0)
        start = time.time()
        decision = await self.decide(self.service, caller_of(headers), head.method, head.path.split("?")[0], peer,
                                     self.instance_id)
        if decision.abort:
            self._report(decision, head, start)
            _reset(writer)
            return
        if decision.status is not None:
            self._report(decision, head, start)
            writer.write(error_response(decision.status, f"{self.service} answered {decision.status} (injected)"))
            await writer.drain()
            return
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
            self._report(decision, head, start)
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            self._upstream_gone(writer)
            return
        self._writers.add(up_writer)
        trace = incoming_context(head) if self._makes_span(up_writer.get_extra_info("peername")) else None
        status: int | None = None
        try:
            up_writer.write(head.encode(extra=self.downstream_context(trace)))
            await up_writer.drain()
            _, status = await asyncio.gather(_pipe(reader, up_writer), _pipe_response(up_reader, writer))
        finally:
            if trace is not None and trace.sampled:
                self._span(server_span(trace, head, status, peer, start, time.time(),
                                       "" if status is not None else "no response from the instance"))
            self._writers.discard(up_writer)
            with contextlib.suppress(Exception):
                up_writer.close()

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Each chunk the client sends is one decision: a long-lived gRPC connection sees new rules."""
        peer = writer.get_extra_info("peername") or ("", 0)
        try:
            up_reader, up_writer = await self._open_upstream()
        except OSError:
            self._upstream_gone(writer)
            return
        self._writers.add(up_writer)
        back = asyncio.create_task(_pipe(up_reader, writer))
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                decision = await self.decide(self.service, None, None, None, peer, self.instance_id)
                if decision.abort or decision.status is not None:
                    self._report(decision, None, time.time(), time.time())
                    _reset(writer)
                    return
                if decision.latency_ms:
                    start = time.time()
                    await asyncio.sleep(decision.latency_ms / 1000)
                    self._report(decision, None, start, time.time())
                up_writer.write(data)
                await up_writer.drain()
            with contextlib.suppress(Exception):
                up_writer.write_eof()
            await back
        finally:
            back.cancel()
            self._writers.discard(up_writer)
            with contextlib.suppress(Exception):
                up_writer.close()

    def _makes_span(self, upstream: tuple[str, int] | None) -> bool:
        """Whether this request's server span is ours to make (given the instance it went to)."""
        return self.on_span is not None

    def _span(self, span: dict[str, Any]) -> None:
        if self.on_span is not None:
            try:
                self.on_span(self.service, self.instance_id, span)
            except Exception:
                LOG.exception("reporting a proxy span failed")

    def _report(self, decision: Decision, head: RequestHead | None, start: float, end: float | None = None) -> None:
        if self.on_fault is not None:
            try:
                self.on_fault(self.instance_id, decision, head, start, end or time.time())
            except Exception:
                LOG.exception("reporting a fault failed")
