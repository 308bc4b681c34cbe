"""The ``verify`` argument of devbox's httpx clients.

With ``verify=True`` httpx builds a TLS context for each client, loading the CA bundle: ~45 ms of CPU.
A client of the platform's own listeners (plain http) never uses it, and short-lived clients
(``httpx.get``, a client per call or per downstream) would pay it again each time. :func:`tls_for`
gives a plain ``http://`` URL no context at all and any other the one default context of the process.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


@functools.cache
def default_tls() -> ssl.SSLContext:
    """The context ``verify=True`` means (the CA bundle loaded), built once a process."""
    import httpx  # not at import: devbox.cli.common imports httpx its own way

    return httpx.create_ssl_context()


def tls_for(url: str) -> ssl.SSLContext | bool:
    """``verify`` for a client of ``url``: False for plain http (no TLS is ever done), else :func:`default_tls`."""
    return False if url.startswith("http://") else default_tls()
