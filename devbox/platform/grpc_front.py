"""A gRPC listener that holds its port from the start and loads grpc on its first client's bytes.

grpc binds its own sockets and cannot serve one it is handed, so the listener's port is served by
an asyncio server that relays each connection, byte for byte, to the listener's grpc server
(:mod:`devbox.platform.grpc_server`) on a loopback port. That server, and grpc itself, start when
the first client sends its first bytes: an idle platform, or one whose services speak only HTTP,
never loads them (~13 MB of its memory), and neither does a port probe that only connects. The
relay is transparent to HTTP/2: GOAWAY, keepalive pings and grpc's own handshake and idle timeouts
reach the client as grpc sends them. grpc closing a connection closes it (what it sent is written
first, for at most ``DRAIN_S``); a client's half-close is passed on. A side that cannot keep up
pauses reading from the other (the transports' write buffers). On stop, what a client leaves unread
does not hold the platform: after grpc's grace, every connection left is aborted.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from devbox.platform import http as platform_http

if TYPE_CHECKING:
    from devbox.platform.grpc_server import Backend

LOG = logging.getLogger(__name__)

Registrar = Callable[[Any], None]
#: Seconds a connection closed by its other side may take to write what it still holds (a client
#: that does not read) before it is aborted.
DRAIN_S = 10.0


class _End(asyncio.Protocol):
    """One side of a relayed connection: what it reads is written to its peer's transport. Its EOF
    closes both sides, unless ``half_close`` (the client's side: passed on to grpc as a half-close)."""

    half_close = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._eof = False
        self._early: list[bytes] = []  # read before the peer was set (grpc's SETTINGS, sent at once)
        self._held = False  # reading paused because the peer's write buffer is full

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(data)
        elif self.peer.transport is not None:
            self.peer.transport.write(data)

    def pair(self, peer: _End) -> None:
        """Relay between this side and ``peer`` from now on, starting with what either read already."""
        self.peer, peer.peer = peer, self
        for end in (self, peer):
            for data in end._early:
                end.data_received(data)
            end._early.clear()

    def eof_received(self) -> bool:
        self._eof = True
        peer = self.peer
        if (not self.half_close or peer is None or peer.transport is None or peer._eof
                or not peer.transport.can_write_eof()):
            return False  # the connection is over (or no half-close is possible): close
        peer.transport.write_eof()
        return True  # the other direction still flows

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None:
            self.peer.close(drain=DRAIN_S)

    # the peer's reading follows this side's writing: a client that does not read stops its relay
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.hold(True)

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.hold(False)

    def hold(self, held: bool) -> None:
        self._held = held
        if self.transport is not None:
            if held:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def close(self, *, drain: float | None = None) -> None:
        """Close after writing what is buffered; with ``drain``, abort if that takes longer."""
        transport = self.transport
        if transport is None:
            return
        transport.close()
        if drain is not None and transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(drain, self.abort)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _Front(_End):
    """A client's connection to the listener. Its first bytes start the relay (and grpc, if this is
    the listener's first client); reading waits until the grpc server is reached. A connection that
    sends nothing within the head timeout is closed: a port probe or a stalled client loads nothing."""

    half_close = True

    def __init__(self, listener: GrpcListener) -> None:
        super().__init__()
        self.listener = listener
        self._silence: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener._fronts.add(self)
        self._silence = asyncio.get_running_loop().call_later(platform_http.HEAD_TIMEOUT_S, self.close)

    def data_received(self, data: bytes) -> None:
        if self.peer is None and not self._early:
            assert self.transport is not None and self._silence is not None
            self._silence.cancel()
            self.transport.pause_reading()
            self.listener._start_relay(self)
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._silence is not None:
            self._silence.cancel()
        self.listener._fronts.discard(self)
        super().connection_lost(exc)


class GrpcListener:
    """The listener ``name`` on the bound, listening ``sock``: every call is answered UNAVAILABLE
    "starting" until :meth:`serve` gives it the components' registrars.

    If grpc's server cannot start (grpc cannot be imported or bound, a registrar raises), that is
    logged once and every later client's connection is closed; the rest of the platform serves on."""

    def __init__(self, name: str, sock: socket.socket, *, token: str | None) -> None:
        self.name = name
        self._sock = sock
        self._token = token
        self._registrars: list[Registrar] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._backend: asyncio.Future[Backend] | None = None
        self._fronts: set[_Front] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Front(self), sock=self._sock)

    async def serve(self, registrars: Iterable[Registrar]) -> None:
        """Serve what ``registrars`` add (once only): until now every call was told "starting"."""
        self._registrars = list(registrars)
        if self._backend is not None and self._backend.done() and not self._backend.exception():
            # the registrars import their servicers' modules: off the loop
            await asyncio.to_thread(self._backend.result().table.serve, self._registrars)

    async def backend(self) -> Backend:
        """The running grpc server, started by the first caller (and the others wait for it).
        RuntimeError once the listener is closing; whatever failed if the server could not start."""
        if self._backend is None:
            if self._closing:
                raise RuntimeError(f"{self.name} is closing")
            self._backend = asyncio.ensure_future(self._start_backend())
        return await asyncio.shield(self._backend)

    async def _start_backend(self) -> Backend:
        try:
            # importing grpc takes ~0.1 s of CPU: in a thread, so the loop keeps serving meanwhile
            module = await asyncio.to_thread(importlib.import_module, "devbox.platform.grpc_server")
            backend: Backend = await module.start(self.name, token=self._token)
        except Exception:
            LOG.exception("%s: grpc's server could not start; gRPC clients' connections are closed", self.name)
            raise
        try:
            if self._registrars is not None:
                await asyncio.to_thread(backend.table.serve, self._registrars)
        except Exception:
            LOG.exception("%s: a component's gRPC services could not be added; gRPC clients' connections "
                          "are closed", self.name)
            await backend.stop(0)
            raise
        LOG.info("%s: grpc loaded by a first client, serving on %s:%d", self.name, *backend.address)
        return backend

    def _start_relay(self, front: _Front) -> None:
        if self._closing:
            front.close()
            return
        task = asyncio.create_task(self._relay(front), name=f"grpc-relay:{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, front: _Front) -> None:
        try:
            host, port = (await self.backend()).address
            loop = asyncio.get_running_loop()
            _, back = await loop.create_connection(_End, host, port)
        except Exception as exc:  # logged once where the server failed; refused while stopping
            LOG.debug("%s: closing a client's connection: %r", self.name, exc)
            front.close()
            return
        if front.transport is None or back.transport is None:  # either side left meanwhile
            front.close()
            back.close()
            return
        front.pair(back)
        if not front._held:  # replaying its first bytes may already have filled the way to grpc
            front.transport.resume_reading()
        await front.closed
        await back.closed

    async def close(self, grace: float) -> None:
        """Stop accepting, let grpc end its calls within ``grace`` s (GOAWAY), then close the rest:
        after that a connection still open (its client does not read what it was sent) is aborted."""
        self._closing = True
        if self._server is not None:
            self._server.close()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                backend = await self._backend
                await backend.stop(grace)
        for front in list(self._fronts):
            front.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for front in list(self._fronts):
            front.abort()
            if front.peer is not None:
                front.peer.abort()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        if self._server is not None:
            await self._server.wait_closed()
        self._sock.close()
