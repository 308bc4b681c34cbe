"""``httpx.get`` and friends for the tests, with one TLS context per process instead of one per call.

Each ``httpx.get(...)`` builds a client, and with it a TLS context that loads the CA bundle
(SSL_CERT_FILE, else certifi's): ~45 ms of CPU a call, spent for nothing over the platform's plain
http. The tests call its APIs thousands of times (every wait polls), and a py-spy profile of
``make test-quick`` put 21 % of its CPU there. These take the same arguments and still build a
client (and a connection) per call, as httpx's do; only the TLS context, built on first use, is shared.
"""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def _tls() -> ssl.SSLContext:
    return httpx.create_ssl_context()


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=_tls(), **kwargs)


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=_tls(), **kwargs)


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=_tls(), **kwargs)


def put(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.put(url, verify=_tls(), **kwargs)


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, verify=_tls(), **kwargs)
