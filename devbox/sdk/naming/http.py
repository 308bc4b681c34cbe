"""The httpx side of naming: ``http://orders/...`` goes to an instance the naming client picked.

Owns the sync and async httpx transports (:class:`NamingTransport`, :class:`AsyncNamingTransport`),
the :data:`HASH_KEY` request extension for ring-hash picks, the failover rule (one retry on a
connect error, and for idempotent methods on a connection that died before answering), and
:class:`UnresolvedService`, the ``httpx.ConnectError`` a name nothing resolves surfaces as.
Both transports drive one :class:`_Call`, which holds everything but the sending itself.

Only dot-free URL hosts are resolved (a dotted host is DNS), and httpx lowercases hosts, so
services called over httpx need dot-free lowercase names.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx

from devbox.polaris.balancer import NoInstanceError
from devbox.sdk.naming.instance import Instance, NamingUnavailable
from devbox.sdk.naming.labels import baggage_header, current_labels
from devbox.sdk.naming.spans import record_unresolved

if TYPE_CHECKING:
    from devbox.sdk.naming.client import NamingClient, Snapshot

LOG = logging.getLogger(__name__)

#: ``httpx`` request extension: a key for consistent hashing (ring hash), e.g. the user id, so
#: ``http.get("http://carts/...", extensions={HASH_KEY: user})`` keeps a user on one instance.
HASH_KEY = "devbox_hash_key"

_RETRY_ON = (httpx.ConnectError, httpx.ConnectTimeout)
#: Idempotent requests also fail over when a (pooled) connection died before any answer came.
_RETRY_IDEMPOTENT = (httpx.RemoteProtocolError, httpx.ReadError)
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _retryable(exc: Exception, request: httpx.Request) -> bool:
    if isinstance(exc, _RETRY_ON):
        return True
    return isinstance(exc, _RETRY_IDEMPOTENT) and request.method in _IDEMPOTENT


class UnresolvedService(httpx.ConnectError):
    """An httpx error for a service name naming cannot turn into an instance (no platform and no
    cache, or no instance left after health, breakers and routing); ``__cause__`` says which."""


def _unresolved(exc: Exception, request: httpx.Request) -> UnresolvedService:
    error = UnresolvedService(str(exc), request=request)
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def _unresolved_when_unavailable(request: httpx.Request) -> Iterator[None]:
    """Naming with no platform and no cache looks like a connect error to an httpx caller."""
    try:
        yield
    except NamingUnavailable as exc:
        raise _unresolved(exc, request) from exc


class _Call:
    """One request's way to an instance, minus the sending (which is sync or async): pick and
    retarget, report each outcome to the breaker, and allow at most one failover."""

    def __init__(self, client: NamingClient, request: httpx.Request, snap: Snapshot) -> None:
        self.client = client
        self.request = request
        self.service = request.url.host
        self.snap = snap
        self.route = client._request(
            current_labels(),
            headers=dict(request.headers),
            query=dict(request.url.params),
            method=request.method,
            path=request.url.path,
        )
        key = request.extensions.get(HASH_KEY)
        self.key = None if key is None else str(key)
        self.tried: list[str] = []
        self.failed: httpx.TransportError | None = None
        self.instance: Instance | None = None
        self.started = 0.0

    def next(self) -> httpx.Request:
        """The request, retargeted at the next instance; raises when none is left to try."""
        try:
            instance = self.client._pick(self.service, self.snap, self.route, self.key, exclude=self.tried)[0]
        except NoInstanceError as exc:
            if self.failed is not None:
                raise self.failed from None  # nothing to fail over to: the connect error is the news
            record_unresolved(self.service, str(exc))
            raise _unresolved(exc, self.request) from exc
        request = self.request
        request.url = request.url.copy_with(host=instance.host, port=instance.port)
        request.headers["Host"] = instance.address
        if self.route.labels and "baggage" not in request.headers:
            request.headers["baggage"] = baggage_header(self.route.labels)
        self.instance = instance
        self.started = time.perf_counter()
        return request

    def answered(self, response: httpx.Response) -> httpx.Response:
        assert self.instance is not None
        self.client.report(self.instance, response.status_code < 500, time.perf_counter() - self.started)
        return response

    def broke(self, exc: httpx.TransportError) -> None:
        """Report the failed send; re-raise ``exc`` unless this is the one failover allowed."""
        assert self.instance is not None
        self.client.report(self.instance, False, time.perf_counter() - self.started)
        self.tried.append(self.instance.id)
        if self.failed is not None or not _retryable(exc, self.request):
            raise exc
        self.failed = exc
        LOG.info("naming: %s at %s failed (%r); failing over", self.service, self.instance.address, exc)


class NamingTransport(httpx.BaseTransport):
    """Sync transport: ``http://orders/x`` → a picked instance; one failover on connect errors
    (and, for idempotent methods, on a connection that died before answering).

    Naming failures surface as :class:`UnresolvedService` (an ``httpx.ConnectError``), so code
    that handles ``httpx.HTTPError`` handles them too.
    """

    def __init__(self, client: NamingClient, inner: httpx.BaseTransport) -> None:
        self.client = client
        self.inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not self.client.resolves(request.url.host):
            return self.inner.handle_request(request)
        with _unresolved_when_unavailable(request):
            _, snap = self.client._snapshot(request.url.host)
        call = _Call(self.client, request, snap)
        while True:
            sent = call.next()
            try:
                return call.answered(self.inner.handle_request(sent))
            except httpx.TransportError as exc:
                call.broke(exc)

    def close(self) -> None:
        self.inner.close()


class AsyncNamingTransport(httpx.AsyncBaseTransport):
    """Async transport: :class:`NamingTransport`'s rules for ``httpx.AsyncClient``."""

    def __init__(self, client: NamingClient, inner: httpx.AsyncBaseTransport) -> None:
        self.client = client
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.client.resolves(request.url.host):
            return await self.inner.handle_async_request(request)
        with _unresolved_when_unavailable(request):
            _, snap = await self.client._asnapshot(request.url.host)
        call = _Call(self.client, request, snap)
        while True:
            sent = call.next()
            try:
                return call.answered(await self.inner.handle_async_request(sent))
            except httpx.TransportError as exc:
                call.broke(exc)

    async def aclose(self) -> None:
        await self.inner.aclose()
