"""The real polaris-go SDK (built from the Go module proxy) against devbox's Polaris gRPC port.

The probe in ``naming_polaris_go/`` registers a provider with a TTL (the SDK heartbeats on its
own), then as a consumer calls GetOneInstance and GetInstances until every expected instance is
seen healthy, optionally picks with caller metadata (routing rules), then deregisters. Building
needs ``go`` and the module proxy (or a warm module cache); the test is skipped, visibly, only
when ``go`` is absent.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devbox.polaris.routing import multi_env_rule
from devbox.testing import running_platform

PROBE_SRC = Path(__file__).parent / "naming_polaris_go"

# A cold module cache downloads polaris-go and its dependencies from the proxy first.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The probe, built once per run: this module and test_naming_polaris_fidelity both use it, on two
    xdist workers at once. Two `go build`s of the same packages side by side each compile all of polaris-go
    on a cold build cache (4-5 min of CPU each on the busy 2-core runner); the second waits for the first
    (a lock in the run's shared temporary folder) and takes its binary."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed: the polaris-go real-client test cannot build its probe")
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):  # each worker's basetemp is a folder of the run's own
        shared = shared.parent
    digest = hashlib.sha256(b"".join((PROBE_SRC / name).read_bytes() for name in ("main.go", "go.mod", "go.sum")))
    out = shared / f"polaris-go-probe-{digest.hexdigest()[:12]}"
    with (shared / "polaris-go-probe.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if out.is_file():
            return out
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod -buildvcs=false"}
        result = subprocess.run([go, "build", "-o", f"{out}.tmp", "."], cwd=PROBE_SRC, env=env, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, f"go build of the polaris-go probe failed:\n{result.stderr[-4000:]}"
        Path(f"{out}.tmp").replace(out)  # whole or absent: a build cut short leaves no half binary
    return out


def test_polaris_go_provider_and_consumer(probe: Path, tmp_path: Path) -> None:
    with running_platform(tmp_path, components=["naming"]) as platform:
        registry = platform.component("naming").registry  # type: ignore[attr-defined]
        changes: list[tuple[str, str]] = []
        platform.platform.events.instance_changed.add_listener(  # type: ignore[union-attr]
            lambda **kw: changes.append((kw["instance_id"], kw["change"]))
        )
        # Two more instances of the same service, registered through devbox's own registry, and the
        # multi-environment rule: polaris-go gets it as a v1 inbound route and must follow it.
        async def add_others() -> None:
            for host, port, env in (("127.0.0.2", 18081, "base"), ("127.0.0.3", 18082, "feature-x")):
                registry.register(namespace="default", service="go-provider", host=host, port=port,
                                  health_check=False, metadata={"env": env})
            registry.put_rule(multi_env_rule().model_dump(mode="json"))

        platform.call(add_others())
        workdir = tmp_path / "run"  # polaris-go writes its logs and cache under the working dir
        workdir.mkdir()
        result = subprocess.run(
            [str(probe), "-addr", platform.target("polaris_grpc"), "-service", "go-provider", "-port", "18080",
             "-expect", "3", "-wait", "30s", "-route-values", "feature-x,nowhere"],
            cwd=workdir, capture_output=True, text=True, timeout=90,
        )
        assert result.returncode == 0, f"polaris-go probe failed: {result.stderr[-4000:]}"
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["all"] == ["127.0.0.1:18080", "127.0.0.2:18081", "127.0.0.3:18082"]
        assert seen["healthy"] == 3
        # env=feature-x goes to the feature instance; an env with no instances falls back to base.
        assert seen["routed"] == {"feature-x": ["127.0.0.3:18082"], "nowhere": ["127.0.0.2:18081"]}
        assert seen["one"] in seen["all"]
        assert seen["deregister"] == "ok"
        go_id = seen["instance_id"]
        # The SDK's register, its heartbeats (unhealthy -> healthy) and its deregister all reached devbox.
        assert [c for i, c in changes if i == go_id][:2] == ["registered", "healthy"]
        assert (go_id, "deregistered") in changes
        assert [i.port for i in registry.instances("default", "go-provider")] == [18081, 18082]


def test_polaris_go_finds_devbox_through_system_services(probe: Path, tmp_path: Path) -> None:
    """With ``polaris.discover``/``polaris.healthcheck`` configured, the SDK asks Discover for them
    and then talks to the address devbox answers (its own gRPC port)."""
    with running_platform(tmp_path, components=["naming"]) as platform:
        workdir = tmp_path / "run"
        workdir.mkdir()
        result = subprocess.run(
            [str(probe), "-addr", platform.target("polaris_grpc"), "-service", "sys-provider", "-port", "18090",
             "-system", "-wait", "30s"],
            cwd=workdir, capture_output=True, text=True, timeout=90,
        )
        assert result.returncode == 0, f"polaris-go probe failed: {result.stderr[-4000:]}"
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert seen["all"] == ["127.0.0.1:18090"] and seen["healthy"] == 1
        logs = "".join(p.read_text(errors="replace") for p in (workdir / "polaris").rglob("*.log"))
        assert "Polaris::polaris.discover" in logs  # the SDK did resolve the system service
