"""The deploy pipeline's probe (:func:`devbox.mocks.deploy.readiness.probe`) against servers that answer
well, badly or not at all, over real sockets: it says what it saw and never hangs past its timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from devbox.mocks.deploy.config import Readiness
from devbox.mocks.deploy.readiness import MAX_ANSWER_HEAD, probe

from devbox.envvars import PROBE_USER_AGENT
from tests.pyrun import python_c

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _probe_against(handler: Handler, timeout: float = 10.0) -> tuple[tuple[bool, str], list[bytes]]:
    """Probe ``GET /healthz`` on a server whose connections ``handler`` serves; (verdict, request heads seen)."""
    heads: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    async def main() -> tuple[bool, str]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            return await probe(Readiness(http="/healthz"), "127.0.0.1", port, timeout=timeout)

    return asyncio.run(main()), heads


def _answer(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(raw)
        await writer.drain()

    return handler


def test_a_2xx_is_ready_and_the_request_says_it_is_the_probe() -> None:
    (ok, seen), heads = _probe_against(_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
    assert (ok, seen) == (True, "GET /healthz -> 200")
    head = heads[0].decode().lower()
    assert head.startswith("get /healthz http/1.1\r\n")
    assert f"user-agent: {PROBE_USER_AGENT}\r\n" in head and "connection: close\r\n" in head


@pytest.mark.parametrize("raw, seen", [
    (b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", "GET /healthz -> 503"),
    # a 1xx comes before the answer, which decides
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", "GET /healthz -> 204"),
    # the status is what counts: the body is not waited for
    (b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n", "GET /healthz -> 200"),
])
def test_the_status_decides(raw: bytes, seen: str) -> None:
    verdict, _ = _probe_against(_answer(raw))
    assert verdict == (seen.endswith(("200", "204")), seen)


@pytest.mark.parametrize("raw, says", [
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", "RemoteProtocolError"),  # not HTTP
    (b"", "RemoteProtocolError"),  # closed without an answer
    (b"HTTP/1.1 200 OK\r\nx-pad: " + b"a" * (MAX_ANSWER_HEAD + 1), "RemoteProtocolError"),  # a head without end
])
def test_a_broken_answer_is_not_ready_and_says_why(raw: bytes, says: str) -> None:
    (ok, seen), _ = _probe_against(_answer(raw))
    assert not ok and seen.startswith(says), seen


def test_a_silent_instance_is_not_ready_after_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the probe gives up and closes

    (ok, seen), _ = _probe_against(silent, timeout=0.3)
    assert (ok, seen) == (False, "TimeoutError")


def test_a_closed_port_is_not_ready() -> None:
    async def main() -> tuple[bool, str]:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        return await probe(Readiness(http="/healthz"), "127.0.0.1", port, timeout=5)

    ok, seen = asyncio.run(main())
    assert not ok and seen.startswith("ConnectionRefusedError"), seen


def test_probing_loads_no_http_client_library() -> None:
    """A probe runs on the platform's loop while instances start: httpx (with its command line and
    trio, ~0.1 s of CPU) was loaded there by the first one."""
    code = ("import asyncio, sys, threading, http.server\n"
            "from devbox.mocks.deploy.config import Readiness\n"
            "from devbox.mocks.deploy.readiness import probe\n"
            "server = http.server.HTTPServer(('127.0.0.1', 0), http.server.BaseHTTPRequestHandler)\n"
            "threading.Thread(target=server.serve_forever, daemon=True).start()\n"
            "print(asyncio.run(probe(Readiness(http='/'), '127.0.0.1', server.server_address[1], timeout=10)),\n"
            "      [m for m in ('httpx', 'httpcore', 'trio') if m in sys.modules])")
    assert python_c(code) == "(False, 'GET / -> 501') []"
