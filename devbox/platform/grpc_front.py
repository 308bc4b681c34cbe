"""A gRPC listener that holds its port from the start and loads grpc on its first client's bytes.

grpc binds its own sockets and cannot serve one it is handed, so the listener's port is served by
an asyncio server that relays each connection, byte for byte, to the listener's grpc server
(:mod:`devbox.platform.grpc_server`) on a loopback port. That server, and grpc itself, start when
the first client sends its first bytes: an idle platform, or one whose services speak only HTTP,
never loads them (~13 MB of its memory), and neither does a port probe that only connects. The
relay is transparent to HTTP/2: GOAWAY, keepalive pings and grpc's own handshake and idle timeouts
reach the client as grpc sends them; either side closing closes the other; a side that cannot keep
up pauses reading from the other (the transports' write buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import socket
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from devbox.platform import http_timeouts

if TYPE_CHECKING:
    from devbox.platform.grpc_server import Backend

LOG = logging.getLogger(__name__)

Registrar = Callable[[Any], None]


class _End(asyncio.Protocol):
    """One side of a relayed connection: what it reads is written to its peer's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _End | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self._eof = False
        self._early: list[bytes] = []  # read before the peer was set (grpc's SETTINGS, sent at once)

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
        if peer is None or peer.transport is None or peer._eof or not peer.transport.can_write_eof():
            return False  # both directions done (or no half-close possible): close
        peer.transport.write_eof()
        return True  # the other direction still flows

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # the peer's reading follows this side's writing: a client that does not read stops its relay
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _Front(_End):
    """A client's connection to the listener. Its first bytes start the relay (and grpc, if this is
    the listener's first client); reading waits until the grpc server is reached. A connection that
    sends nothing within the head timeout is closed: a port probe or a stalled client loads nothing."""

    def __init__(self, listener: GrpcListener) -> None:
        super().__init__()
        self.listener = listener
        self._silence: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.listener._fronts.add(self)
        self._silence = asyncio.get_running_loop().call_later(http_timeouts.HEAD_TIMEOUT_S, self.close)

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
    "starting" until :meth:`serve` gives it the components' registrars."""

    def __init__(self, name: str, sock: socket.socket, *, token: str | None) -> None:
        self.name = name
        self._sock = sock
        self._token = token
        self._registrars: list[Registrar] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._backend: asyncio.Future[Backend] | None = None
        self._fronts: set[_Front] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def loaded(self) -> bool:
        """Whether a client has connected, so grpc and its server run."""
        return self._backend is not None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Front(self), sock=self._sock)

    def serve(self, registrars: Iterable[Registrar]) -> None:
        """Serve what ``registrars`` add (once only): until now every call was told "starting"."""
        self._registrars = list(registrars)
        if self._backend is not None and self._backend.done() and not self._backend.exception():
            self._backend.result().table.serve(self._registrars)

    async def backend(self) -> Backend:
        """The running grpc server, started by the first caller (and the others wait for it)."""
        if self._backend is None:
            self._backend = asyncio.ensure_future(self._start_backend())
        return await asyncio.shield(self._backend)

    async def _start_backend(self) -> Backend:
        # importing grpc takes ~0.1 s of CPU: in a thread, so the loop keeps serving meanwhile
        module = await asyncio.to_thread(importlib.import_module, "devbox.platform.grpc_server")
        backend: Backend = await module.start(self.name, token=self._token)
        if self._registrars is not None:
            backend.table.serve(self._registrars)
        LOG.info("%s: grpc loaded by a first client, serving on %s:%d", self.name, *backend.address)
        return backend

    def _start_relay(self, front: _Front) -> None:
        task = asyncio.create_task(self._relay(front), name=f"grpc-relay:{self.name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay(self, front: _Front) -> None:
        try:
            host, port = (await self.backend()).address
            loop = asyncio.get_running_loop()
            _, back = await loop.create_connection(_End, host, port)
        except Exception:
            LOG.exception("%s: could not reach its grpc server; closing the client's connection", self.name)
            front.close()
            return
        if front.transport is None or back.transport is None:  # either side left meanwhile
            front.close()
            back.close()
            return
        front.pair(back)
        front.transport.resume_reading()
        await front.closed
        await back.closed

    async def close(self, grace: float) -> None:
        """Stop accepting, let grpc end its calls within ``grace`` s (GOAWAY), then close the rest."""
        if self._server is not None:
            self._server.close()
        if self._backend is not None:
            with contextlib.suppress(Exception):
                backend = await self._backend
                await backend.stop(grace)
        for front in list(self._fronts):
            front.close()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace + 1)
        if self._server is not None:
            await self._server.wait_closed()
        self._sock.close()
