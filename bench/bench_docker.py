"""Container start vs process start for the same service: a static Go HTTP server, run by devbox
once as a process (``start: ./app``) and once as a container (``runtime: docker``, image FROM scratch).

A start is what a new instance costs in a reload or a restart: ``Supervisor.start_instance`` from
spawn to ready (HTTP /healthz answered) and registered in naming; then the instance is stopped and
the next round starts another. The image is built once before the rounds (a reload's rebuild is a
separate cost, printed too). Needs a Docker engine (``devbox.testing.docker_engine`` starts one as
/work/shared/DOCKER.md says).

``--python``: the same for the shop's ``users`` service (FastAPI on uvicorn with devbox's SDK): as a process
from its folder, and as a container on ``devbox-base:bookworm`` (``devbox docker base`` builds it).

Run: ``python bench/bench_docker.py [--rounds 10] [--python]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from devbox.mocks.deploy.config import ServiceConfig

from devbox.testing import PlatformThread, docker_engine, running_platform

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the Go image) from a checkout
from tests.docker_images import write_go_service


def starts(p: PlatformThread, service: str, rounds: int) -> list[float]:
    sup: Any = p.component("deploy").supervisor  # type: ignore[attr-defined]
    dep = sup.deployment(service)
    out = []
    for _ in range(rounds):
        began = time.perf_counter()
        inst = p.call(sup.start_instance(dep), timeout=120)
        out.append(time.perf_counter() - began)
        p.call(sup.stop_instance(dep, inst, forget=True), timeout=60)
    return out


def measure(root: Path, svc: ServiceConfig, rounds: int) -> tuple[list[float], float]:
    with running_platform(root, components=["naming", "deploy"], services=[svc]) as p:
        errors = p.call(p.component("deploy").wait_deployed(300), timeout=310)  # type: ignore[attr-defined]
        assert errors == [], errors
        sup: Any = p.component("deploy").supervisor  # type: ignore[attr-defined]
        began = time.perf_counter()
        p.call(sup.build(sup.deployment(svc.name)), timeout=300)
        build = time.perf_counter() - began
        return starts(p, svc.name, rounds), build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--python", action="store_true", help="the shop's users service instead of the Go one")
    args = parser.parse_args()
    docker_engine()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if args.python:
            folder, start, name = Path(__file__).resolve().parents[1] / "scenarios/shop/users", "./start.sh", "users"
        else:
            folder, start, name = write_go_service(root / "go"), "./app", "go"
        common: dict[str, Any] = dict(path="svc", readiness={"http": "/healthz"}, reload=False, drain=0)
        at = {"path": str(folder)}  # outside the project root: past the model's relative-path check
        process, _ = measure(root / "p", ServiceConfig(name=f"{name}proc", start=start, **common).model_copy(
            update=at), args.rounds)
        container, build = measure(root / "c", ServiceConfig(name=f"{name}box", runtime="docker", **common).model_copy(
            update=at), args.rounds)
    p50p, p50c = statistics.median(process), statistics.median(container)
    print(f"process start   (spawn→ready→registered): median {p50p * 1000:.0f} ms, "
          f"min {min(process) * 1000:.0f}, max {max(process) * 1000:.0f} ({args.rounds} rounds)")
    print(f"container start (spawn→ready→registered): median {p50c * 1000:.0f} ms, "
          f"min {min(container) * 1000:.0f}, max {max(container) * 1000:.0f} ({args.rounds} rounds)")
    print(f"container / process: {p50c / p50p:.1f}x; cached image rebuild {build * 1000:.0f} ms")


if __name__ == "__main__":
    main()
