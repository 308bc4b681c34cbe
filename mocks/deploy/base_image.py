"""devbox's Python base image, ``devbox-base:bookworm``: what a ``runtime: docker`` service with a
``start.sh`` and no ``image:`` or Dockerfile runs on (the 123 convention).

Nothing can be pulled on the machines devbox targets (no registry), so the image is made from
Debian itself, once, by :func:`build_base` (``devbox docker base``):

1. ``debootstrap --variant=minbase bookworm ROOTFS MIRROR`` (the mirror of this machine's apt
   sources) and ``docker import`` of that tree as ``devbox-base:bookworm-rootfs`` (the step that
   takes minutes; kept, so a rebuild of step 2 alone is quick);
2. ``docker build --network host`` on top of it (pip trusting the CA bundle and using the index pip uses
   here): python3 and a venv at /opt/devbox (first on PATH,
   so ``python3`` in a start.sh is the venv's) with the shop's pip dependencies at the versions
   installed next to this devbox, and devbox's own package at /opt/devbox-site (``from devbox
   import sdk`` works inside, as the shop's services need).

LIMITATIONS: needs root (debootstrap) and Debian's debootstrap; the devbox package inside is a copy
of the one that built the image — after upgrading devbox, ``devbox docker base --rebuild`` to
refresh it. Python is bookworm's (3.11).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devbox.mocks.deploy.docker import APP_DIR, BASE_IMAGE, BuildFailed, build_image

LOG = logging.getLogger(__name__)

#: The raw Debian tree imported from debootstrap (step 1), kept so that step 2 can be redone alone.
ROOTFS_IMAGE = "devbox-base:bookworm-rootfs"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"

#: What the shop's services import (FastAPI on uvicorn, httpx, gRPC with health and stubs, pydantic,
#: OpenTelemetry through devbox.sdk), pinned to the versions installed next to this devbox.
PYTHON_PACKAGES = (
    "fastapi", "uvicorn", "httpx", "grpcio", "grpcio-health-checking", "grpcio-tools", "protobuf", "pydantic",
    "PyYAML", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http",
    "opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-instrumentation-fastapi",
    "opentelemetry-instrumentation-httpx", "opentelemetry-instrumentation-grpc", "opentelemetry-propagator-b3",
)

#: One RUN for everything installed, what it leaves behind removed in the same step: on the vfs storage
#: driver every instruction copies the whole image, and so does every container start — the apt cache
#: debootstrap leaves (121 MB), locales, docs and man pages (51 MB) were 40 % of the image.
DOCKERFILE = """\
FROM {rootfs}
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \\
    DEVBOX_BASE_RECIPE={recipe} PYTHONPATH=/opt/devbox-site \\
    PATH=/opt/devbox/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY requirements.txt pip-ca.pem /tmp/
RUN apt-get update -q && apt-get install -y -q --no-install-recommends python3 python3-venv ca-certificates \\
    && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \\
       /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \\
    && python3 -m venv /opt/devbox \\
    && /opt/devbox/bin/pip install -q --no-cache-dir {pip_options} -r /tmp/requirements.txt \\
    && rm /tmp/requirements.txt /tmp/pip-ca.pem
COPY site /opt/devbox-site
WORKDIR {app_dir}
CMD ["{app_dir}/start.sh"]
"""


def debian_mirror(sources: tuple[Path, ...] = (Path("/etc/apt/sources.list"),
                                               *sorted(Path("/etc/apt/sources.list.d").glob("*")))) -> str:
    """The Debian mirror this machine's apt uses (one-line or deb822 sources), or deb.debian.org."""
    for path in sources:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            line = line.strip()
            one_line = re.match(r"deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+" + SUITE + r"\s", line + " ")
            deb822 = re.match(r"URIs:\s*(\S+)", line)
            found = (one_line or deb822)
            if found and "security" not in found.group(1):
                return found.group(1)
    return DEFAULT_MIRROR


def host_pip_ca() -> Path | None:
    """The CA bundle pip on this machine trusts (PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE, Debian's bundle):
    pip in the build trusts the same, so an intercepting proxy's CA the host accepts works inside too."""
    for name in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(name) and Path(os.environ[name]).is_file():
            return Path(os.environ[name])
    debian = Path("/etc/ssl/certs/ca-certificates.crt")
    return debian if debian.is_file() else None


def recipe() -> str:
    """A digest of what the image is made of (:data:`DOCKERFILE`, the pinned requirements): kept in the
    image as ``DEVBOX_BASE_RECIPE``, so an image built by another devbox is rebuilt, not used as it is."""
    text = DOCKERFILE + "\n".join(requirements())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def built_recipe(client: Any, tag: str = BASE_IMAGE) -> str | None:
    """The recipe an image was built by (None for an image without one)."""
    try:
        env = client.images.get(tag).attrs["Config"].get("Env") or []
    except Exception:
        return None
    return next((item.split("=", 1)[1] for item in env if item.startswith("DEVBOX_BASE_RECIPE=")), None)


def dockerfile(*, pip_ca: bool, index_url: str | None) -> str:
    options = " ".join([*(["--cert /tmp/pip-ca.pem"] if pip_ca else []),
                        *([f"--index-url {index_url}"] if index_url else [])])
    return DOCKERFILE.format(rootfs=ROOTFS_IMAGE, pip_options=options, app_dir=APP_DIR, recipe=recipe())


def requirements() -> list[str]:
    """:data:`PYTHON_PACKAGES`, each at the version installed here when it is (the tested combination)."""
    pinned = []
    for name in PYTHON_PACKAGES:
        try:
            pinned.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pinned.append(name)
    return pinned


def copy_devbox(target: Path) -> None:
    """devbox's package (with devbox.mocks, wherever an editable install keeps it) into ``target/devbox``."""
    import devbox.mocks

    import devbox

    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "static")
    package = target / "devbox"
    shutil.copytree(Path(devbox.__path__[0]), package, ignore=skip)
    mocks = Path(devbox.mocks.__path__[0])
    if not (package / "mocks").is_dir():
        shutil.copytree(mocks, package / "mocks", ignore=skip)


def has_image(client: Any, tag: str) -> bool:
    try:
        client.images.get(tag)
    except Exception:
        return False
    return True


def build_base(client: Any, *, log_path: Path, mirror: str | None = None, rebuild: bool = False,
               timeout: float = 1800, say: Callable[[str], None] = LOG.info) -> str:
    """Build :data:`~devbox.mocks.deploy.docker.BASE_IMAGE` (both steps, or only what is missing); its id.

    ``rebuild``: redo step 2 (python and devbox) even when the image exists and has this devbox's
    :func:`recipe` (one without it is rebuilt anyway); the debootstrap tree is reused.
    Raises :class:`~devbox.mocks.deploy.docker.BuildFailed` with the log's tail.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if has_image(client, BASE_IMAGE) and not rebuild:
        if built_recipe(client) == recipe():
            say(f"{BASE_IMAGE} is already built (--rebuild to build it again)")
            return str(client.images.get(BASE_IMAGE).id)
        say(f"{BASE_IMAGE} was built by another devbox or with other packages: building it again")
    with tempfile.TemporaryDirectory(prefix="devbox-base-") as tmp:
        work = Path(tmp)
        if not has_image(client, ROOTFS_IMAGE):
            mirror = mirror or debian_mirror()
            say(f"debootstrap {SUITE} from {mirror} (minutes; log: {log_path})")
            started = time.monotonic()
            _debootstrap(work / "rootfs", mirror, log_path, timeout)
            say(f"importing the Debian tree as {ROOTFS_IMAGE} ({time.monotonic() - started:.0f}s so far)")
            archive = work / "rootfs.tar"
            subprocess.run(["tar", "-C", str(work / "rootfs"), "-cf", str(archive), "."], check=True)
            shutil.rmtree(work / "rootfs", ignore_errors=True)
            repository, tag = ROOTFS_IMAGE.split(":")
            client.api.import_image_from_file(str(archive), repository=repository, tag=tag)
            archive.unlink()
        context = work / "context"
        (context / "site").mkdir(parents=True)
        ca = host_pip_ca()
        (context / "pip-ca.pem").write_bytes(ca.read_bytes() if ca else b"")
        text = dockerfile(pip_ca=ca is not None, index_url=os.environ.get("PIP_INDEX_URL"))
        (context / "Dockerfile").write_text(text, encoding="utf-8")
        (context / "requirements.txt").write_text("\n".join(requirements()) + "\n", encoding="utf-8")
        copy_devbox(context / "site")
        say(f"building {BASE_IMAGE}: python3 and the shop's packages from PyPI (log: {log_path})")
        with log_path.open("a", encoding="utf-8") as log:
            log.write(f"--- devbox: docker build of {BASE_IMAGE}\n")
        build_log = log_path.with_suffix(".build.log")
        try:
            return build_image(client, path=context, tag=BASE_IMAGE, dockerfile=None, log_path=build_log,
                               timeout=timeout)
        finally:
            with log_path.open("a", encoding="utf-8") as log, build_log.open(encoding="utf-8") as part:
                shutil.copyfileobj(part, log)
            build_log.unlink(missing_ok=True)


def _debootstrap(rootfs: Path, mirror: str, log_path: Path, timeout: float) -> None:
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    if not Path(debootstrap).exists():
        raise BuildFailed("debootstrap is not installed (apt-get install debootstrap, or `make install`)", [])
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"--- devbox: debootstrap --variant=minbase {SUITE} {rootfs} {mirror}\n")
        log.flush()
        try:
            code = subprocess.run([debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror], stdout=log,
                                  stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = -1
            log.write(f"debootstrap stopped after {timeout:g}s\n")
    if code != 0:
        from devbox.mocks.deploy.core import tail_lines

        raise BuildFailed(f"debootstrap of {SUITE} failed (exit {code}; log: {log_path})", tail_lines(log_path, 15))
