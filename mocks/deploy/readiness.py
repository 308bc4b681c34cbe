"""Readiness and liveness probes: HTTP path (2xx), TCP connect, or grpc.health.v1 SERVING."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from devbox.mocks.deploy.config import Readiness

from devbox.envvars import PROBE_USER_AGENT

LOG = logging.getLogger(__name__)

#: Bytes of an answer's status line and headers a probe reads before it calls the answer malformed.
MAX_ANSWER_HEAD = 64 * 1024


async def probe(check: Readiness, host: str, port: int, *, timeout: float = 1.0) -> tuple[bool, str]:
    """One probe of an instance; (ok, what was seen)."""
    try:
        if check.http is not None:
            import h11  # with the first HTTP probe (~20 ms), not at the start of every platform

            try:
                status = await asyncio.wait_for(http_status(host, port, check.http), timeout)
            except h11.ProtocolError as exc:
                return False, _seen(exc)
            return 200 <= status < 300, f"GET {check.http} -> {status}"
        if check.grpc:
            return await _grpc_health(host, port, timeout)
        return await listening(host, port, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        return False, _seen(exc)


def _seen(exc: BaseException) -> str:
    """What a failed probe saw: the error's type, and its message when it has one."""
    return f"{type(exc).__name__}: {exc}".rstrip(": ")


async def http_status(host: str, port: int, path: str) -> int:
    """The status of ``GET path`` on a fresh connection, closed once the status line and headers are
    read (the body is not waited for). Every instance is probed every second or two on the platform's
    loop: this is ~0.3 ms of CPU where a request through httpx was ~3 ms, most of an idle platform's
    CPU. h11 makes and reads the messages; the request carries :data:`PROBE_USER_AGENT` so the SDK
    does not trace it. Raises OSError (refused, reset), ``h11.ProtocolError`` (not HTTP/1.x, or an
    answer head past :data:`MAX_ANSWER_HEAD`)."""
    import h11

    reader, writer = await asyncio.open_connection(host, port)
    try:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_ANSWER_HEAD)
        headers = [("host", f"{host}:{port}"), ("user-agent", PROBE_USER_AGENT), ("connection", "close")]
        writer.write(conn.send(h11.Request(method="GET", target=path, headers=headers))
                     + conn.send(h11.EndOfMessage()))
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))  # b"": the instance closed; h11 says if too soon
            elif isinstance(event, h11.Response):
                return event.status_code
            # an InformationalResponse (1xx) comes before the answer: read on
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def listening(host: str, port: int, *, timeout: float = 1.0) -> tuple[bool, str]:
    """Whether the port accepts a TCP connection; (ok, what was seen). The tcp check itself, and the
    cheap look before an http or grpc probe while a starting instance has not bound its port yet:
    ~0.15 ms of CPU against ~1 ms for a refused request through httpx (and more for a grpc channel),
    on the platform's loop, for every instance, several times a second."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return False, _seen(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"tcp {port} open"


async def _grpc_health(host: str, port: int, timeout: float) -> tuple[bool, str]:
    import grpc.aio
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # grpc puts its own agent after this one: "devbox-probe grpc-python-asyncio/1.x ..."
    options = [("grpc.primary_user_agent", PROBE_USER_AGENT)]
    async with grpc.aio.insecure_channel(f"{host}:{port}", options=options) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return False, f"grpc health: {exc.code().name}"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    return reply.status == health_pb2.HealthCheckResponse.SERVING, f"grpc health: {status}"
