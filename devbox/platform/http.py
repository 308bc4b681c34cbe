"""ASGI pieces shared by every HTTP listener: body limit and token check.

Plain ASGI middleware (not BaseHTTPMiddleware) so streaming bodies are counted as they arrive.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]


async def _send_json(send: Any, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses request bodies larger than ``max_bytes`` with 413, by header or while streaming."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_json(send, 413, self._reason())
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message: Message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
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
                await _send_json(send, 413, self._reason())

    def _reason(self) -> dict[str, Any]:
        return {
            "error": "request body too large",
            "reason": f"bodies over {self.max_bytes} bytes are refused; send smaller batches "
            "or raise platform.max_body_bytes",
        }


class TokenMiddleware:
    """Requires the platform token (``Authorization: Bearer T`` or ``X-Devbox-Token: T``) when set.

    Only in force when devbox binds beyond loopback; ``/healthz`` stays open for probes.
    """

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") == "/healthz":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-devbox-token") or b""
        auth = headers.get(b"authorization", b"")
        if auth.lower().startswith(b"bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given, self.token):
            await _send_json(
                send, 401, {"error": "unauthorized", "reason": "send the platform token as Authorization: Bearer"}
            )
            return
        await self.app(scope, receive, send)
