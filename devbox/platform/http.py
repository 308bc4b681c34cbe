"""ASGI pieces shared by every HTTP listener: body limit, body read timeout and token check.

Plain ASGI middleware (not BaseHTTPMiddleware) so streaming bodies are counted as they arrive.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

from devbox.platform import auth

Scope = dict[str, Any]
Message = dict[str, Any]


async def _send_json(send: Any, status: int, body: dict[str, Any], *, close: bool = False) -> None:
    """A JSON answer; ``close`` also ends the connection (the rest of a refused body is not read)."""
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


#: Seconds from a request's first byte until its request line and headers must all have arrived
#: (and how long a new connection may stay silent). A real client writes its head in one go, in
#: microseconds; 10 s leaves room for one descheduled for seconds on a busy, CPU-starved machine,
#: and still frees a slot a slowloris client holds long before the 120 s of the keep-alive timer.
#: The gRPC listeners give a new connection as long for its HTTP/2 preface (:mod:`devbox.platform.grpc_front`).
HEAD_TIMEOUT_S = 10.0

#: Seconds a request body may stall between two chunks before the request is answered 408 and
#: the connection closed: a client that sends half a body and waits must not hold a slot forever.
BODY_READ_TIMEOUT = 30.0


class BodyTooLarge(Exception):
    pass


class BodyStalled(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies larger than ``max_bytes`` with 413 (by header or while streaming),
    and bodies that stall for ``read_timeout`` seconds between chunks with 408 (then closes).

    The read timeout applies only until the body is complete: afterwards ``receive()`` only
    waits for the client to disconnect (long polls, streamed answers), which may take as long
    as it likes.
    """

    def __init__(self, app: Any, max_bytes: int, read_timeout: float = BODY_READ_TIMEOUT) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, self._reason(), close=True)
            return
        seen = 0
        started = False
        body_done = False

        async def counting_receive() -> Message:
            nonlocal seen, body_done
            if body_done:
                return await receive()  # type: ignore[no-any-return]
            try:
                message: Message = await asyncio.wait_for(receive(), self.read_timeout)
            except TimeoutError:
                raise BodyStalled from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _send_json(send, 413, self._reason(), close=True)
        except BodyStalled:
            if not started:
                reason = (f"the request body stalled for {self.read_timeout:g}s before it was complete; "
                          "send the whole body without pausing")
                await _send_json(send, 408, {"error": "request_timeout", "reason": reason}, close=True)

    def _reason(self) -> dict[str, Any]:
        return {
            "error": "request body too large",
            "reason": f"bodies over {self.max_bytes} bytes are refused; send smaller batches "
            "or raise platform.max_body_bytes",
        }


class TokenMiddleware:
    """Requires the platform token when one is set (see :mod:`devbox.platform.auth` for which
    headers carry it); ``/healthz`` stays open for probes.

    Browsers cannot send a header when a link is opened, so ``?token=T`` is accepted too: on a
    page a browser asked for (``Accept: text/html``) it is answered with a redirect to the same
    URL without the token, setting the ``devbox_token`` cookie (HttpOnly, SameSite=Strict) that
    every later request of the dashboard then carries. ``devbox dashboard``/``devbox up`` print
    such a link.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers") or []]
        given = auth.candidates(headers)
        given += [v for k, v in _cookies(headers) if k == auth.COOKIE]
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        from_link = [v for k, v in query if k == "token"]
        if auth.matches(self.token, given):
            await self.app(scope, receive, send)
            return
        if from_link and auth.matches(self.token, from_link):
            accept = dict(headers).get("accept", "")
            if scope.get("method") == "GET" and "text/html" in accept:
                await self._set_cookie(scope, query, send)
                return
            await self.app(scope, receive, send)
            return
        await _send_json(send, 401, {"error": "unauthorized", "reason": auth.HOW})

    async def _set_cookie(self, scope: Scope, query: list[tuple[str, str]], send: Any) -> None:
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = (scope.get("root_path", "") + scope.get("path", "/")) + (f"?{rest}" if rest else "")
        cookie = f"{auth.COOKIE}={quote(self.token)}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _cookies(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out = []
    for key, value in headers:
        if key == "cookie":
            for part in value.split(";"):
                name, sep, val = part.strip().partition("=")
                if sep:
                    out.append((name, unquote(val)))
    return out
