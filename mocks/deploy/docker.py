"""Docker runner: one instance = one container, run attached through the ``docker`` CLI.

``docker run --rm --init --network host`` with the injected environment, so the instance sees
the platform on 127.0.0.1 exactly as a process would and listens on its $PORT on the host. The
per-instance config folder is mounted at the same path, so ``$DEVBOX_INSTANCE_CONFIG`` is valid
inside. The attached CLI streams the container's output to the instance log; stopping signals
the CLI (which forwards to the container) and then removes the container by name. SIGSTOP and
SIGCONT become ``docker pause`` / ``unpause``.

LIMITATIONS: Linux hosts (host networking); images are built with plain ``docker build`` from the
service folder's Dockerfile; no registries, no volumes beyond the config folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.runner import RunningProcess, rotate

LOG = logging.getLogger(__name__)

#: Label every devbox container carries: the project's state dir, for cleanup after a crash.
LABEL = "devbox.state"
#: Where the 123 convention puts a service's folder in its image (started by ``start.sh`` there).
APP_DIR = "/usr/local/app"
#: The base image of services without a Dockerfile or ``image:`` (built once: see tests/integration/docker_engine.py).
BASE_IMAGE = "devbox-base:bookworm"


def dockerfile_123(base: str, start: str = "./start.sh") -> str:
    """The 123 convention as a Dockerfile: the service folder in /usr/local/app, started by its start.sh."""
    cmd = f'["{APP_DIR}/start.sh"]' if start == "./start.sh" else f'["/bin/sh", "-c", {json.dumps(start)}]'
    return f"FROM {base}\nCOPY . {APP_DIR}/\nWORKDIR {APP_DIR}\nCMD {cmd}\n"


def needs_generated_dockerfile(svc: ServiceConfig, path: Path) -> bool:
    """Whether the image is ``image:`` (or the base) plus the folder, by the 123 convention.

    A Dockerfile in the folder wins; ``image:`` alone (no start.sh in the folder) is run as it is.
    """
    if (path / "Dockerfile").is_file():
        return False
    return svc.image is None or (path / "start.sh").is_file()


def image_tag(project: str, service: str) -> str:
    """The tag devbox builds a service's image under."""
    clean = re.sub(r"[^a-z0-9_.-]+", "-", project.lower()).strip("-.") or "devbox"
    return f"devbox/{clean}-{service}:dev"


def container_name(state_dir: Path, instance: str) -> str:
    import hashlib

    return f"devbox-{hashlib.sha1(str(state_dir).encode()).hexdigest()[:8]}-{instance}"


def run_args(
    *, image: str, name: str, env: dict[str, str], command: str | None, state_dir: Path, mounts: list[Path]
) -> list[str]:
    """The ``docker run`` command line for one instance (pure, for tests)."""
    args = ["docker", "run", "--rm", "--init", "--name", name, "--network", "host",
            "--label", f"{LABEL}={state_dir}"]
    for mount in mounts:
        args += ["-v", f"{mount}:{mount}:ro"]
    for key, value in sorted(env.items()):
        args += ["-e", f"{key}={value}"]
    args.append(image)
    if command:
        args += ["sh", "-c", command]
    return args


def engine_problem(timeout: float = 10.0) -> str | None:
    """Why containers cannot run here (no CLI, no engine), or None when they can."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed"
    try:
        result = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the Docker engine does not answer ({exc})"
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"no Docker engine is reachable: {reason}"
    return None


class ContainerProcess(RunningProcess):
    """The attached ``docker run`` CLI of one container; signals and stop reach the container."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path, name: str) -> None:
        super().__init__(proc, log_path)
        self.name = name

    def _docker(self, *args: str) -> None:
        # fire and forget: signals are sync in the runner interface and must not block the loop
        with contextlib.suppress(OSError):
            subprocess.Popen(["docker", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def signal(self, sig: int) -> bool:
        if self.proc.returncode is not None:
            return False
        if sig == signal.SIGSTOP:
            self._docker("pause", self.name)
        elif sig == signal.SIGCONT:
            self._docker("unpause", self.name)
        else:
            self._docker("kill", "--signal", signal.Signals(sig).name, self.name)
            if sig == signal.SIGKILL:
                super().signal(sig)
        return True

    async def stop(self, timeout: float) -> int:
        if self.proc.returncode is None:
            self._docker("unpause", self.name)
            super().signal(signal.SIGTERM)  # the attached CLI forwards it to the container
            try:
                await asyncio.wait_for(asyncio.shield(self.proc.wait()), timeout)
            except TimeoutError:
                LOG.warning("container %s ignored SIGTERM for %.1fs; killing it", self.name, timeout)
                super().signal(signal.SIGKILL)
                await self.proc.wait()
        remove = await asyncio.create_subprocess_exec(
            "docker", "rm", "-f", self.name, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await remove.wait()
        return self.proc.returncode  # type: ignore[return-value]

    def kill_now(self) -> None:
        if self.proc.returncode is None:
            super().kill_now()
            self._docker("rm", "-f", self.name)


class DockerRunner:
    """Spawns instances as containers."""

    kind = "docker"

    async def spawn(
        self, command: str | None, *, image: str, name: str, env: dict[str, str], log_path: Path,
        state_dir: Path, mounts: list[Path],
    ) -> ContainerProcess:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(log_path)
        # a container of the same name left by a killed devbox would make `docker run` fail
        stale = await asyncio.create_subprocess_exec(
            "docker", "rm", "-f", name, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await stale.wait()
        args = run_args(image=image, name=name, env=env, command=command, state_dir=state_dir, mounts=mounts)
        with log_path.open("ab") as log:
            log.write(f"--- devbox: starting container {name} ({image}) at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            proc = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        return ContainerProcess(proc, log_path, name)


def remove_leftover_containers(state_dir: Path) -> list[str]:
    """Remove containers a killed devbox of this project left running; their ids."""
    if shutil.which("docker") is None:
        return []
    try:
        found = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={LABEL}={state_dir}"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    ids = found.stdout.split() if found.returncode == 0 else []
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=30)
    return ids
