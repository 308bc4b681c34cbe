"""What `devbox up` does before its listeners answer stays light (issue 15, platform up <= 1 s):
loading devbox.yaml does not import the PromQL engine (numpy), the web framework or networkx —
those load in the background while the listeners answer "starting"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from devbox.mocks.metrics.config import IndicatorConfig, _default_indicators


def test_the_built_in_indicators_are_valid_although_built_without_validation() -> None:
    for name, indicator in _default_indicators().items():
        assert IndicatorConfig.model_validate(indicator.model_dump()) == indicator, name


def test_loading_the_config_imports_no_heavy_module(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("project: p\nservices: []\n")
    probe = (
        "import sys\n"
        "from devbox.config import load_config\n"
        f"load_config({str(tmp_path / 'devbox.yaml')!r})\n"
        "print(sorted(m for m in ('numpy', 'fastapi', 'networkx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
