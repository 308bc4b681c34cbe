"""Where a project's running platform is, read from devbox.yaml without building the config model.

The full model (:mod:`devbox.config`) is assembled from every component's spec — pydantic models of
every mock — which costs a read-only CLI command (``devbox status``) most of its start-up time.
Those commands need only ``platform.state_dir`` (where the runtime file says which port the API
got), ``platform.ports.api`` and ``platform.token``: this module reads just those with PyYAML and
leaves validation to the platform, which reads the whole file when it starts. Anything it cannot
read plainly (not a mapping, a wrong type) is reported as ``None`` so the caller falls back to the
full, validating load and its file:line:key message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devbox import envvars

DEFAULT_FILE = "devbox.yaml"
#: The API listener's default port (devbox.platform.component.API_LISTENER; not imported: that
#: module pulls in the platform). tests/unit/test_projectfile.py checks that the two agree.
DEFAULT_API_PORT = 7070


def find_config(path: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``path``, else $DEVBOX_CONFIG, else ./devbox.yaml."""
    chosen = Path(path or os.environ.get(envvars.DEVBOX_CONFIG) or DEFAULT_FILE)
    if chosen.is_dir():
        chosen = chosen / DEFAULT_FILE
    return chosen


@dataclass(frozen=True)
class PlatformAddress:
    """What a CLI command needs to reach a project's platform."""

    state_path: Path
    api_port: int
    token: str | None


def read_platform_address(source: Path) -> PlatformAddress | None:
    """The ``platform:`` facts of ``source``, or None when they cannot be read plainly."""
    import yaml  # PyYAML: a few ms, unlike the config model

    try:
        data = yaml.load(source.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    data = {} if data is None else data
    platform: Any = data.get("platform", {}) if isinstance(data, dict) else None
    platform = {} if platform is None else platform
    if not isinstance(platform, dict):
        return None
    ports = platform.get("ports") or {}
    state_dir = platform.get("state_dir", ".devbox")
    api = ports.get("api", DEFAULT_API_PORT) if isinstance(ports, dict) else None
    token = os.environ.get(envvars.DEVBOX_TOKEN) or platform.get("token")
    if not isinstance(state_dir, str) or isinstance(api, bool) or not isinstance(api, int):
        return None
    if token is not None and not isinstance(token, str):
        return None
    root = source.resolve().parent
    return PlatformAddress(state_path=(root / state_dir).resolve(), api_port=api, token=token or None)


__all__ = ["DEFAULT_API_PORT", "DEFAULT_FILE", "PlatformAddress", "find_config", "read_platform_address"]
