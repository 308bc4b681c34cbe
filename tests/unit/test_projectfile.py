"""Read-only CLI commands find the running platform from devbox.yaml's ``platform:`` section without
building the config model (issue 14 §2: `devbox status` spent most of its start-up assembling every
component's pydantic model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from devbox.platform.component import API_LISTENER
from devbox.projectfile import DEFAULT_API_PORT, read_platform_address


def test_default_api_port_is_the_api_listeners() -> None:
    assert DEFAULT_API_PORT == API_LISTENER.default_port


def test_platform_address_is_read_plainly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEVBOX_TOKEN", raising=False)
    source = tmp_path / "devbox.yaml"
    source.write_text("project: p\nplatform:\n  state_dir: st\n  token: s3cret\n  ports: {api: 7171}\nservices: []\n")
    address = read_platform_address(source)
    assert address is not None
    assert (address.api_port, address.state_path, address.token) == (7171, (tmp_path / "st").resolve(), "s3cret")
    source.write_text("project: p\n")
    address = read_platform_address(source)
    assert address is not None and (address.api_port, address.token) == (7070, None)
    monkeypatch.setenv("DEVBOX_TOKEN", "from-env")
    assert read_platform_address(source).token == "from-env"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "text", ["platform: [1]\n", "platform:\n  ports: {api: seven}\n", "platform: {state_dir: 5}\n", "a: [\n"]
)
def test_what_cannot_be_read_plainly_goes_to_the_validating_load(tmp_path: Path, text: str) -> None:
    source = tmp_path / "devbox.yaml"
    source.write_text(text)
    assert read_platform_address(source) is None


def test_status_finds_the_platform_without_assembling_the_config_model(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("project: p\nplatform: {ports: {api: 7171}}\n")
    (tmp_path / ".devbox").mkdir()
    # the runtime file of a platform that got another port than devbox.yaml's (a live pid: this test's)
    runtime = {"pid": os.getpid(), "api": "http://127.0.0.1:7272"}
    (tmp_path / ".devbox" / "platform.json").write_text(json.dumps(runtime))
    probe = (
        "import sys\n"
        "from devbox.cli import project\n"
        "from devbox.cli.common import Api\n"
        f"api = Api({str(tmp_path / 'devbox.yaml')!r})\n"
        "print(api.base)\n"
        "heavy = sorted(m for m in sys.modules if m in ('devbox.assembly', 'devbox.config', 'trio')"
        " or m.startswith('devbox.mocks.'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    base, heavy = out.stdout.splitlines()
    assert base == "http://127.0.0.1:7272"
    assert heavy == "[]", out.stdout
