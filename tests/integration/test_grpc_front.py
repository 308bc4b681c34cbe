"""The gRPC listeners' front (devbox.platform.grpc_front): grpc starts with a client's first bytes and
every connection is relayed to it, byte for byte, through real sockets and real grpc clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from devbox.mocks.naming.polaris_pb import protos

from devbox.testing import PlatformThread, running_platform, wait_for

pb = protos()
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # and an empty SETTINGS


def _register(target: str, port: int) -> int:
    with grpc.insecure_channel(target) as channel:
        answer = pb.grpcapi.PolarisGRPCStub(channel).RegisterInstance(pb.service.Instance(
            service={"value": "front"}, namespace={"value": "default"}, host={"value": "127.0.0.1"},
            port={"value": port}), timeout=30)
    return int(answer.code.value)


def _to_backend(p: PlatformThread, listener: str) -> int:
    """This process's open TCP connections to ``listener``'s grpc server (the relays' far ends)."""
    assert p.platform is not None
    _, port = p.call(p.platform.grpc_backend(listener))
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def test_clients_connecting_at_once_while_grpc_starts_are_all_served(tmp_path: Path) -> None:
    """Eight channels call at the same moment, the first connections of the listener: each waits
    for the one grpc server they start together and gets its answer."""
    with running_platform(tmp_path, components=["naming"]) as p:
        codes: list[int] = []
        barrier = threading.Barrier(8)

        def call(n: int) -> None:
            barrier.wait(30)
            codes.append(_register(p.target("polaris_grpc"), 9000 + n))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert codes == [200000] * 8
        listed = p.component("naming").registry.instances("default", "front")  # type: ignore[attr-defined]
        assert len(listed) == 8


def test_a_client_gone_takes_its_relay_with_it(tmp_path: Path) -> None:
    """Connections closed by their clients (before and after their HTTP/2 preface) leave no
    connection open to the grpc server; one left open keeps exactly its own."""
    with running_platform(tmp_path, components=["naming"]) as p:
        host, port = p.target("polaris_grpc").rsplit(":", 1)
        assert _register(p.target("polaris_grpc"), 9000) == 200000  # grpc started; its channel closed
        wait_for(lambda: _to_backend(p, "polaris_grpc") == 0, 30, "the first channel's relay closed")
        kept = socket.create_connection((host, int(port)), timeout=30)
        try:
            kept.sendall(PREFACE)
            wait_for(lambda: _to_backend(p, "polaris_grpc") == 1, 30, "the kept connection relayed")
            for n in range(20):
                with socket.create_connection((host, int(port)), timeout=30) as sock:
                    if n % 2:
                        sock.sendall(PREFACE)
            wait_for(lambda: _to_backend(p, "polaris_grpc") == 1, 30, "only the kept connection's relay open")
            assert kept.recv(9)[3] == 4  # the server's SETTINGS frame, through the relay
        finally:
            kept.close()
        wait_for(lambda: _to_backend(p, "polaris_grpc") == 0, 30, "every relay closed")


def test_a_big_export_crosses_the_relay_whole(tmp_path: Path) -> None:
    """A 20 MB OTLP/gRPC export, far past the sockets' buffers, crosses the relay under its
    backpressure and is answered; the collector stored it."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    with running_platform(tmp_path, components=["tracing"]) as p:
        request = trace_service_pb2.ExportTraceServiceRequest()
        spans = request.resource_spans.add().scope_spans.add()
        now = time.time_ns()
        for n in range(1, 2001):
            spans.spans.add(trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"), name="big",
                            start_time_unix_nano=now, end_time_unix_nano=now + 1000,
                            attributes=[{"key": "blob", "value": {"string_value": "x" * 10_000}}])
        body = request.SerializeToString()
        assert len(body) > 20_000_000
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        with grpc.insecure_channel(p.target("otlp_grpc"), options=options) as channel:
            export = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export")
            answer = trace_service_pb2.ExportTraceServiceResponse.FromString(export(body, timeout=60))
        assert not answer.partial_success.rejected_spans
        traces = p.component("tracing").collector  # type: ignore[attr-defined]
        wait_for(lambda: traces.info()["spans_stored"] == 2000, 60, "the 2000 spans stored")


def test_what_the_server_sends_before_the_relay_is_paired_reaches_the_client() -> None:
    """grpc sends its SETTINGS as soon as a connection opens, possibly before the relay pairs the
    two ends: those bytes are kept and written to the client once it is paired, not dropped."""
    from devbox.platform.grpc_front import _End

    async def main() -> bytes:
        loop = asyncio.get_running_loop()

        async def greet(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SETTINGS")
            await writer.drain()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        client, ours = socket.socketpair()
        try:
            _, back = await loop.create_connection(_End, *server.sockets[0].getsockname()[:2])
            deadline = loop.time() + 30
            while not back._early and loop.time() < deadline:  # read before any peer is set
                await asyncio.sleep(0.01)
            _, front = await loop.connect_accepted_socket(_End, ours)
            front.pair(back)
            client.setblocking(False)
            return await loop.sock_recv(client, 64)
        finally:
            client.close()
            server.close()

    assert asyncio.run(asyncio.wait_for(main(), 30)) == b"SETTINGS"


def _held_by_platform(port: int) -> int:
    """Sockets this process holds open on the listener's side of its clients' connections."""
    return sum(1 for c in psutil.Process().net_connections(kind="tcp")
               if c.laddr and c.laddr.port == port and c.raddr)


def test_grpc_closing_a_connection_closes_it_though_its_client_keeps_the_socket(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """grpc's idle GOAWAY ends the connection: the relay closes the client's side too, not only
    half (a client that keeps its socket and sends nothing held both sockets and the relay)."""
    from devbox.platform import grpc_server

    monkeypatch.setattr(grpc_server, "GRPC_IDLE_S", 1.0)
    with running_platform(tmp_path, components=["naming"]) as p:
        host, port = p.target("polaris_grpc").rsplit(":", 1)
        kept = [socket.create_connection((host, int(port)), timeout=30) for _ in range(5)]
        try:
            for sock in kept:
                sock.sendall(PREFACE)
            for sock in kept:
                answer = b""
                while chunk := sock.recv(65536):  # until the relay closes it
                    answer += chunk
                assert b"connection idle" in answer, answer
            wait_for(lambda: _held_by_platform(int(port)) == 0, 30, "the platform's side of each closed")
            assert _to_backend(p, "polaris_grpc") == 0
        finally:
            for sock in kept:
                sock.close()


class _Flood:
    """Stands in for a grpc server: answers a connection's first bytes with 8 MB, stops as grpc does."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> _Flood:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        self.address = self.server.sockets[0].getsockname()[:2]
        return self

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        await reader.read(1)
        writer.write(b"x" * 8_000_000)

    async def stop(self, grace: float) -> None:
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()


def test_a_client_that_does_not_read_does_not_hold_the_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a client leaves unread is dropped once grpc's grace is over: the listener closes in about
    that grace and keeps no connection (it waited for the write buffer to drain, for ever)."""
    from devbox.platform.grpc_front import GrpcListener

    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        flood = await _Flood().start()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = GrpcListener("flooded", sock, token=None)

        async def started() -> Any:
            return flood

        monkeypatch.setattr(listener, "_start_backend", started)
        await listener.start()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.setblocking(False)
        await loop.sock_connect(client, sock.getsockname())
        await loop.sock_sendall(client, b"hello")  # and reads nothing until the stop is over
        deadline = loop.time() + 30
        while not any(f.peer and f.transport and f.transport.get_write_buffer_size() for f in listener._fronts):
            assert loop.time() < deadline, "the flood never filled the relay's buffer"
            await asyncio.sleep(0.01)
        began = loop.time()
        await asyncio.wait_for(listener.close(grace=0.5), 30)
        took = loop.time() - began
        left = len(listener._fronts) + len(listener._tasks)
        with contextlib.suppress(ConnectionError):  # the client's connection ends (reset or closed)
            while await asyncio.wait_for(loop.sock_recv(client, 1 << 20), 30):
                pass
        client.close()
        return took, left

    took, left = asyncio.run(main())
    assert took < 5 and left == 0, (took, left)


def test_a_registrar_that_raises_is_logged_once_and_its_clients_are_closed(
        caplog: pytest.LogCaptureFixture) -> None:
    """A component's gRPC services failing to register is one error in the log, not one per client;
    each client's connection is closed (the call fails UNAVAILABLE) and the listener still stops."""
    from devbox.platform.grpc_front import GrpcListener

    def broken(server: Any) -> None:
        raise ValueError("registrar bug")

    async def main() -> list[grpc.StatusCode]:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        listener = GrpcListener("broken", sock, token=None)
        await listener.start()
        await listener.serve([broken])
        codes = []
        for _ in range(3):
            codes.append(await asyncio.to_thread(_call_status, f"127.0.0.1:{sock.getsockname()[1]}"))
        await asyncio.wait_for(listener.close(grace=0.5), 30)
        return codes

    assert asyncio.run(main()) == [grpc.StatusCode.UNAVAILABLE] * 3
    failures = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(failures) == 1 and "registrar bug" in (failures[0].exc_text or ""), failures


def _call_status(target: str) -> grpc.StatusCode:
    with grpc.insecure_channel(target) as channel:
        try:
            channel.unary_unary("/any.Service/Method")(b"", timeout=10)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    raise AssertionError("the call was answered")
