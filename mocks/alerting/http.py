"""Request-reading helpers shared by alerting's HTTP adapters: JSON bodies, and user-input parse
errors turned into the platform's :class:`~devbox.platform.errors.BadRequest`."""

from __future__ import annotations

import json
import re
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
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"the body is not valid JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(raw):
        try:  # JSON's \\ud800 escapes decode to strings no UTF-8 store or answer can hold
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the body holds text that is not valid Unicode (a lone UTF-16 surrogate escape, "
                             "e.g. \\ud800)") from None
    return value


#: A UTF-16 surrogate escape: only then can json.loads make a string that is not valid Unicode.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
