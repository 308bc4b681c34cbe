"""Request bodies as sent: undoing ``Content-Encoding`` within a size limit.

Light on purpose (zlib and the error classes): the tracing check processes read exports with it.
"""

from __future__ import annotations

import zlib

from devbox.platform.errors import TooLarge, UnsupportedMediaType


def inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo a request's ``Content-Encoding`` (gzip, deflate — zlib or raw — or identity), reading at
    most ``limit`` bytes of what it inflates to: a small body may inflate to gigabytes. Raises
    :class:`~devbox.platform.errors.UnsupportedMediaType` for another encoding,
    :class:`~devbox.platform.errors.TooLarge` past ``limit`` and ``ValueError`` (saying why) for a
    body that is not the data it claims to be."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS if body[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise UnsupportedMediaType(f"Content-Encoding {encoding!r} is not supported (use gzip, deflate or none)")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit:
        raise TooLarge(f"body is over {limit} bytes once decompressed")
    if not inflater.eof:
        raise ValueError(f"body is truncated {encoding} data")
    return out
