"""``devbox export compose``: the shop's export parses with Debian's docker-compose (1.29, `config -q`),
its Prometheus rules and Alertmanager config pass promtool/amtool, and the part buildable here comes
up by that compose file on the real engine: a Go service image FROM scratch, and the shop's five
Python services on devbox's base image (every replica answering its health check). The backends
(Polaris, the collector, Jaeger, Prometheus, Alertmanager) are registry images that cannot be pulled
here, so they are left out of the `up`; the services start without them.

The exported shop also works as a whole: with a devbox platform standing in for Polaris and the
collector (devbox's naming server speaks Polaris's HTTP client API), every exported service
registers itself (DEVBOX_REGISTER=self; the SDK — this checkout's, mounted over the image's copy —
no devbox deploy), ``GET /checkout/alice`` on the
gateway crosses gateway → users, orders → users, inventory (gRPC), payment, every call resolved by
name through Polaris's Discover, and ``down`` deregisters every instance."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from devbox.mocks.deploy.base_image import build_base, copy_devbox
from devbox.mocks.deploy.docker import BASE_IMAGE, connect, image_tag, missing_image
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devbox.config import load_config
from devbox.export.compose import write_compose
from devbox.export.stack import Hosts
from devbox.testing import DOCKER_ROOT, EngineUnavailable, docker_engine, running_platform, wait_for
from tests import httpc
from tests.docker_images import write_go_service

ROOT = Path(__file__).resolve().parents[2]
SHOP = ROOT / "scenarios" / "shop" / "devbox.yaml"


def _compose(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    if shutil.which("docker-compose") is None:
        pytest.skip("Debian's docker-compose is not installed (make install installs it)")
    return subprocess.run(["docker-compose", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("network", ["bridge", "host"])
def test_shop_export_parses_with_docker_compose(tmp_path: Path, network: str) -> None:
    out = tmp_path / "compose.yaml"
    write_compose(load_config(SHOP), out, network=network)  # type: ignore[arg-type]
    check = _compose("-f", str(out), "config", "-q")
    assert check.returncode == 0, check.stderr
    doc = yaml.safe_load(out.read_text())
    backends = {"polaris", "otel-collector", "jaeger", "prometheus", "alertmanager"}
    assert backends | {"gateway", "orders"} <= set(doc["services"])
    orders = doc["services"]["orders"]
    if network == "bridge":
        assert orders["deploy"] == {"replicas": 2}
    else:  # one host network: the second replica is its own service on its own port
        assert "deploy" not in orders and "orders-3" not in doc["services"]
        second = doc["services"]["orders-2"]["environment"]
        assert {**second, "PORT": orders["environment"]["PORT"]} == orders["environment"]
        assert second["PORT"] != orders["environment"]["PORT"]
    assert orders["environment"]["OTEL_SERVICE_NAME"] == "orders"
    naming = "127.0.0.1:8091" if network == "host" else "polaris:8091"
    assert orders["environment"]["DEVBOX_NAMING_GRPC"] == naming
    # no Dockerfile in the shop's folders: the 123 convention, generated next to the file
    dockerfile = (out.parent / orders["build"]["context"] / orders["build"]["dockerfile"]).resolve()
    assert dockerfile.read_text().endswith("COPY . /usr/local/app/\n")
    # one build instruction (each copies the whole image on vfs): where and how it starts is said here
    assert orders["working_dir"] == "/usr/local/app" and orders["command"] == ["/usr/local/app/start.sh"]
    assert doc["services"]["payment"]["environment"]["FRAUD_CHECK_ABOVE_CENTS"] == "50000"


def test_backend_config_passes_the_real_tools(tmp_path: Path) -> None:
    out = tmp_path / "compose.yaml"
    write_compose(load_config(SHOP), out)
    conf = tmp_path / "compose.d"
    for tool, args in (("promtool", ["check", "rules", str(conf / "rules.yml")]),
                       ("amtool", ["check-config", str(conf / "alertmanager.yml")])):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (make install)")
        result = subprocess.run([tool, *args], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    # prometheus.yml names the rule file at its path in the container; check it against the local copy
    prom = yaml.safe_load((conf / "prometheus.yml").read_text())
    prom["rule_files"] = [str(conf / "rules.yml")]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(prom))
    result = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = {r.get("alert") for g in yaml.safe_load((conf / "rules.yml").read_text())["groups"] for r in g["rules"]}
    assert {"ShopSuccessRateLow", "ShopEntryFailing", "ShopCheckoutSlow"} <= alerts


def test_exported_go_service_comes_up_on_the_real_engine(tmp_path: Path) -> None:
    try:
        docker_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    write_go_service(tmp_path / "hello", version="compose-v1")
    (tmp_path / "devbox.yaml").write_text(textwrap.dedent("""\
        project: exportgo
        services:
          - name: hello
            path: hello
            runtime: docker
            port: 18631
            readiness: {http: /healthz}
        """))
    out = tmp_path / "export" / "compose.yaml"
    write_compose(load_config(tmp_path / "devbox.yaml"), out, network="host")
    project = ["-f", str(out), "-p", f"devboxexport{tmp_path.name[-6:].lower()}"]
    try:
        built = _compose(*project, "build", "hello")
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        up = _compose(*project, "up", "-d", "--no-deps", "hello")
        assert up.returncode == 0, up.stderr
        answer = wait_for(lambda: _get("http://127.0.0.1:18631/"), timeout=60, what="the composed Go service")
        assert answer["version"] == "compose-v1" and answer["service"] == "hello"
    finally:
        _compose(*project, "down", "--timeout", "5")


SHOP_SERVICES = ["gateway", "orders", "users", "payment", "inventory"]


def _project_name(prefix: str) -> str:
    """A compose project of its own per run: pytest reuses tmp_path names across runs, and a container
    of an earlier run still being removed (vfs deletes slowly) would be taken for one of this run's."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def _grpc_serving(port: int) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _get(url: str) -> dict[str, str] | None:
    try:
        response = httpc.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None


def _image_ids(tags: list[str]) -> set[str]:
    """The ids the engine has under ``tags`` now (a tag it lacks is left out)."""
    client = connect()
    try:
        found = set()
        for tag in tags:
            with contextlib.suppress(Exception):
                found.add(client.images.get(tag).id)
        return found
    finally:
        client.close()


def _remove_replaced(before: set[str], tags: list[str]) -> None:
    """Remove the images a rebuild untagged (a change to the shop's code or to devbox-base): on vfs each
    is a full copy of the base (~440 MB), and the tests' engine once filled the disk with them."""
    replaced = before - _image_ids(tags)
    client = connect()
    try:
        for image_id in replaced:
            with contextlib.suppress(Exception):  # still used (a container of another run): left
                client.images.remove(image_id)
    finally:
        client.close()


def _base_image() -> str:
    """devbox-base, built if the engine lacks it (``make install`` builds it)."""
    client = connect()
    try:
        if missing_image(client, BASE_IMAGE):
            build_base(client, log_path=DOCKER_ROOT / "base.log", say=print)
    finally:
        client.close()
    return BASE_IMAGE


def _with_this_devbox(compose: Path, services: list[str], site: Path) -> Path:
    """A compose override mounting this checkout's devbox (:func:`copy_devbox` into ``site``) over the
    image's copy (/opt/devbox-site, on PYTHONPATH): devbox-base holds the devbox that built it, which
    may predate the SDK's self-registration. The images stay FROM devbox-base, so a change to devbox's
    code rebuilds none of them — on vfs each rebuild copied the whole image six times over (67-193 s
    of the suite beside a hog)."""
    copy_devbox(site)
    override = compose.with_name("this-devbox.yaml")
    override.write_text(yaml.safe_dump({"services": {
        name: {"volumes": [f"{site}:/opt/devbox-site:ro"]} for name in services}}), encoding="utf-8")
    return override


def _discover(naming_http: str, service: str) -> list[dict[str, Any]]:
    """The service's instances through Polaris's own client API (what a Polaris SDK asks)."""
    body = {"type": "INSTANCE", "service": {"name": service, "namespace": "default"}}
    answer = httpc.post(f"{naming_http}/v1/Discover", json=body, timeout=5).json()
    return answer.get("instances") or [] if answer.get("code") == 200000 else []


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the first run builds five images on vfs (minutes); later ones hit the cache
def test_exported_shop_registers_itself_and_serves_a_checkout(tmp_path: Path) -> None:
    try:
        docker_engine()
    except EngineUnavailable as exc:
        pytest.skip(f"no Docker engine: {exc}")
    started = time.monotonic()
    config = load_config(SHOP).model_copy(update={"project": "shopexport"})
    images = [image_tag(config.project, s) for s in SHOP_SERVICES]
    before = _image_ids(images)
    base = _base_image()
    base_s = time.monotonic() - started
    # its own project name (above): its images (devbox/shopexport-*) are not the other tests' devbox/shop-*
    with running_platform(tmp_path / "platform", components=["naming", "tracing"]) as platform:
        naming_http = platform.url("polaris_http")
        hosts = Hosts.local(polaris_http=int(naming_http.rsplit(":", 1)[1]),
                            polaris_grpc=int(platform.target("polaris_grpc").rsplit(":", 1)[1]),
                            otlp_http=int(platform.url("otlp_http").rsplit(":", 1)[1]))
        out = tmp_path / "export" / "compose.yaml"
        write_compose(config, out, network="host", base_image=base, hosts=hosts)
        doc = yaml.safe_load(out.read_text())
        names = [n for n in doc["services"] if n.split("-")[0] in SHOP_SERVICES]
        assert {doc["services"][n]["environment"]["DEVBOX_REGISTER"] for n in names} == {"self"}
        assert doc["services"]["gateway"]["environment"]["DEVBOX_NAMING_HTTP"] == naming_http
        replicas = {svc.name: svc.replicas for svc in config.services}
        override = _with_this_devbox(out, names, tmp_path / "site")
        project = ["-f", str(out), "-f", str(override), "-p", _project_name("devboxexp")]
        try:
            built = _compose(*project, "build", *SHOP_SERVICES, timeout=900)
            assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
            build_s = time.monotonic() - started - base_s
            up = _compose(*project, "up", "-d", "--no-deps", *names, timeout=300)
            assert up.returncode == 0, up.stderr

            registered: dict[str, list[dict[str, Any]]] = {}

            def every_instance_registered_healthy() -> bool:
                for service in SHOP_SERVICES:
                    registered[service] = [i for i in _discover(naming_http, service) if i.get("healthy")]
                return all(len(registered[s]) == replicas[s] for s in SHOP_SERVICES)

            try:
                wait_for(every_instance_registered_healthy, timeout=180,
                         what="every exported shop instance registered (and heartbeating) in naming")
            except AssertionError as exc:
                logs = _compose(*project, "logs", "--no-color", "--tail", "8")
                raise AssertionError(f"{exc}; registered: {registered}\n{logs.stdout[-4000:]}") from None
            up_s = time.monotonic() - started - base_s - build_s
            for service, found in registered.items():
                ports = sorted(int(i["port"]) for i in found)
                expected = sorted(int(doc["services"][n]["environment"]["PORT"]) for n in names
                                  if n.split("-")[0] == service)
                assert ports == expected, (service, found)
                assert all(i["metadata"].get("devbox.registered_by") == "self" for i in found), found
                assert all(i["host"] == "127.0.0.1" for i in found), found

            gateway = int(doc["services"]["gateway"]["environment"]["PORT"])
            # the instances learn of each other by Discover polls (every 0.5 s while a service has nothing to
            # call): a checkout sent the moment naming holds everyone can still meet a caller's empty cache
            # (hog24: orders had not yet seen inventory) — the first 200 within a few polls is the claim
            answers: list[httpx.Response] = []

            def checkout() -> bool:
                answers.append(httpc.get(f"http://127.0.0.1:{gateway}/checkout/alice", timeout=30))
                return answers[-1].status_code == 200

            try:
                wait_for(checkout, timeout=10, every=0.5, what="a checkout through the exported shop")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: last answer {answers[-1].status_code} {answers[-1].text}") from None
            answer = answers[-1]
            page = answer.json()
            assert page["user"]["name"] == "Alice" and page["served_by"]["service"] == "gateway"
            quote = page["quote"]
            assert quote["served_by"]["service"] == "orders"
            assert {k: v["service"] for k, v in quote["calls"].items()} == {
                "users": "users", "inventory": "inventory", "payment": "payment"}
            print(f"exported shop against a devbox platform: base {base_s:.1f}s, build {build_s:.1f}s, "
                  f"up and all registered {up_s:.1f}s")
            # every container runs and none has restarted (a replica bound to a taken port would loop)
            client = connect()
            try:
                containers = client.containers.list(
                    all=True, filters={"label": f"com.docker.compose.project={project[-1]}"})
                states = {c.name: (c.status, c.attrs["RestartCount"]) for c in containers}
                mounts = {c.name: [m["Destination"] for m in c.attrs["Mounts"]] for c in containers}
            finally:
                client.close()
            assert len(states) == len(names) and set(states.values()) == {("running", 0)}, states
            assert all(m == ["/opt/devbox-site"] for m in mounts.values()), mounts  # this checkout's devbox
        finally:
            down = _compose(*project, "down", "--timeout", "10")
            _remove_replaced(before, images)
        assert down.returncode == 0, down.stderr
        # every instance withdrew itself on shutdown (SIGTERM → lifespan/exit hooks → DeregisterInstance)
        left = {s: _discover(naming_http, s) for s in SHOP_SERVICES}
        assert not any(left.values()), left
