"""Every environment variable devbox reads or injects, as documented constants, and the one header
the deploy pipeline's probes carry: the contract between the platform and the services it runs.

Only :mod:`devbox.config` reads the environment for the platform; the deploy pipeline injects the
``INJECTED`` ones into user services, and the SDK (:mod:`devbox.sdk`) reads those back.
"""

from __future__ import annotations

# --- read by the platform -------------------------------------------------------------------
#: Path of the project's config file when ``-f`` is not given.
DEVBOX_CONFIG = "DEVBOX_CONFIG"
#: Token required from clients when the platform binds to a non-loopback host.
DEVBOX_TOKEN = "DEVBOX_TOKEN"
#: Base URL of a running platform's API, for the CLI (default from the config's api port).
DEVBOX_API = "DEVBOX_API"

# --- injected into every user-service instance by the deploy pipeline ------------------------
#: The port the instance must listen on.
PORT = "PORT"
#: The service's name as declared in devbox.yaml.
DEVBOX_SERVICE = "DEVBOX_SERVICE"
#: The instance id, as registered in naming.
DEVBOX_INSTANCE_ID = "DEVBOX_INSTANCE_ID"
#: Path of the generated per-instance config file (YAML, the 123 convention).
DEVBOX_INSTANCE_CONFIG = "DEVBOX_INSTANCE_CONFIG"
#: Comma-separated ``key=value`` tags of the instance (env, set, version, ...).
DEVBOX_TAGS = "DEVBOX_TAGS"
#: Base URL of the platform's HTTP API (``http://127.0.0.1:7070``).
DEVBOX_API_URL = "DEVBOX_API_URL"
#: ``host:port`` of the Polaris gRPC API.
DEVBOX_NAMING_GRPC = "DEVBOX_NAMING_GRPC"
#: Base URL of the Polaris HTTP API.
DEVBOX_NAMING_HTTP = "DEVBOX_NAMING_HTTP"
#: Namespace services register in.
DEVBOX_NAMESPACE = "DEVBOX_NAMESPACE"
#: ``self``: the service registers itself (the SDK does it in ``bootstrap`` from the env below, with
#: heartbeats, and deregisters on shutdown); ``auto``: devbox registers it (the SDK does nothing).
#: ``devbox export`` sets ``self``: on an exported stack no devbox runs to register anything.
DEVBOX_REGISTER = "DEVBOX_REGISTER"
#: The address the instance listens on (``sdk.bind_host()``): 127.0.0.1 under devbox; 0.0.0.0 where
#: other machines or containers must reach it (an exported stack on a bridge network, Kubernetes).
DEVBOX_HOST = "DEVBOX_HOST"
#: The instance's protocol as declared in devbox.yaml (http, grpc, tcp): what self-registration reports.
DEVBOX_PROTOCOL = "DEVBOX_PROTOCOL"
#: Default load balancer of the naming SDK: weighted_random (default), round_robin or ring_hash.
DEVBOX_NAMING_BALANCER = "DEVBOX_NAMING_BALANCER"
#: Trace sampling fraction for this service (0..1), honoured by the SDK bootstrap.
DEVBOX_SAMPLING = "DEVBOX_SAMPLING"

# --- standard OpenTelemetry variables the pipeline injects ------------------------------------
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_EXPORTER_OTLP_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
#: ``Authorization=Bearer%20<platform.token>`` when the platform wants a token.
OTEL_EXPORTER_OTLP_HEADERS = "OTEL_EXPORTER_OTLP_HEADERS"
OTEL_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_TRACES_SAMPLER = "OTEL_TRACES_SAMPLER"
OTEL_TRACES_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
OTEL_PROPAGATORS = "OTEL_PROPAGATORS"

# --- sent by the deploy pipeline's probes -----------------------------------------------------
#: The User-Agent of the pipeline's readiness and liveness probes (the start of it for gRPC, whose
#: library appends its own): every instance is probed every second or two, and the SDK does not trace
#: a request that carries it (a ``get /healthz`` trace every 1.7 s per instance hid the real ones and
#: kept the tracing pipeline busy on an idle platform). A request to the same path from anyone else is
#: traced as usual.
PROBE_USER_AGENT = "devbox-probe"
