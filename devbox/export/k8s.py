"""``devbox export k8s``: this project as Kubernetes manifests.

One file per service (a Deployment with the injected env, its replicas and readiness/startup
probes from ``readiness:``, and a ClusterIP Service), one per backend, and ``config.yaml`` with
the ConfigMaps: the project's alert rules (Prometheus rule file), Prometheus, Alertmanager and
collector config. Backends are found by their Service names, as on a compose network. Services
listen on 0.0.0.0 (``DEVBOX_HOST``) and register themselves in Polaris (``DEVBOX_REGISTER=self``)
at the pod's address, which is what callers reach: a ClusterIP Service in front of them is for
clients outside the mesh (see :mod:`devbox.export.stack`).

Probes: ``readiness.http`` → httpGet, ``tcp`` → tcpSocket, ``grpc`` → grpc (grpc.health.v1);
``readiness.timeout`` (how long devbox waits for a new instance) becomes the startup probe's
budget, so a slow start is not killed before devbox would have given up.

LIMITATIONS: images are referenced, not pushed (``imagePullPolicy: IfNotPresent``: load them into
the cluster, e.g. ``kind load docker-image``); no Ingress, no resource requests.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from devbox.config import ProjectConfig
from devbox.export.stack import Backend, ExportedService, Hosts, backends, config_files, dump, services
from devbox.mocks.deploy.config import Readiness
from devbox.mocks.deploy.docker import BASE_IMAGE, run_123

#: Seconds between readiness probes.
PERIOD = 2


def _labels(project: str, name: str, component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": project,
            "app.kubernetes.io/component": component, "app.kubernetes.io/managed-by": "devbox-export"}


def probe(readiness: Readiness, port: int) -> dict[str, Any]:
    """The probe action for one readiness check."""
    if readiness.kind == "http":
        return {"httpGet": {"path": readiness.http, "port": port}}
    if readiness.kind == "grpc":
        return {"grpc": {"port": port}}
    return {"tcpSocket": {"port": port}}


def _deployment(project: str, name: str, component: str, container: dict[str, Any], *, replicas: int,
                volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    labels = _labels(project, name, component)
    selector = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": project}
    pod: dict[str, Any] = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector},
                     "template": {"metadata": {"labels": labels}, "spec": pod}}}


def _service(project: str, name: str, component: str, ports: dict[str, int]) -> dict[str, Any]:
    metadata = {"name": name, "labels": _labels(project, name, component)}
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "ClusterIP",
                     "selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": project},
                     "ports": [{"name": pname, "port": port, "targetPort": port, "protocol": "TCP"}
                               for pname, port in ports.items()]}}


def service_objects(project: str, item: ExportedService) -> list[dict[str, Any]]:
    svc = item.svc
    action = probe(svc.readiness, item.port)
    container: dict[str, Any] = {
        "name": item.name, "image": item.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": svc.protocol, "containerPort": item.port, "protocol": "TCP"}],
        "env": [{"name": k, "value": v} for k, v in sorted(item.env.items())],
        "readinessProbe": {**action, "periodSeconds": PERIOD, "timeoutSeconds": 1, "failureThreshold": 1},
        "startupProbe": {**action, "periodSeconds": PERIOD, "timeoutSeconds": 1,
                         "failureThreshold": max(1, math.ceil(svc.readiness.timeout / PERIOD))},
    }
    if item.generated_dockerfile is not None:  # the 123 image is the folder alone (compose's says the same)
        container["workingDir"], container["command"] = run_123(svc.start)
    if svc.stop_timeout:
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": max(1, math.ceil(svc.drain))}}}
    return [_deployment(project, item.name, "service", container, replicas=svc.replicas),
            _service(project, item.name, "service", {svc.protocol: item.port})]


def _config_map(project: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": _labels(project, name, "config")}, "data": data}


def backend_objects(project: str, backend: Backend, maps: dict[str, str]) -> list[dict[str, Any]]:
    """A backend's Deployment and Service; its config files come from the ConfigMaps named in ``maps``."""
    container: dict[str, Any] = {
        "name": backend.name, "image": backend.image, "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": pname, "containerPort": port, "protocol": "TCP"} for pname, port in backend.ports.items()],
    }
    if backend.args:
        container["args"] = list(backend.args)
    if backend.env:
        container["env"] = [{"name": k, "value": v} for k, v in backend.env.items()]
    if backend.ready:
        port = next(iter(p for n, p in backend.ports.items() if n in ("http", "ui")))
        container["readinessProbe"] = {"httpGet": {"path": backend.ready, "port": port}, "periodSeconds": 5}
    volumes = []
    mounts = []
    for path, file in backend.files.items():
        volume = file.replace(".", "-").lower()
        volumes.append({"name": volume, "configMap": {"name": maps[file], "items": [{"key": file, "path": file}]}})
        mounts.append({"name": volume, "mountPath": path, "subPath": file, "readOnly": True})
    if mounts:
        container["volumeMounts"] = mounts
    return [_deployment(project, backend.name, "backend", container, replicas=1, volumes=volumes),
            _service(project, backend.name, "backend", backend.ports)]


def manifests(config: ProjectConfig, *, base_image: str = BASE_IMAGE) -> dict[str, list[dict[str, Any]]]:
    """Every object, grouped by the file it goes in."""
    hosts = Hosts()
    exported = services(config, hosts, base_image=base_image)
    files = config_files(config, hosts, exported)
    project = config.project
    # the alert rules get their own ConfigMap: the one a team edits; the rest is plumbing
    maps = {name: f"{project}-{'alert-rules' if name == 'rules.yml' else name.split('.')[0]}" for name in files}
    out: dict[str, list[dict[str, Any]]] = {
        "config.yaml": [_config_map(project, maps[name], {name: text}) for name, text in files.items()],
    }
    for backend in backends(hosts):
        out[f"backend-{backend.name}.yaml"] = backend_objects(project, backend, maps)
    for item in exported:
        out[f"{item.name}.yaml"] = service_objects(project, item)
    return out


def write_k8s(config: ProjectConfig, out_dir: Path, *, base_image: str = BASE_IMAGE) -> list[Path]:
    """Write the manifests into ``out_dir`` (one multi-document file per group); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, objects in manifests(config, base_image=base_image).items():
        path = out_dir / name
        path.write_text("".join("---\n" + dump(obj) for obj in objects), encoding="utf-8")
        written.append(path)
    return written
