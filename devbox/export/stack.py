"""What an export is made of, whatever the target: the project's services as images with the env
devbox injects, and the real backends behind devbox's protocols with config from the project.

- Services: the image devbox builds for ``runtime: docker`` (:func:`devbox.mocks.deploy.docker.image_tag`),
  from the service's own Dockerfile or, without one, the 123 convention (a base image plus the
  service folder, started by ``/usr/local/app/start.sh``); the env is :func:`~devbox.mocks.deploy.core.instance_env`
  with the platform's addresses replaced by the backends' and the per-instance keys left out.
  No devbox runs on the exported stack, so every service gets ``DEVBOX_REGISTER=self``: the devbox
  SDK's ``bootstrap`` registers the instance in Polaris over Polaris's HTTP client API once it
  listens, heartbeats and deregisters on shutdown, and resolves names through Polaris's
  ``/v1/Discover`` (:mod:`devbox.sdk.naming`); ``DEVBOX_HOST`` (``sdk.bind_host()``) is 0.0.0.0 where
  each service has its own network namespace (bridge network, Kubernetes), 127.0.0.1 on one host network.
- Backends: Polaris server (naming, HTTP 8090 / gRPC 8091), an OpenTelemetry Collector (OTLP in;
  traces to Jaeger; span metrics to Prometheus), Jaeger, Prometheus (the project's alert rules,
  its composite indicators as recording rules) and Alertmanager (the project's webhook receivers).
- The rule file bridges names: devbox derives ``rpc_server_requests_total{callee,method,status}``
  and ``rpc_server_duration_seconds_*`` from spans; the collector's spanmetrics connector names
  them ``traces_span_metrics_*{service_name,span_name,status_code}``. Recording rules give the
  latter devbox's names, so the project's rules and indicators evaluate unchanged.

LIMITATIONS: the ``caller`` label (and with it ``rpc_client_*`` / client_success_rate) has no
spanmetrics counterpart; indicators are rewritten textually (each counter selector becomes
``sum by (by) (increase(sel[window]))``), which covers formulas of selectors, numbers and
arithmetic — the kind devbox.yaml holds — not arbitrary PromQL. Registration and discovery on the
exported stack need services built on the devbox SDK (``sdk.bootstrap`` + ``sdk.bind_host()``); a
service on another stack must register itself with its own Polaris SDK, as ``register: self`` ones do
under devbox. Through Polaris's Discover the SDK reads instances, not devbox's routing rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devbox import envvars
from devbox.config import ProjectConfig
from devbox.mocks.alerting.rules import export_rule_file
from devbox.mocks.alerting.sources import RuleSources
from devbox.mocks.deploy import core
from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.docker import APP_DIR, dockerfile_123, image_tag, needs_generated_dockerfile
from devbox.mocks.metrics.indicators import looks_like_counter

#: Pinned images of the real backends (the same as compose/docker-compose.yaml).
POLARIS_IMAGE = "polarismesh/polaris-standalone:v1.18.1"
COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib:0.104.0"
JAEGER_IMAGE = "jaegertracing/all-in-one:1.58"
PROMETHEUS_IMAGE = "prom/prometheus:v2.53.0"
ALERTMANAGER_IMAGE = "prom/alertmanager:v0.27.0"

#: Env keys that name one instance: meaningless for an image that runs N replicas.
PER_INSTANCE = (envvars.DEVBOX_INSTANCE_ID, envvars.DEVBOX_INSTANCE_CONFIG, envvars.DEVBOX_API_URL)


@dataclass(frozen=True)
class Hosts:
    """Where a service finds each backend: by service name on a shared network, or 127.0.0.1 (host network)."""

    polaris: str = "polaris"
    collector: str = "otel-collector"
    jaeger: str = "jaeger"
    prometheus: str = "prometheus"
    alertmanager: str = "alertmanager"
    #: Jaeger's OTLP gRPC port: 4317 unless it would collide with the collector's on one host network.
    jaeger_otlp: int = 4317
    #: Polaris's HTTP and gRPC client API ports and the collector's OTLP/HTTP port, as services are told them.
    polaris_http: int = 8090
    polaris_grpc: int = 8091
    otlp_http: int = 4318

    @classmethod
    def local(cls, **ports: int) -> Hosts:
        """Everything on 127.0.0.1 (one host network); ``ports`` override the backends' defaults
        (e.g. a devbox platform standing in for Polaris and the collector on its own ports)."""
        return cls("127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1", **{"jaeger_otlp": 14317, **ports})

    @property
    def is_local(self) -> bool:
        return self.polaris == "127.0.0.1"


@dataclass
class ExportedService:
    """One service as it runs outside devbox: image, how to build it, port, env, replicas, readiness."""

    svc: ServiceConfig
    image: str
    #: Folder the image is built from (None: ``image:`` is used as it is).
    context: Path | None
    #: The 123-convention Dockerfile text when the folder has no Dockerfile of its own.
    generated_dockerfile: str | None
    port: int
    env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.svc.name


def services(config: ProjectConfig, hosts: Hosts, *, base_image: str) -> list[ExportedService]:
    """Every service of the project, with the env devbox would inject, aimed at ``hosts``."""
    facts = core.PlatformFacts(
        api_url="", namespace=config.naming.namespace if hasattr(config, "naming") else "default",
        naming_http=f"http://{hosts.polaris}:{hosts.polaris_http}", naming_grpc=f"{hosts.polaris}:{hosts.polaris_grpc}",
        otlp_http=f"http://{hosts.collector}:{hosts.otlp_http}", token=config.platform.token,
    )
    out = []
    for index, svc in enumerate(config.services):
        # one network namespace per container: every service can take the conventional 8080;
        # on the host network they need ports of their own, clear of the backends' (8080-9093)
        port = svc.port or (8080 if not hosts.is_local else 18080 + index)
        # its own network namespace: listen on every interface; one shared host network: loopback will do
        bind = "127.0.0.1" if hosts.is_local else "0.0.0.0"
        record = core.InstanceRecord(name=f"{svc.name}-1", service=svc.name, group="default", port=port, host=bind)
        tags = core.instance_tags(svc, {})
        env = core.instance_env(svc, record=record, instance_id="", tags=tags, platform=facts,
                                config_file=Path(APP_DIR) / "instance.yaml")
        for key in PER_INSTANCE:
            env.pop(key, None)
        env[envvars.DEVBOX_REGISTER] = "self"  # no devbox here to register it: the SDK does (module doc)
        env[envvars.OTEL_RESOURCE_ATTRIBUTES] = ",".join(
            item for item in env[envvars.OTEL_RESOURCE_ATTRIBUTES].split(",")
            if not item.startswith("service.instance.id=")
        )
        path = (config.root / svc.path).resolve()
        if svc.runtime == "docker" and svc.image and not needs_generated_dockerfile(svc, path):
            image, context, dockerfile = svc.image, None, None
        else:
            image, context = image_tag(config.project, svc.name), path
            generate = needs_generated_dockerfile(svc, path)
            dockerfile = dockerfile_123(svc.image or base_image) if generate else None
        out.append(ExportedService(svc=svc, image=image, context=context, generated_dockerfile=dockerfile,
                                   port=port, env=env))
    return out


# --- Prometheus rules ------------------------------------------------------------------------

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"'  # a string: left alone
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?P<matchers>\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})?"
)


def indicator_expr(formula: str, by: list[str], window: float) -> str:
    """A composite indicator as plain PromQL: what devbox computes for ``indicator`` queried by ``by``."""
    group = f"sum by ({', '.join(by)}) " if by else "sum "
    seconds = f"{window:g}s"

    def rewrite(m: re.Match[str]) -> str:
        name = m.group("name")
        if name is None or not looks_like_counter(name):
            return m.group(0)
        return f"{group}(increase({name}{m.group('matchers') or ''}[{seconds}]))"

    return _TOKEN.sub(rewrite, " ".join(formula.split()))


def _bridge_rules() -> list[dict[str, Any]]:
    """Recording rules giving the collector's span metrics devbox's names (see the module doc)."""
    server = 'span_kind="SPAN_KIND_SERVER"'

    def renamed(selector: str, extra_by: str = "") -> str:
        inner = f"sum by (service_name, span_name{extra_by}) ({selector})"
        return (f'label_replace(label_replace({inner}, "callee", "$1", "service_name", "(.*)"), '
                f'"method", "$1", "span_name", "(.*)")')

    rules: list[dict[str, Any]] = [
        {"record": "rpc_server_requests_total", "labels": {"status": "ok"},
         "expr": renamed(f'traces_span_metrics_calls_total{{{server}, status_code!="STATUS_CODE_ERROR"}}')},
        {"record": "rpc_server_requests_total", "labels": {"status": "error"},
         "expr": renamed(f'traces_span_metrics_calls_total{{{server}, status_code="STATUS_CODE_ERROR"}}')},
    ]
    for part, extra in (("sum", ""), ("count", ""), ("bucket", ", le")):
        rules.append({"record": f"rpc_server_duration_seconds_{part}",
                      "expr": renamed(f"traces_span_metrics_duration_seconds_{part}{{{server}}}", extra)})
    return rules


def prometheus_rules(config: ProjectConfig) -> dict[str, Any]:
    """The rule file: the span-metric bridge, each indicator as a recording rule, the project's alert rules."""
    sources = RuleSources(config.alerting, root=config.root, source=config.source)
    rules, errors, _ = sources.combine(sources.load())
    if errors:
        raise ValueError("the project's alert rules do not load:\n" + "\n".join(errors))
    indicators = [
        {"record": name, "expr": indicator_expr(ind.formula, ind.by, ind.window)}
        for name, ind in config.metrics.indicators.items()
    ]
    groups = [{"name": "devbox-span-metrics", "rules": _bridge_rules()},
              {"name": "devbox-indicators", "rules": indicators}]
    groups += yaml.safe_load(export_rule_file(list(rules.values())))["groups"] or []
    return {"groups": groups}


# --- backend config --------------------------------------------------------------------------


def collector_config(hosts: Hosts) -> dict[str, Any]:
    """OTLP and Zipkin in; traces to Jaeger; span metrics (seconds) for Prometheus on :8889."""
    return {
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "0.0.0.0:4317"},
                                             "http": {"endpoint": "0.0.0.0:4318"}}},
                      "zipkin": {"endpoint": "0.0.0.0:9411"}},
        "processors": {"batch": {}},
        "connectors": {"spanmetrics": {"histogram": {"unit": "s", "explicit": {"buckets": [
            "5ms", "10ms", "25ms", "50ms", "100ms", "250ms", "500ms", "1s", "2.5s", "5s"]}}}},
        "exporters": {"otlp/jaeger": {"endpoint": f"{hosts.jaeger}:{hosts.jaeger_otlp}", "tls": {"insecure": True}},
                      "prometheus": {"endpoint": "0.0.0.0:8889"}},
        "service": {"pipelines": {
            "traces": {"receivers": ["otlp", "zipkin"], "processors": ["batch"],
                       "exporters": ["otlp/jaeger", "spanmetrics"]},
            "metrics": {"receivers": ["otlp", "spanmetrics"], "processors": ["batch"], "exporters": ["prometheus"]},
        }},
    }


def prometheus_config(config: ProjectConfig, hosts: Hosts, exported: list[ExportedService],
                      rule_file: str) -> dict[str, Any]:
    """Scrape the collector and every service with ``scrape:``; the project's rules; Alertmanager."""
    interval = f"{config.metrics.scrape_interval:g}s"
    scrapes: list[dict[str, Any]] = [
        {"job_name": "otel-collector", "static_configs": [{"targets": [f"{hosts.collector}:8889"]}]},
    ]
    for item in exported:
        if item.svc.scrape:
            host = "127.0.0.1" if hosts.is_local else item.name
            scrapes.append({"job_name": item.name, "metrics_path": item.svc.scrape,
                            "static_configs": [{"targets": [f"{host}:{item.port}"]}]})
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": f"{config.alerting.interval:g}s"},
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"{hosts.alertmanager}:9093"]}]}]},
        "rule_files": [rule_file],
        "scrape_configs": scrapes,
    }


def alertmanager_config(config: ProjectConfig) -> dict[str, Any]:
    """The project's webhook receivers, each routed by its matchers (a catch-all that drops the rest)."""
    receivers: list[dict[str, Any]] = [{"name": "devbox-default"}]
    routes = []
    for rec in config.alerting.receivers:
        receivers.append({"name": rec.name, "webhook_configs": [
            {"url": rec.url, "send_resolved": rec.send_resolved, "max_alerts": 0}]})
        route: dict[str, Any] = {"receiver": rec.name, "continue": True}
        if rec.matchers:
            route["matchers"] = list(rec.matchers)
        routes.append(route)
    root: dict[str, Any] = {"receiver": "devbox-default", "group_by": ["alertname"], "group_wait": "5s",
                            "group_interval": "30s", "repeat_interval": "4h"}
    if routes:
        root["routes"] = routes
    return {"global": {"resolve_timeout": f"{config.alerting.resolve_timeout:g}s"}, "route": root,
            "receivers": receivers}


def dump(data: Any) -> str:
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, allow_unicode=True, width=120)


# --- the backends, as containers -------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    """One real backend: image, the ports it serves (by name), arguments, env and config files it reads."""

    name: str
    image: str
    ports: dict[str, int]
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    #: In-container path → name of a generated config file (see :func:`config_files`).
    files: dict[str, str] = field(default_factory=dict)
    #: HTTP path that answers 200 when the backend is ready.
    ready: str | None = None
    #: Ports only the other backends use: not published on the host (Jaeger's OTLP would clash with the collector's).
    private: tuple[str, ...] = ()


PROMETHEUS_RULES = "/etc/prometheus/devbox-rules.yml"


def backends(hosts: Hosts) -> list[Backend]:
    jaeger_env = {"COLLECTOR_OTLP_ENABLED": "true"}
    if hosts.jaeger_otlp != 4317:  # one host network: the collector holds 4317/4318
        jaeger_env |= {"COLLECTOR_OTLP_GRPC_HOST_PORT": f":{hosts.jaeger_otlp}",
                       "COLLECTOR_OTLP_HTTP_HOST_PORT": f":{hosts.jaeger_otlp + 1}"}
    return [
        Backend("polaris", POLARIS_IMAGE, {"console": 8080, "http": 8090, "grpc": 8091}),
        Backend("otel-collector", COLLECTOR_IMAGE,
                {"otlp-grpc": 4317, "otlp-http": 4318, "zipkin": 9411, "metrics": 8889},
                args=["--config=/etc/otelcol/config.yaml"], files={"/etc/otelcol/config.yaml": "otel-collector.yaml"}),
        Backend("jaeger", JAEGER_IMAGE, {"ui": 16686, "otlp-grpc": hosts.jaeger_otlp}, env=jaeger_env, ready="/",
                private=("otlp-grpc",)),
        Backend("prometheus", PROMETHEUS_IMAGE, {"http": 9090},
                args=["--config.file=/etc/prometheus/prometheus.yml", "--web.enable-lifecycle"],
                files={"/etc/prometheus/prometheus.yml": "prometheus.yml", PROMETHEUS_RULES: "rules.yml"},
                ready="/-/ready"),
        Backend("alertmanager", ALERTMANAGER_IMAGE, {"http": 9093},
                args=["--config.file=/etc/alertmanager/alertmanager.yml"],
                files={"/etc/alertmanager/alertmanager.yml": "alertmanager.yml"}, ready="/-/ready"),
    ]


def config_files(config: ProjectConfig, hosts: Hosts, exported: list[ExportedService]) -> dict[str, str]:
    """Every generated backend config file by name (what :class:`Backend.files` refers to)."""
    return {
        "otel-collector.yaml": dump(collector_config(hosts)),
        "prometheus.yml": dump(prometheus_config(config, hosts, exported, PROMETHEUS_RULES)),
        "rules.yml": dump(prometheus_rules(config)),
        "alertmanager.yml": dump(alertmanager_config(config)),
    }
