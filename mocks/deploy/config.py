"""The ``services:`` list of devbox.yaml: what the deploy pipeline builds, starts and registers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Readiness(BaseModel):
    """How the pipeline decides an instance is ready. Exactly one of http, tcp, grpc."""

    model_config = ConfigDict(extra="forbid")

    http: str | None = Field(None, description="HTTP path that must answer 2xx, e.g. /healthz.")
    tcp: bool = Field(False, description="Ready when the port accepts a TCP connection.")
    grpc: bool = Field(False, description="Ready when grpc.health.v1 answers SERVING.")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait before giving up.")

    @model_validator(mode="after")
    def _one_kind(self) -> Readiness:
        kinds = [k for k, on in (("http", self.http is not None), ("tcp", self.tcp), ("grpc", self.grpc)) if on]
        if len(kinds) > 1:
            raise ValueError(f"choose one readiness check, not {' and '.join(kinds)}")
        if not kinds:
            self.tcp = True
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError(f"readiness.http must be a path starting with '/', not {self.http!r}")
        return self

    @property
    def kind(self) -> str:
        return "http" if self.http is not None else "grpc" if self.grpc else "tcp"


class RestartPolicy(BaseModel):
    """What happens when an instance exits on its own: restart with exponential backoff."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Restart an instance that exits on its own.")
    backoff: float = Field(0.5, gt=0, le=60, description="Seconds before the first restart.")
    factor: float = Field(2.0, ge=1, le=10, description="Each further restart waits this many times longer.")
    max_backoff: float = Field(30.0, gt=0, le=600, description="Longest wait between restarts.")
    crash_loop: int = Field(
        5, ge=1, le=100, description="This many crashes within `window` seconds is a crash loop: stop retrying."
    )
    window: float = Field(60.0, gt=0, description="Seconds over which crashes are counted.")
    healthy_after: float = Field(
        10.0, gt=0, description="An instance up this long is healthy again: its backoff starts over."
    )


class ServiceConfig(BaseModel):
    """One user service: where its code is, how to build and start it, how many instances."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$", description="Service name in naming.")
    path: str = Field(".", description="Folder of the service's code, relative to devbox.yaml.")
    build: str | None = Field(None, description="Shell command run in `path` before starting.")
    start: str = Field("./start.sh", description="Command that starts one instance (123 convention: start.sh).")
    replicas: int = Field(1, ge=0, le=64)
    port: int | None = Field(
        None, ge=1, le=65535,
        description="The service's stable entry port (`devbox url SERVICE`): a devbox listener that forwards to "
        "its current healthy instances, unchanged by reloads, restarts and releases. Default: a free port, "
        "chosen once per `devbox up`.",
    )
    protocol: Literal["http", "grpc"] = "http"
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment for every instance.")
    tags: dict[str, str] = Field(default_factory=dict, description="Instance metadata, e.g. env: feature-x.")
    readiness: Readiness = Field(default_factory=Readiness)
    registration: Literal["auto", "self"] = Field(
        "auto",
        alias="register",
        description="auto: devbox registers and heartbeats; self: the service uses a Polaris SDK."
    )
    reload: bool = Field(True, description="Replace instances when files under `path` change.")
    sampling: float = Field(1.0, ge=0, le=1, description="Trace sampling fraction for this service.")
    trace: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Zero-code tracing (HTTP and gRPC): devbox's proxy in front of each instance makes the server span "
        "of every request, so a service without an OpenTelemetry SDK shows in traces, topology and RED metrics. "
        "auto: on until the service sends spans of its own; on: always (its own spans nest under the proxy's); "
        "off: never.",
    )
    scrape: str | None = Field(None, description="Path of a Prometheus /metrics endpoint devbox scrapes.")
    restart: RestartPolicy = Field(default_factory=RestartPolicy, description="Restart and crash-loop policy.")
    build_timeout: float = Field(600.0, gt=0, description="Seconds a build may take before it is stopped.")
    stop_timeout: float = Field(5.0, gt=0, le=120, description="Seconds between SIGTERM and SIGKILL on stop.")
    drain: float = Field(
        1.5, ge=0, le=60,
        description="Seconds an instance keeps serving after deregistration, so clients' caches drop it.",
    )
    runtime: Literal["process", "docker"] = Field(
        "process",
        description="process: run `start` on this machine; docker: run a container (needs a Docker engine).",
    )
    image: str | None = Field(
        None,
        description="docker runtime: the image to run; default: built from the Dockerfile in `path`.",
    )
    watch_ignore: list[str] = Field(
        default_factory=list,
        description="Extra glob patterns (relative to `path`) whose changes do not trigger a reload.",
    )
