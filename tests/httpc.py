"""``httpx.get`` and friends for the tests, with the ``verify`` of :func:`devbox.tls.tls_for`.

Each ``httpx.get(...)`` builds a client, and with it a TLS context that loads the CA bundle: ~45 ms of
CPU a call, spent for nothing over the platform's plain http. The tests call its APIs thousands of times
(every wait polls), and a py-spy profile of ``make test-quick`` put 21 % of its CPU there. These take
the same arguments and still build a client (and a connection) per call, as httpx's do; a plain
``http://`` URL gets no TLS context, any other the process's default one.

The timeout is 30 s unless a call says otherwise (httpx's own is 5 s): on a busy 2-core runner a
platform's first big export waits for its check process to start (imports, seconds at load 10),
and a test that is not about latency should not fail on it; a hang still fails.
"""

from __future__ import annotations

from typing import Any

import httpx

from devbox.tls import tls_for

TIMEOUT_S = 30.0


def request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, url, verify=tls_for(url), **{'timeout': TIMEOUT_S, **kwargs})


def get(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(url, verify=tls_for(url), **{'timeout': TIMEOUT_S, **kwargs})


def post(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(url, verify=tls_for(url), **{'timeout': TIMEOUT_S, **kwargs})


def put(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.put(url, verify=tls_for(url), **{'timeout': TIMEOUT_S, **kwargs})


def delete(url: str, **kwargs: Any) -> httpx.Response:
    return httpx.delete(url, verify=tls_for(url), **{'timeout': TIMEOUT_S, **kwargs})
