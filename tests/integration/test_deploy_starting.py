"""The initial deploy while the platform starts (issue 15, the shop up <= 1.3x its bare start): a service's
build runs as soon as the deploy component starts, while later components still start; its instances
start only once every listener serves the real apps (they get the platform's addresses)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from devbox.mocks.deploy.config import ServiceConfig

from devbox.assembly import SPECS
from devbox.config import ProjectConfig
from devbox.platform.component import Component, ComponentSpec
from devbox.platform.platform import Platform
from devbox.platform.ports import DeployView
from devbox.testing import starting_in_background, wait_for
from tests.deploy_fakes import write_service

#: Released by the test: the held component's start() waits on it.
GATE = threading.Event()


class HeldComponent(Component):
    """A component, started after deploy, whose start() takes as long as the test wants."""

    name = "held"

    async def start(self) -> None:
        await asyncio.to_thread(GATE.wait, 60)


def test_builds_run_while_the_platform_starts_and_instances_wait_until_it_serves(tmp_path: Path) -> None:
    GATE.clear()
    write_service(tmp_path / "svc")
    svc = ServiceConfig(name="hello", path="svc", build="touch built", readiness={"http": "/healthz"})
    specs = [*SPECS, ComponentSpec(name="held", factory=f"{__name__}:HeldComponent", after=("deploy",))]
    platform = Platform(ProjectConfig.for_tests(tmp_path, services=[svc]), components=["naming", "deploy", "held"],
                        specs=specs)
    with starting_in_background(platform, GATE) as outcome:
        wait_for(lambda: (tmp_path / "svc" / "built").exists() or "error" in outcome, 30,
                 "the build to run while a later component still starts")
        assert "error" not in outcome, outcome.get("error")
        assert not platform.ctx.serving.is_set()
        view = platform.ctx.lookup(DeployView)
        assert view is not None
        assert view.running_instances() == []  # built, but no instance before the platform serves
        GATE.set()
        wait_for(lambda: [i.state for i in view.running_instances()] == ["ready"] or "error" in outcome, 60,
                 "the instance to start and become ready once the platform serves")
        assert "error" not in outcome, outcome.get("error")
        assert platform.ctx.serving.is_set()
