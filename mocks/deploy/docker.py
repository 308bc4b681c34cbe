"""Docker runner: one instance = one container, through the ``docker`` Python SDK.

Images: a service's own Dockerfile, or — the 123 convention — ``image:`` (or the devbox base
image) plus the service folder in ``/usr/local/app``, started by its ``start.sh``
(:func:`dockerfile_123`; the generated Dockerfile lives in the state dir, never in the folder the
reload watcher looks at). Builds stream into the service's build log; a failed build raises
:class:`BuildFailed` carrying the log's tail.

Containers run with ``network_mode=host`` and the injected environment, so the instance sees the
platform on 127.0.0.1 exactly as a process would and listens on its $PORT on the host (engines
without a bridge, like the one in /work/shared/DOCKER.md, need exactly that). The per-instance
config folder is bind-mounted read-only at the same path, so ``$DEVBOX_INSTANCE_CONFIG`` is valid
inside. A thread follows the container's logs into the instance log file; another waits for its
exit and resolves :meth:`ContainerProcess.wait`. SIGSTOP/SIGCONT become pause/unpause; stop is
``docker stop`` (SIGTERM, then SIGKILL after the stop timeout) and removes the container.

Every container carries :data:`LABEL` = the project's state dir, so a devbox killed with SIGKILL
leaves nothing that :func:`remove_leftover_containers` cannot find.

LIMITATIONS: Linux engines (host networking); nothing is pushed or pulled on purpose (an ``image:``
that is not local fails to start with the engine's message); no volumes beyond the config folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from devbox.mocks.deploy.config import ServiceConfig
from devbox.mocks.deploy.runner import rotate

LOG = logging.getLogger(__name__)

#: Label every devbox container carries: the project's state dir, for cleanup after a crash.
LABEL = "devbox.state"
#: Where the 123 convention puts a service's folder in its image (started by ``start.sh`` there).
APP_DIR = "/usr/local/app"
#: The base image of 123-convention services without ``image:``: built once by ``devbox docker base``.
BASE_IMAGE = "devbox-base:bookworm"

START_ENGINE = (
    "start one: `dockerd` as root (Debian: apt-get install docker.io; without systemd see "
    "/work/shared/DOCKER.md: --storage-driver vfs --iptables=false --bridge=none), or point DOCKER_HOST "
    "at a running engine"
)


class DockerUnavailable(RuntimeError):
    """No engine answers; ``str()`` says where devbox looked and what to start."""


class BuildFailed(RuntimeError):
    """An image build failed; ``tail`` is the last lines of its log."""

    def __init__(self, message: str, tail: list[str]) -> None:
        super().__init__(message)
        self.tail = tail


def image_tag(project: str, service: str) -> str:
    """The tag devbox builds a service's image under."""
    clean = re.sub(r"[^a-z0-9_.-]+", "-", project.lower()).strip("-.") or "devbox"
    return f"devbox/{clean}-{service}:dev"


def container_name(state_dir: Path, instance: str) -> str:
    return f"devbox-{hashlib.sha1(str(state_dir).encode()).hexdigest()[:8]}-{instance}"


def dockerfile_123(base: str) -> str:
    """The 123 convention as a Dockerfile: the service folder in /usr/local/app on top of ``base``.

    One instruction: on the vfs storage driver (engines without overlayfs) each instruction of a
    build copies the whole image (a WORKDIR and a CMD made a service image 14 s instead of 5 s), so
    where and how it starts is given to the container instead (:func:`run_123`, compose's
    ``working_dir`` and ``command``); devbox's base image has both as its defaults too."""
    return f"FROM {base}\nCOPY . {APP_DIR}/\n"


def run_123(start: str = "./start.sh") -> tuple[str, list[str]]:
    """How a 123-convention image starts: working directory and command (``start.sh`` itself when it is
    the default, so it runs as PID 1 and gets the stop signal; a shell for any other ``start:``)."""
    return APP_DIR, [f"{APP_DIR}/start.sh"] if start == "./start.sh" else ["/bin/sh", "-c", start]


def needs_generated_dockerfile(svc: ServiceConfig, path: Path) -> bool:
    """Whether the image is ``image:`` (or the base) plus the folder, by the 123 convention.

    A Dockerfile in the folder wins; ``image:`` alone (no start.sh in the folder) is run as it is.
    """
    if (path / "Dockerfile").is_file():
        return False
    return svc.image is None or (path / "start.sh").is_file()


def container_start(svc: ServiceConfig, path: Path, project: str) -> tuple[str, str | None, list[str] | None]:
    """What an instance's container runs: image, working directory and command (None: the image's own).

    The 123 convention's image is built here on top of ``image:`` or the base: the folder and nothing
    else, so the container is told where and how to start; any other image runs as it is, with
    ``start:`` as its command when one is given."""
    if needs_generated_dockerfile(svc, path):
        return (image_tag(project, svc.name), *run_123(svc.start))
    argv = ["/bin/sh", "-c", svc.start] if "start" in svc.model_fields_set else None
    return svc.image or image_tag(project, svc.name), None, argv


def needs_build(svc: ServiceConfig, path: Path) -> bool:
    """Whether devbox builds this service's image (else ``image:`` runs as it is)."""
    return svc.image is None or needs_generated_dockerfile(svc, path)


def engine_address() -> str:
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def connect(timeout: float = 10.0) -> Any:
    """A docker SDK client that answered a ping; :class:`DockerUnavailable` saying what to start otherwise."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        raise DockerUnavailable("the docker Python SDK is not installed (pip install docker)") from None
    try:
        client = docker.from_env(timeout=math.ceil(timeout))
        client.ping()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DockerUnavailable(f"no Docker engine answers at {engine_address()} ({reason}); {START_ENGINE}") from None
    return client


def engine_problem(timeout: float = 10.0) -> str | None:
    """Why containers cannot run here (no SDK, no engine, and what to start), or None when they can."""
    try:
        connect(timeout).close()
    except DockerUnavailable as exc:
        return str(exc)
    return None


def missing_image(client: Any, image: str) -> str | None:
    """Why ``image`` cannot be built on (it is not on the engine, and nothing is pulled), or None when it is there."""
    try:
        client.images.get(image)
    except Exception as exc:
        if type(exc).__name__ != "ImageNotFound":
            return None  # the build itself will say what is wrong with the engine
        if image == BASE_IMAGE:
            return (f"devbox's base image {image} is not built on this engine: build it with `devbox docker base` "
                    "(once; debootstrap takes minutes), or give the service `image:` or a Dockerfile")
        return f"image {image} is not on this engine and devbox pulls nothing: build or `docker load` it first"
    return None


def _build_lines(stream: Iterator[dict[str, Any]]) -> Iterator[tuple[str, str | None]]:
    """(text, error) per chunk of the engine's build stream."""
    for chunk in stream:
        if "errorDetail" in chunk or "error" in chunk:
            message = chunk.get("errorDetail", {}).get("message") or chunk.get("error") or "build failed"
            yield message + "\n", message
        elif "stream" in chunk:
            yield chunk["stream"], None
        elif "status" in chunk:
            yield f"{chunk['status']} {chunk.get('progress', '')}".rstrip() + "\n", None


def build_image(client: Any, *, path: Path, tag: str, dockerfile: Path | None, log_path: Path, timeout: float) -> str:
    """Build ``tag`` from ``path`` (blocking: run in a thread); the image id. BuildFailed with the log tail."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=15)
    started = time.monotonic()
    error = None
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"--- devbox: building {tag} from {path}" + (f" with {dockerfile}" if dockerfile else "") + "\n")
        try:
            stream = client.api.build(path=str(path), tag=tag, dockerfile=str(dockerfile) if dockerfile else None,
                                      rm=True, forcerm=True, decode=True, network_mode="host", timeout=int(timeout))
            for text, err in _build_lines(stream):
                log.write(text)
                tail.extend(line for line in text.splitlines() if line.strip())
                error = err or error
                if time.monotonic() - started > timeout:
                    error = f"build stopped after {timeout:g}s"
                    break
        except Exception as exc:  # the engine refused the context, went away, ...
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.write(error + "\n")
            tail.append(error)
    if error:
        raise BuildFailed(f"image {tag} did not build: {error}", list(tail))
    return str(client.images.get(tag).id)


class ContainerProcess:
    """One running container, with the process runner's interface (pid, returncode, wait, signal, stop).

    Owns two threads: one copies the container's logs into the instance log, one waits for its exit.
    """

    def __init__(self, client: Any, container: Any, log_path: Path, name: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.container = container
        self.name = name
        self.log_path = log_path
        self.started = time.monotonic()
        self.returncode: int | None = None
        self._loop = loop
        self._done: asyncio.Future[int] = loop.create_future()
        container.reload()
        self.pid: int = int(container.attrs.get("State", {}).get("Pid") or 0)
        self._logs = threading.Thread(target=self._pump_logs, name=f"docker-logs:{name}", daemon=True)
        self._logs.start()
        threading.Thread(target=self._wait_exit, name=f"docker-wait:{name}", daemon=True).start()

    def _pump_logs(self) -> None:
        try:
            with self.log_path.open("ab") as log:
                for chunk in self.container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    log.write(chunk)
                    log.flush()
        except Exception as exc:  # the container was removed under us: the log simply ends
            LOG.debug("log stream of %s ended: %r", self.name, exc)

    def _wait_exit(self) -> None:
        try:
            code = int(self.container.wait().get("StatusCode", -1))
        except Exception as exc:
            LOG.debug("waiting for %s failed: %r", self.name, exc)
            code = -9
        self._logs.join(timeout=5)  # the last lines belong in the log before anyone reads it
        with contextlib.suppress(Exception):
            self.container.remove(force=True)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._finish, code)

    def _finish(self, code: int) -> None:
        self.returncode = code
        if not self._done.done():
            self._done.set_result(code)

    async def wait(self) -> int:
        return await asyncio.shield(self._done)

    def _in_background(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        def call() -> None:
            with contextlib.suppress(Exception):  # it exited meanwhile: nothing to signal
                fn(*args, **kwargs)

        threading.Thread(target=call, daemon=True).start()

    def signal(self, sig: int) -> bool:
        if self.returncode is not None:
            return False
        if sig == signal.SIGSTOP:
            self._in_background(self.container.pause)
        elif sig == signal.SIGCONT:
            self._in_background(self.container.unpause)
        else:
            self._in_background(self.container.kill, signal=signal.Signals(sig).name)
        return True

    async def stop(self, timeout: float) -> int:
        """``docker stop`` (SIGTERM, SIGKILL after ``timeout``), then the container is removed; its exit code."""
        if self.returncode is None:
            def stop() -> None:
                with contextlib.suppress(Exception):
                    self.container.reload()
                    if self.container.status == "paused":
                        self.container.unpause()
                with contextlib.suppress(Exception):
                    self.container.stop(timeout=max(1, math.ceil(timeout)))

            await asyncio.to_thread(stop)
            try:
                await asyncio.wait_for(self.wait(), timeout + 10)
            except TimeoutError:
                LOG.warning("container %s did not stop; removing it", self.name)
                await asyncio.to_thread(self._remove)
                self._finish(-9)
        return self.returncode  # type: ignore[return-value]

    def _remove(self) -> None:
        with contextlib.suppress(Exception):
            self.container.remove(force=True)

    def kill_now(self) -> None:
        if self.returncode is None:
            self._remove()


class DockerRunner:
    """Builds images and spawns instances as containers; one SDK client per platform."""

    kind = "docker"

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            # the engine's API calls (create, start: a vfs copy of the image's layers) take tens of
            # seconds on a busy machine; the SDK's timeout is per call, not a readiness deadline
            self._client = connect(timeout=120)
        return self._client

    async def build(self, svc: ServiceConfig, *, path: Path, tag: str, work_dir: Path, log_path: Path,
                    base_image: str = BASE_IMAGE) -> str:
        """Build the service's image (its Dockerfile, or the 123 convention); the image id."""
        dockerfile = None
        client = await asyncio.to_thread(lambda: self.client)
        if needs_generated_dockerfile(svc, path):
            base = svc.image or base_image
            missing = await asyncio.to_thread(missing_image, client, base)
            if missing:
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log_path.write_text(f"--- devbox: {missing}\n", encoding="utf-8")
                raise BuildFailed(missing, [missing])
            work_dir.mkdir(parents=True, exist_ok=True)
            dockerfile = work_dir / f"{svc.name}.Dockerfile"
            dockerfile.write_text(dockerfile_123(base), encoding="utf-8")
        return await asyncio.to_thread(build_image, client, path=path, tag=tag, dockerfile=dockerfile,
                                       log_path=log_path, timeout=svc.build_timeout)

    async def spawn(
        self, argv: list[str] | None, *, image: str, name: str, env: dict[str, str], log_path: Path,
        state_dir: Path, mounts: list[Path], working_dir: str | None = None,
    ) -> ContainerProcess:
        """Run a container of ``image``: ``argv`` (None: the image's own command) in ``working_dir``."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        rotate(log_path)
        loop = asyncio.get_running_loop()

        def run() -> Any:
            client = self.client
            # a container of the same name left by a killed devbox would make the run fail
            with contextlib.suppress(Exception):
                client.containers.get(name).remove(force=True)
            with log_path.open("ab") as log:
                log.write(f"--- devbox: starting container {name} ({image}) at {time.strftime('%H:%M:%S')}\n".encode())
            try:
                return client.containers.run(
                    image, argv, name=name, detach=True, working_dir=working_dir,
                    network_mode="host", environment=env, labels={LABEL: str(state_dir)},
                    volumes={str(m): {"bind": str(m), "mode": "ro"} for m in mounts},
                )
            except Exception as exc:
                raise OSError(f"container {name} from {image} did not start: {str(exc).splitlines()[0]}") from None

        container = await asyncio.to_thread(run)
        return await asyncio.to_thread(ContainerProcess, self.client, container, log_path, name, loop)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()


def remove_leftover_containers(state_dir: Path) -> list[str]:
    """Remove containers a killed devbox of this project left running; their ids."""
    try:
        client = connect(timeout=5)
    except DockerUnavailable:
        return []
    ids = []
    try:
        for container in client.containers.list(all=True, filters={"label": f"{LABEL}={state_dir}"}):
            with contextlib.suppress(Exception):
                container.remove(force=True)
                ids.append(container.id)
    finally:
        client.close()
    return ids
