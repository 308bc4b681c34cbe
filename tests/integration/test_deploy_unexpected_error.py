"""An unexpected error in the initial deploy (a bug, not a service that fails to start) resolves
``wait_deployed`` with that error, and `devbox up` says what failed and exits non-zero — before, the
deployed future was never resolved and both waited forever."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from devbox.mocks.deploy import component as deploy_component
from devbox.mocks.deploy.config import ServiceConfig

from devbox.cli.common import EXIT_FAILED
from devbox.cli.serve import Lines, _run_deploy
from devbox.testing import running_platform
from tests.deploy_fakes import write_service


def _broken_preflight(*_args: object) -> list[str]:
    raise RuntimeError("preflight exploded")


def test_an_error_in_the_deploy_resolves_wait_deployed_and_fails_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    write_service(tmp_path / "svc")
    monkeypatch.setattr(deploy_component.core, "preflight", _broken_preflight)
    svc = ServiceConfig(name="svc", path="svc", readiness={"http": "/healthz"}, reload=False)
    with running_platform(tmp_path, components=["naming", "deploy"], services=[svc]) as p:
        deploy = p.component("deploy")
        errors = p.call(deploy.wait_deployed(10), timeout=15)  # type: ignore[attr-defined]
        assert errors == ["deploying the services failed: RuntimeError: preflight exploded"]
        assert deploy.phase == {"svc": "failed"}  # type: ignore[attr-defined]

        code = p.call(_run_deploy(p.config, deploy, asyncio.Event(), Lines(), t0=0.0), timeout=15)
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "preflight exploded" in err and "devbox up failed" in err
