"""Tracing bootstrap for user services: one call sets up OpenTelemetry the devbox way.

    from devbox.sdk.tracing import instrument
    instrument(app)          # app: a FastAPI app, or None

Everything comes from the environment the deploy pipeline injects (see :mod:`devbox.envvars`):
``OTEL_SERVICE_NAME`` (or ``DEVBOX_SERVICE``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf`` default,
``http/json`` is sent as protobuf, ``grpc``), and ``DEVBOX_SAMPLING`` — the service's sampling
fraction, applied as a parent-based trace-id ratio sampler so a trace is kept or dropped whole.

It installs the SDK tracer provider (batch OTLP export), the propagators (W3C tracecontext and
baggage, B3 single and multi headers accepted on the way in; set ``OTEL_PROPAGATORS`` to choose
yourself) and the instrumentations: FastAPI/ASGI (the given app, else every app created later),
httpx, and gRPC (client channels, sync server and ``grpc.aio`` server).

Requests from liveness and readiness probes (devbox's deploy pipeline, the kubelet) are not traced:
see :data:`PROBE_AGENTS`. Calling it again is harmless: the provider is set up once per process and
each instrumentation once. Importing this module has no side effects.

LIMITATIONS: without ``OTEL_EXPORTER_OTLP_ENDPOINT`` spans are created and propagated but not
exported (a service run outside devbox still works); gRPC servers must be created after
``instrument()`` to be traced (the instrumentation wraps ``grpc.server``/``grpc.aio.server``).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from devbox import envvars

LOG = logging.getLogger(__name__)

#: ASGI's per-message "http send"/"http receive" spans: leaves that copy the server span's status,
#: so a 5xx made every hop look like an error origin (root cause) and doubled the span count.
_ASGI_NOISE: list = ["receive", "send"]
#: Marks the provider this module installed, so a second call reuses it.
_MARK = "_devbox_instrumented"


def sampling_fraction(env: dict[str, str] | os._Environ[str] | None = None) -> float | None:
    """``DEVBOX_SAMPLING`` as a fraction in [0, 1]; None when unset or not a number in range."""
    env = os.environ if env is None else env
    raw = env.get(envvars.DEVBOX_SAMPLING)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        LOG.warning("%s=%r is not a number; sampling everything", envvars.DEVBOX_SAMPLING, raw)
        return None
    if not 0.0 <= value <= 1.0:
        LOG.warning("%s=%r is outside [0, 1]; sampling everything", envvars.DEVBOX_SAMPLING, raw)
        return None
    return value


def _service_name(explicit: str | None) -> str | None:
    return explicit or os.environ.get(envvars.OTEL_SERVICE_NAME) or os.environ.get(envvars.DEVBOX_SERVICE) or None


def _exporter() -> Any | None:
    """The OTLP span exporter the environment asks for (None without an endpoint), built on its first
    export: see :class:`_BuiltOnFirstExport`."""
    endpoint = (os.environ.get(envvars.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
                or os.environ.get(envvars.OTEL_EXPORTER_OTLP_ENDPOINT))
    if not endpoint:
        LOG.info("no %s: spans are not exported", envvars.OTEL_EXPORTER_OTLP_ENDPOINT)
        return None
    protocol = os.environ.get(envvars.OTEL_EXPORTER_OTLP_PROTOCOL, "http/protobuf").strip().lower()
    return _BuiltOnFirstExport(_grpc_exporter if protocol == "grpc" else _http_exporter)


def _grpc_exporter() -> Any:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter()  # reads the endpoint and options from OTEL_EXPORTER_OTLP_*


def _http_exporter() -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


class _BuiltOnFirstExport:
    """A span exporter that makes the real one when it first has spans to send — in the batch span
    processor's thread, after the service serves: the OTLP/HTTP exporter's stack (requests, urllib3,
    charset_normalizer) is ~80 ms of CPU, and in `devbox up` every instance used to pay it before it
    answered readiness, all of them at once on the same cores. Nothing is lost meanwhile: spans wait in
    the processor's queue, as they do for any export."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._exporter: Any = None
        self._lock = threading.Lock()

    def _real(self) -> Any:
        with self._lock:
            if self._exporter is None:
                self._exporter = self._build()
            return self._exporter

    def export(self, spans: Any) -> Any:
        return self._real().export(spans)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter is None or bool(self._exporter.force_flush(timeout_millis))

    def shutdown(self) -> None:
        if self._exporter is not None:
            self._exporter.shutdown()


#: Span attributes that carry a request's User-Agent at the span's start: HTTP (old and new semantic
#: conventions, as the ASGI instrumentation sets them) and gRPC (from the call's metadata).
_USER_AGENT_KEYS = ("http.user_agent", "user_agent.original", "rpc.user_agent")
#: How the probes that run a service begin their User-Agent: devbox's deploy pipeline, and the kubelet
#: (``kube-probe/1.30``) on the stack ``devbox export k8s`` writes, whose manifests probe every 5 s.
PROBE_AGENTS = (envvars.PROBE_USER_AGENT, "kube-probe/")


def is_probe(attributes: Any) -> bool:
    """Whether a span about to start serves a liveness or readiness probe (its User-Agent starts with one
    of :data:`PROBE_AGENTS`)."""
    if not attributes:
        return False
    for key in _USER_AGENT_KEYS:
        agent = attributes.get(key)
        if isinstance(agent, str) and agent.startswith(PROBE_AGENTS):
            return True
    return False


def _not_probes(inner: Any) -> Any:
    """``inner`` (the sampler the service asked for) with the pipeline's probes dropped: an instance is
    probed every second or two, and a trace per probe would bury the service's real traces and keep the
    exporter and the platform's tracing busy while the service is idle."""
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NotProbes(Sampler):
        def should_sample(self, parent_context: Any, trace_id: int, name: str, kind: Any = None,
                          attributes: Any = None, links: Any = None, trace_state: Any = None) -> SamplingResult:
            if is_probe(attributes):
                return SamplingResult(Decision.DROP)
            return inner.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

        def get_description(self) -> str:
            return f"NotProbes{{{inner.get_description()}}}"

    return NotProbes()


def _propagators() -> None:
    if os.environ.get(envvars.OTEL_PROPAGATORS):
        return  # the SDK already built what the user asked for
    from opentelemetry.baggage.propagation import W3CBaggagePropagator
    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.propagators.b3 import B3MultiFormat
    from opentelemetry.propagators.composite import CompositePropagator
    from opentelemetry.propagators.textmap import TextMapPropagator
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    class B3Accepted(TextMapPropagator):
        """Reads B3 (single ``b3`` or ``X-B3-*`` headers) from callers that send it; never writes it."""

        def __init__(self) -> None:
            self._b3 = B3MultiFormat()

        def extract(self, carrier: Any, context: Any = None, getter: Any = None) -> Any:
            if getter is None:
                return self._b3.extract(carrier, context=context)
            return self._b3.extract(carrier, context=context, getter=getter)

        def inject(self, carrier: Any, context: Any = None, setter: Any = None) -> None:
            return None

        @property
        def fields(self) -> set[str]:
            return set()

    # Order matters on extract: a later propagator wins, so W3C beats B3 when both are sent.
    set_global_textmap(CompositePropagator(
        [B3Accepted(), TraceContextTextMapPropagator(), W3CBaggagePropagator()]
    ))


def _provider(service_name: str | None) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    current = trace.get_tracer_provider()
    if getattr(current, _MARK, False):
        return current
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    resource = Resource.create(attributes)  # merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME
    fraction = sampling_fraction()
    sampler = ParentBased(TraceIdRatioBased(fraction)) if fraction is not None else None
    provider = TracerProvider(resource=resource, sampler=sampler)  # None: OTEL_TRACES_SAMPLER or the default
    provider.sampler = _not_probes(provider.sampler)
    exporter = _exporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
    setattr(provider, _MARK, True)
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        LOG.warning("another tracer provider was installed first; devbox tracing is not active")
    _propagators()
    return provider


def instrument_grpc() -> None:
    """Trace gRPC clients and servers (sync and ``grpc.aio``) created from now on. Idempotent."""
    if importlib.util.find_spec("grpc") is None:
        return
    from opentelemetry.instrumentation.grpc import (
        GrpcAioInstrumentorClient,
        GrpcAioInstrumentorServer,
        GrpcInstrumentorClient,
        GrpcInstrumentorServer,
    )

    for instrumentor in (GrpcInstrumentorClient(), GrpcInstrumentorServer(), GrpcAioInstrumentorClient(),
                         GrpcAioInstrumentorServer()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def instrument(app: Any = None, *, service_name: str | None = None) -> Any:
    """Set up OpenTelemetry for this service (once) and trace ``app`` if given; returns the
    tracer provider. See the module docstring for what is read from the environment."""
    provider = _provider(_service_name(service_name))
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    if app is not None:
        if not getattr(app, "_is_instrumented_by_opentelemetry", False):
            FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=_ASGI_NOISE)
    else:
        fastapi_instrumentor = FastAPIInstrumentor()
        if not fastapi_instrumentor.is_instrumented_by_opentelemetry:
            fastapi_instrumentor.instrument(tracer_provider=provider, exclude_spans=_ASGI_NOISE)
    httpx_instrumentor = HTTPXClientInstrumentor()
    if not httpx_instrumentor.is_instrumented_by_opentelemetry:
        httpx_instrumentor.instrument(tracer_provider=provider)
    instrument_grpc()
    return provider
