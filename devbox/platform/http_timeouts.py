"""A deadline on reading a request's head, which uvicorn does not have.

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
- an idle keep-alive connection between requests is left to uvicorn's keep-alive timer, and a
  request's body to the listener's body read timeout (:class:`devbox.platform.http.BodyLimitMiddleware`):
  this timer covers the head only, so a large export streaming in is never cut by it.

It relies on uvicorn's ``HttpToolsProtocol`` hooks (the httptools parser callbacks
``on_message_begin``/``on_headers_complete``/``on_message_complete``, ``data_received``,
``connection_made``/``connection_lost``, ``shutdown``, and the ``loop``/``transport``/``cycle``/
``server_state`` attributes); ``tests/integration/test_hostile_input.py`` checks they are there.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

LOG = logging.getLogger(__name__)

#: Seconds from a request's first byte until its request line and headers must all have arrived
#: (and how long a new connection may stay silent). A real client writes its head in one go, in
#: microseconds; 10 s leaves room for one descheduled for seconds on a busy, CPU-starved machine,
#: and still frees a slot a slowloris client holds long before the 120 s of the keep-alive timer.
#: The gRPC listeners give a new connection as long for its HTTP/2 preface (``_serve_grpc``).
HEAD_TIMEOUT_S = 10.0


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, answering 408 to a request head that is not complete within
    ``head_timeout`` seconds of its first byte (see the module's docstring)."""

    #: Read when a timer is armed, so a test can shorten it on a running platform (monkeypatch).
    head_timeout: ClassVar[float] = HEAD_TIMEOUT_S

    _timer: asyncio.TimerHandle | None = None
    #: From the first byte of a request until its headers are complete.
    _in_head = False
    #: From a request's complete headers until its body is complete: bytes that arrive then are body.
    _in_body = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._close_silent)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if data and not self._in_head and not self._in_body:
            self._begin_head()
        super().data_received(data)

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
        self._arm(self._refuse_slow_head)

    def _arm(self, fire: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(self.head_timeout, fire)

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
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The answer to an earlier (pipelined) request is still being written: end the
            # connection after it rather than writing a 408 into the middle of it.
            self.shutdown()
            return
        timeout = f"{self.head_timeout:g} s"
        reason = f"the request's headers did not arrive within {timeout}; send the request line and headers at once"
        LOG.info("%s: %s; answered 408", _peer(self.client), reason)
        payload = json.dumps({"error": "request_timeout", "reason": reason}).encode()
        head = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: " + str(len(payload)).encode() + b"\r\n",
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + payload)
        self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"
