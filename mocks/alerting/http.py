"""Request-reading helpers shared by alerting's HTTP adapters: JSON bodies, and user-input parse
errors turned into the platform's :class:`~devbox.platform.errors.BadRequest`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request

from devbox.platform.errors import BadRequest


@contextmanager
def refused(code: str = "bad_request") -> Iterator[None]:
    """A ValueError inside (a parse of what the client sent) refuses the request: 400, its message."""
    try:
        yield
    except ValueError as exc:
        raise BadRequest(str(exc), code=code) from None


async def read_json(request: Request, *, required: bool = True) -> Any:
    """The request's JSON body (``None`` for an empty body when not ``required``); ValueError says why not."""
    return decode_json(await request.body(), required=required)


def decode_json(raw: bytes, *, required: bool = True) -> Any:
    """:func:`read_json` of a body already read (callers decode a big one on a thread)."""
    if not raw:
        if required:
            raise ValueError("the request needs a JSON body")
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
