"""Naming for user services: resolve by service name, route, balance, break circuits.

    client = NamingClient.from_env()          # DEVBOX_API_URL, DEVBOX_NAMESPACE, DEVBOX_SERVICE, DEVBOX_TAGS
    inst = client.pick("orders", labels={"env": "feature-x"})
    client.report(inst, ok=True, latency=0.012)
    print(client.explain("orders", {"env": "feature-x"}))

    async with http_client() as http:          # http://orders/... resolves through naming
        await http.get("http://orders/orders/42")
    stub = InventoryStub(grpc_channel("polaris://inventory"))

This package only re-exports; the parts, each owning one concern:

- :mod:`~devbox.sdk.naming.client` — :class:`NamingClient`: the per-service cache fed by the
  platform's watch, picks (routing rules, balancer, circuit breakers from :mod:`devbox.polaris`),
  ``explain``, and the process's default client behind :func:`http_client` / :func:`grpc_channel`;
- :mod:`~devbox.sdk.naming.labels` — routing labels: OTel baggage merged with
  :func:`routing_labels`, the W3C ``baggage`` codec, :class:`RoutingLabelsMiddleware`;
- :mod:`~devbox.sdk.naming.http` — the httpx transports (``http://orders/...``), :data:`HASH_KEY`,
  failover, :class:`UnresolvedService`;
- :mod:`~devbox.sdk.naming.grpc` — :class:`NamingChannel`, a grpc.aio channel look-alike;
- :mod:`~devbox.sdk.naming.spans` — each pick as a ``devbox.naming.pick`` event on the current span;
- :mod:`~devbox.sdk.naming.instance` — :class:`Instance` and :class:`NamingUnavailable`;
- :mod:`~devbox.sdk.naming.register` — :func:`self_register`: the instance registers itself over
  Polaris's HTTP client API, heartbeats and deregisters, when ``DEVBOX_REGISTER=self``.

The SDK ships without the server: nothing here imports :mod:`devbox.mocks`.

LIMITATIONS: discovery speaks the devbox watch API (``DEVBOX_API_URL``) or, without it, Polaris's
HTTP ``/v1/Discover`` (``DEVBOX_NAMING_HTTP``: instances only, no routing rules) — not Polaris's gRPC
Discover; with neither, names are not resolved (the http transport passes requests through
unchanged, picks raise :class:`NamingUnavailable`). Through the transports, naming failures look like the
protocol's own: :class:`UnresolvedService` (an ``httpx.ConnectError``) and gRPC UNAVAILABLE.
"""

# ruff: noqa: E402  (httpx is loaded below before the modules that import it)
from __future__ import annotations

from devbox.httpcore_loader import load_httpx

# every client the SDK makes is an httpx one, sending through httpcore: load both before the modules
# below import httpx, without trio and without httpx's own CLI (~0.15 s of each instance's start,
# before it answers readiness; see devbox.httpcore_loader)
load_httpx()

from devbox.polaris.balancer import NoInstanceError
from devbox.sdk.naming.client import NamingClient, default_client, grpc_channel, http_client
from devbox.sdk.naming.grpc import NamingChannel
from devbox.sdk.naming.http import HASH_KEY, AsyncNamingTransport, NamingTransport, UnresolvedService
from devbox.sdk.naming.instance import Instance, NamingUnavailable
from devbox.sdk.naming.labels import (
    RoutingLabelsMiddleware,
    baggage_header,
    current_labels,
    parse_baggage,
    routing_labels,
)
from devbox.sdk.naming.register import SelfRegistration, self_register

__all__ = [
    "HASH_KEY",
    "AsyncNamingTransport",
    "Instance",
    "NamingChannel",
    "NamingClient",
    "NamingTransport",
    "NamingUnavailable",
    "NoInstanceError",
    "RoutingLabelsMiddleware",
    "SelfRegistration",
    "UnresolvedService",
    "baggage_header",
    "current_labels",
    "default_client",
    "grpc_channel",
    "http_client",
    "parse_baggage",
    "routing_labels",
    "self_register",
]
