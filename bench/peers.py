"""The peers devbox is measured against, built or fetched once and cached under ~/.cache/devbox-bench.

- Jaeger all-in-one (v1: in-memory storage, OTLP and Zipkin receivers), built from its Go module
  with the Go toolchain. ``go install …/cmd/all-in-one@v`` refuses the module (its go.mod has a
  replace directive), so it is built inside the downloaded module, where the replace applies.
- Zipkin server, its exec jar from Maven Central (``mvn dependency:copy``), run with ``java -jar``.
- Prometheus and promtool from Debian (``apt-get install prometheus``; ``make install`` does it).

A peer that cannot be had is skipped visibly: :func:`ensure` returns the reason instead of a path.

    python bench/peers.py            # build/fetch what is missing, print what is there
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("DEVBOX_BENCH_CACHE", Path.home() / ".cache" / "devbox-bench"))
JAEGER_VERSION = "v1.76.0"  # the last v1 line: all-in-one with in-memory storage
ZIPKIN_VERSION = "3.5.1"
BUILD_TIMEOUT_S = 900


@dataclass
class Peer:
    """A peer's executable (argv prefix) or, when it cannot be had here, why not."""

    name: str
    argv: list[str] | None = None
    missing: str = ""

    @property
    def ok(self) -> bool:
        return self.argv is not None


def _run(argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str | None:
    """None when it worked, else the last lines of its output."""
    try:
        done = subprocess.run(argv, cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode == 0:
        return None
    return " | ".join((done.stdout + done.stderr).strip().splitlines()[-3:])


def jaeger(version: str = JAEGER_VERSION) -> Peer:
    binary = CACHE / "bin" / f"jaeger-all-in-one-{version}"
    if binary.exists():
        return Peer("jaeger", [str(binary)])
    go = shutil.which("go")
    if go is None:
        return Peer("jaeger", missing="no Go toolchain on PATH")
    env = {"GOFLAGS": "-mod=mod"}
    error = _run([go, "mod", "download", f"github.com/jaegertracing/jaeger@{version}"], cwd=CACHE, env=env)
    if error:
        return Peer("jaeger", missing=f"go mod download failed: {error}")
    modcache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    source = Path(modcache) / "github.com" / "jaegertracing" / f"jaeger@{version}"
    binary.parent.mkdir(parents=True, exist_ok=True)
    print(f"building Jaeger all-in-one {version} (a few minutes, once) ...", flush=True)
    error = _run([go, "build", "-o", str(binary), "./cmd/all-in-one"], cwd=source, env=env)
    if error:
        return Peer("jaeger", missing=f"go build failed: {error}")
    return Peer("jaeger", [str(binary)])


def zipkin(version: str = ZIPKIN_VERSION) -> Peer:
    java = shutil.which("java")
    if java is None:
        return Peer("zipkin", missing="no java on PATH")
    jar = CACHE / "zipkin" / f"zipkin-server-{version}-exec.jar"
    if not jar.exists():
        mvn = shutil.which("mvn")
        if mvn is None:
            return Peer("zipkin", missing="no mvn on PATH to fetch the exec jar")
        print(f"fetching zipkin-server {version} exec jar (once) ...", flush=True)
        error = _run([mvn, "-q", "dependency:copy", f"-Dartifact=io.zipkin:zipkin-server:{version}:jar:exec",
                      f"-DoutputDirectory={jar.parent}"], cwd=CACHE)
        if error or not jar.exists():
            return Peer("zipkin", missing=f"mvn dependency:copy failed: {error}")
    return Peer("zipkin", [java, "-jar", str(jar)])


def prometheus() -> Peer:
    prom, promtool = shutil.which("prometheus"), shutil.which("promtool")
    if not prom or not promtool:
        return Peer("prometheus", missing="prometheus/promtool not installed (apt-get install prometheus)")
    return Peer("prometheus", [prom])


def ensure(names: tuple[str, ...] = ("jaeger", "zipkin", "prometheus")) -> dict[str, Peer]:
    CACHE.mkdir(parents=True, exist_ok=True)
    makers = {"jaeger": jaeger, "zipkin": zipkin, "prometheus": prometheus}
    return {name: makers[name]() for name in names}


if __name__ == "__main__":
    for peer in ensure().values():
        print(f"{peer.name:<11} {' '.join(peer.argv) if peer.argv else 'SKIPPED: ' + peer.missing}")
