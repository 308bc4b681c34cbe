"""``devbox export compose``: this project as a compose file (services + the real backends).

Writes FILE and, next to it, ``FILE-without-suffix.d/`` with the backends' config (Prometheus
config and rule file, Alertmanager config, the collector's pipeline) and the generated
Dockerfiles of services that follow the 123 convention. Paths in the file are relative to it,
so the folder can be moved as a whole.

Two network layouts: ``bridge`` (default, the portable one; each container on the compose network,
backends found by name, every service on port 8080 inside its own container, listening on 0.0.0.0
and registering its container address) and ``host`` (``--network host``: every container on the
host network, backends and services on 127.0.0.1 — what a Docker engine without a bridge, such as
``dockerd --bridge=none`` on devbox's own test machines, can run; choose it there). On the host
network replicas cannot share a port and compose cannot vary the env per replica, so replica k
(k ≥ 2) of a service is its own compose service ``NAME-k`` on port
``PORT + REPLICA_PORT_STEP·(k-1)`` instead of ``deploy.replicas``.

Services find each other through Polaris: every service is exported with ``DEVBOX_REGISTER=self``
(see :mod:`devbox.export.stack`), so the devbox SDK registers each instance when it listens and
resolves names through Polaris's Discover. Seen working for the shop on the host layout, with a
devbox platform standing in for Polaris and the collector (tests/integration/test_export_compose.py):
every instance registered itself and ``GET /checkout/alice`` crossed gateway → users, orders →
users, inventory, payment.

LIMITATIONS: no compose healthchecks (an image FROM scratch has no shell to run them; the
Kubernetes export carries readiness probes); ``depends_on`` orders starts, it does not wait for
Polaris — the SDK retries registering until the server answers. ``deploy.replicas`` is honoured by
Compose v2 and by Debian's docker-compose 1.29 for this file (no ``version:`` key; seen starting
``orders_2``). The bridge layout has not run here (the test engine has no bridge); its services
listen on 0.0.0.0 and register the address on their route to Polaris.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Literal

from devbox import envvars
from devbox.config import ProjectConfig
from devbox.export.stack import ExportedService, Hosts, backends, config_files, dump, services
from devbox.mocks.deploy.docker import BASE_IMAGE, run_123

LOG = logging.getLogger(__name__)

Network = Literal["bridge", "host"]


#: Host network: replica k of a service listens this many ports above replica 1 (clear of the next services').
REPLICA_PORT_STEP = 100


def _service(item: ExportedService, *, here: Path, conf: Path, network: Network) -> dict[str, Any]:
    out: dict[str, Any] = {"image": item.image}
    if item.context is not None:
        build: dict[str, Any] = {"context": os.path.relpath(item.context, here)}
        if item.generated_dockerfile is not None:
            build["dockerfile"] = os.path.relpath(conf / f"{item.name}.Dockerfile", item.context)
            # the 123 image is the folder alone: where and how it starts is said here
            out["working_dir"], out["command"] = run_123(item.svc.start)
        out["build"] = build
    out["environment"] = dict(sorted(item.env.items()))
    if network == "host":
        out["network_mode"] = "host"
    elif item.svc.port and item.svc.replicas == 1:
        out["ports"] = [f"{item.svc.port}:{item.port}"]
    if item.svc.replicas != 1 and network != "host":
        out["deploy"] = {"replicas": item.svc.replicas}
    out["depends_on"] = ["polaris", "otel-collector"]
    out["restart"] = "on-failure" if item.svc.restart.enabled else "no"
    return out


def compose_document(config: ProjectConfig, out: Path, *, network: Network = "bridge",
                     base_image: str = BASE_IMAGE, hosts: Hosts | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose file for ``out`` and the files of its config folder (name → text).

    ``hosts``: where services are told the backends are (default: by name on the bridge network,
    127.0.0.1 on the host network)."""
    if hosts is None:
        hosts = Hosts.local() if network == "host" else Hosts()
    here = out.parent.resolve()
    conf = here / f"{out.stem}.d"
    exported = services(config, hosts, base_image=base_image)
    files = config_files(config, hosts, exported)
    for item in exported:
        if item.generated_dockerfile is not None:
            files[f"{item.name}.Dockerfile"] = item.generated_dockerfile
    doc: dict[str, Any] = {"services": {}}
    for backend in backends(hosts):
        entry: dict[str, Any] = {"image": backend.image, "restart": "unless-stopped"}
        if backend.args:
            entry["command"] = list(backend.args)
        if backend.env:
            entry["environment"] = dict(backend.env)
        if backend.files:
            entry["volumes"] = [f"./{conf.name}/{name}:{path}:ro" for path, name in backend.files.items()]
        if network == "host":
            entry["network_mode"] = "host"
        else:
            entry["ports"] = [f"{port}:{port}" for name, port in backend.ports.items() if name not in backend.private]
        doc["services"][backend.name] = entry
    for item in exported:
        entry = _service(item, here=here, conf=conf, network=network)
        doc["services"][item.name] = entry
        if network == "host":
            for k in range(2, item.svc.replicas + 1):
                port = item.port + REPLICA_PORT_STEP * (k - 1)
                # same image and build (a cache hit): `up` alone builds what is missing instead of pulling it
                replica = copy.deepcopy(entry)  # no shared objects: YAML would write them as &id anchors
                replica["environment"][envvars.PORT] = str(port)
                doc["services"][f"{item.name}-{k}"] = replica
    return doc, files


def write_compose(config: ProjectConfig, out: Path, *, network: Network = "bridge",
                  base_image: str = BASE_IMAGE, hosts: Hosts | None = None) -> list[Path]:
    """Write the compose file and its config folder; the paths written."""
    doc, files = compose_document(config, out, network=network, base_image=base_image, hosts=hosts)
    out.parent.mkdir(parents=True, exist_ok=True)
    conf = out.parent / f"{out.stem}.d"
    conf.mkdir(exist_ok=True)
    written = []
    for name, text in files.items():
        (conf / name).write_text(text, encoding="utf-8")
        written.append(conf / name)
    header = (f"# {config.project}: exported by `devbox export compose` ({network} network).\n"
              f"# Services as images with the env devbox injects; the real backends with config from\n"
              f"# devbox.yaml in ./{conf.name}/. Services register themselves in Polaris (DEVBOX_REGISTER=self).\n")
    out.write_text(header + dump(doc), encoding="utf-8")
    written.insert(0, out)
    return written
