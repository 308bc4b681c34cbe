"""A deadline and a size bound on reading a request's head, which uvicorn does not have.

uvicorn times out only the idle wait *between* requests (``timeout_keep_alive``); a client that
opens a connection and sends half a request head (``GET / HTTP/1.1\\r\\nHost: x\\r\\n`` and then
nothing, or one byte every few seconds: slowloris) holds it open forever. :class:`HeadTimeoutProtocol`
is uvicorn's httptools protocol (what ``http="auto"`` picks with ``uvicorn[standard]``) with one
timer per connection, as nginx's ``client_header_timeout`` and Apache's ``mod_reqtimeout`` have:

- from the first byte of a request, its request line and headers must be complete within
  ``head_timeout`` seconds, or the request is answered ``408 Request Timeout`` with a JSON reason
  and ``Connection: close``, and the connection closed;
- a new connection that sends nothing at all for ``head_timeout`` seconds is closed without an
  answer (there is no request to answer; a 408 nobody asked for confuses clients that connect ahead);
- a request whose line and headers pass ``max_head_bytes`` (1 MiB, Go's default) before they are
  complete is answered ``431 Request Header Fields Too Large`` with a JSON reason, and the
  connection closed: httptools itself has no bound;
- an idle keep-alive connection between requests is left to uvicorn's keep-alive timer, and a
  request's body to the listener's body read timeout (:class:`devbox.platform.http.BodyLimitMiddleware`):
  this timer covers the head only, so a large export streaming in is never cut by it.

It relies on uvicorn's ``HttpToolsProtocol`` hooks (the httptools parser callbacks
``on_message_begin``/``on_headers_complete``/``on_message_complete``, ``data_received``,
``connection_made``/``connection_lost``, and the ``loop``/``transport``/``cycle``/``server_state``
attributes) and on its ``RequestResponseCycle``'s ``response_complete`` flag and ``on_response``
callback (called once an answer is sent); ``tests/integration/test_hostile_input.py`` checks they are there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from devbox.platform.http import HEAD_TIMEOUT_S

LOG = logging.getLogger(__name__)

#: Bytes a request's line and headers may take (Go's ``http.DefaultMaxHeaderBytes``, what Prometheus,
#: Alertmanager and Jaeger answer with). httptools has no bound: a 50 MB header was read, held
#: (+54 MB of RSS) and answered 200. Past this the request is answered ``431`` and the connection closed.
MAX_HEAD_BYTES = 1024 * 1024
#: Seconds a refused connection is still read (and what comes dropped) after its answer, before it is
#: closed: closing a socket with unread bytes sends a reset, which can discard the answer before the
#: client reads it (a client still sending its oversized head saw only ECONNRESET). nginx's lingering close.
LINGER_S = 2.0


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 408 to a request head that is not complete within
    ``head_timeout`` seconds of its first byte (see the module's docstring)."""

    #: Read when a timer is armed, so a test can shorten it on a running platform (monkeypatch).
    head_timeout: ClassVar[float] = HEAD_TIMEOUT_S
    max_head_bytes: ClassVar[int] = MAX_HEAD_BYTES

    _timer: asyncio.TimerHandle | None = None
    #: From the first byte of a request until its headers are complete.
    _in_head = False
    #: From a request's complete headers until its body is complete: bytes that arrive then are body.
    _in_body = False
    #: Bytes received since the current request's first byte, while its head is incomplete.
    _head_bytes = 0
    #: Answered with a refusal: what still arrives is dropped until the connection closes.
    _lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._close_silent)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if data and not self._in_head and not self._in_body:
            self._begin_head()
        head_before = self._in_head
        super().data_received(data)
        if head_before and self._in_head:  # the head is still incomplete after all of this read
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._disarm()
                self._refuse(431, "request_header_fields_too_large",
                             f"the request's line and headers exceed {self.max_head_bytes} bytes; "
                             "send fewer or smaller headers")

    def on_message_begin(self) -> None:
        # A second request in the same read as the end of the first (pipelined) starts its clock here.
        if not self._in_head:
            self._begin_head()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head, self._in_body = False, True
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        super().on_message_complete()

    def _begin_head(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._arm(self._refuse_slow_head)

    def _arm(self, fire: Callable[[], None], delay: float | None = None) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.head_timeout if delay is None else delay, fire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _close_silent(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            LOG.debug("closing a connection that sent nothing for %gs", self.head_timeout)
            self.transport.close()

    def _refuse_slow_head(self) -> None:
        self._timer = None
        if self.transport.is_closing() or not self._in_head:
            return
        timeout = f"{self.head_timeout:g} s"
        self._refuse(408, "request_timeout",
                     f"the request's headers did not arrive within {timeout}; "
                     "send the request line and headers at once")

    def _refuse(self, status: int, error: str, reason: str) -> None:
        """Answer ``status`` with a JSON ``error`` and ``reason`` and close the connection (or, while an
        earlier pipelined request's answer is in flight, close it after that answer)."""
        # From here what arrives is dropped: fed to httptools, a head past the bound grows without one.
        self._lingering = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The answer to an earlier (pipelined) request is still being written: end the connection
            # after it rather than writing this answer into the middle of it. Not by uvicorn's
            # shutdown(): its close right after that answer, the client still sending, is a reset
            # (ECONNRESET in place of EOF, half the time on loopback), which can discard the answer
            # before the client reads it; the lingering close below ends with EOF.
            LOG.info("%s: %s; closing after the answer in flight", _peer(self.client), reason)
            answered = cycle.on_response

            def close_after_answer() -> None:
                answered()
                self._close_lingering()

            cycle.on_response = close_after_answer
            return
        LOG.info("%s: %s; answered %d", _peer(self.client), reason, status)
        payload = json.dumps({"error": error, "reason": reason}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(payload)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + payload)
        self._close_lingering()

    def _close_lingering(self) -> None:
        """End the connection after what is written, still reading (and dropping) for ``LINGER_S``."""
        if self.transport.is_closing():
            return
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the answer ends here; the client's EOF then ends the connection
        self._arm(self.transport.close, LINGER_S)


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
