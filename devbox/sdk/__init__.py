"""devbox SDK for user services: one call makes a service traced, measured and resolvable by name.

    from devbox import sdk

    app = FastAPI()
    sdk.bootstrap(app)                      # tracing (OTLP to devbox) + naming client from env
    uvicorn.run(app, host=sdk.bind_host(), port=int(os.environ["PORT"]))
    http = sdk.http_client()                # httpx.AsyncClient: http://orders/... resolves via naming
    stock = InventoryStub(sdk.grpc_channel("inventory"))

Everything here is imported lazily: importing :mod:`devbox.sdk` loads neither OpenTelemetry nor
grpcio, so a service that never asks for a gRPC channel does not pay for grpc. The parts:

- :mod:`devbox.sdk.naming` — ``NamingClient``, ``http_client``, ``grpc_channel`` (Polaris-style
  discovery, routing rules, load balancing, circuit breaking), and the two errors a call by name
  can raise before any byte is sent: ``NamingUnavailable`` (no platform, nothing cached) and
  ``NoInstanceError`` (no instance left to call after health, breakers and routing);
- :mod:`devbox.sdk.tracing` — ``instrument`` (OpenTelemetry SDK + OTLP exporter from ``OTEL_*``);
- :mod:`devbox.sdk.metrics` — counters, gauges and custom reports;
- :mod:`devbox.sdk.logs` — one logfmt line per request and trace ids on every log record.

LIMITATIONS: ``bootstrap`` only wires what the deploy pipeline injected into the environment; a
service started without devbox still runs (tracing exports nowhere, naming falls back to whatever
:mod:`devbox.sdk.naming` does without a platform).
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from devbox import envvars

if TYPE_CHECKING:
    from devbox.sdk.naming import NamingClient

LOG = logging.getLogger(__name__)

#: Public name -> (module, attribute); attribute None means the module itself.
_LAZY: dict[str, tuple[str, str | None]] = {
    "naming": ("devbox.sdk.naming", None),
    "tracing": ("devbox.sdk.tracing", None),
    "metrics": ("devbox.sdk.metrics", None),
    "logs": ("devbox.sdk.logs", None),
    "NamingClient": ("devbox.sdk.naming", "NamingClient"),
    "NamingUnavailable": ("devbox.sdk.naming", "NamingUnavailable"),
    "NoInstanceError": ("devbox.sdk.naming", "NoInstanceError"),
    "http_client": ("devbox.sdk.naming", "http_client"),
    "grpc_channel": ("devbox.sdk.naming", "grpc_channel"),
    "instrument": ("devbox.sdk.tracing", "instrument"),
}

__all__ = ["Identity", "bind_host", "bootstrap", "identity", *_LAZY]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    return module if attr is None else getattr(module, attr)


def __dir__() -> list[str]:
    return sorted(__all__)


def bootstrap(app: Any = None, *, service_name: str | None = None) -> NamingClient:
    """Make this process a devbox citizen: trace it (and ``app``, a FastAPI/ASGI app, if given) and
    log each of its requests with the trace id (INFO, ``DEVBOX_LOG_LEVEL``), and prepare the naming
    client from the injected environment. When the env says the service registers itself
    (``DEVBOX_REGISTER=self``, as on an exported stack), also register it in naming once it listens,
    heartbeat, and deregister on shutdown (``app``'s lifespan, else process exit) — see
    :mod:`devbox.sdk.naming.register`. Returns that naming client; the
    module-level ``http_client()`` / ``grpc_channel()`` resolve through it too, and routing labels
    arriving on ``app``'s requests (``baggage: env=feature-x``) travel on with its outgoing calls.

    Call it at import time of the service's entry module, before the app serves requests; calling
    it again (another app in the same process) reuses the same naming client.
    """
    from devbox.sdk import logs, naming, tracing

    tracing.instrument(app, service_name=service_name)
    logs.install(app)  # a line per request with its trace id, so the dashboard links logs and traces
    client = naming.default_client()  # made from the env once; http_client()/grpc_channel() use it too
    naming.self_register(app)  # only with DEVBOX_REGISTER=self; once per process
    middleware = getattr(app, "user_middleware", None)
    if middleware is not None and not any(m.cls is naming.RoutingLabelsMiddleware for m in middleware):
        # routing labels (env=feature-x) arrive as baggage; keep them even when this request is not sampled
        app.add_middleware(naming.RoutingLabelsMiddleware)
    LOG.debug("devbox sdk bootstrapped for %s", service_name or "the service named by the environment")
    return client


def bind_host() -> str:
    """The address to listen on: ``DEVBOX_HOST`` as injected (127.0.0.1 under devbox, 0.0.0.0 on an
    exported stack whose services reach each other across containers), 127.0.0.1 without it."""
    return os.environ.get(envvars.DEVBOX_HOST) or "127.0.0.1"


@dataclass(frozen=True)
class Identity:
    """Who this process is, as the deploy pipeline told it: service, instance id and tags."""

    service: str
    instance_id: str
    tags: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, str]:
        """For answers that say which instance served them (routing is visible from the outside)."""
        return {"service": self.service, "instance": self.instance_id, "env": self.tags.get("env", "")}


def identity(default_service: str = "unknown") -> Identity:
    """This instance's identity from ``DEVBOX_SERVICE``, ``DEVBOX_INSTANCE_ID`` and ``DEVBOX_TAGS``."""
    tags = {}
    for pair in os.environ.get(envvars.DEVBOX_TAGS, "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            tags[key.strip()] = value.strip()
    service = os.environ.get(envvars.DEVBOX_SERVICE) or os.environ.get(envvars.OTEL_SERVICE_NAME) or default_service
    return Identity(service=service, instance_id=os.environ.get(envvars.DEVBOX_INSTANCE_ID, "local"), tags=tags)
