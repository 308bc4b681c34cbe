"""httpcore (what httpx sends with) without importing trio before anyone runs under it, and httpx
without its command line.

httpcore imports trio at its own import only to learn whether it will run under trio; with trio
installed (other tools bring it) that is ~0.1 s of CPU in every process that makes its first httpx
client: each instance of a service using :mod:`devbox.sdk` (``sdk.http_client()`` in its lifespan,
before it answers readiness), every CLI command. A process that really runs under trio has imported
trio before any request is sent, so httpcore reaches it through a stand-in that imports trio on
first use (``httpcore.TrioBackend`` too): nothing changes for trio users.

httpx imports its own command line (``httpx._main``: click, pygments, rich) at its import, ~55 ms of
CPU in every process that imports httpx: the platform (its first probe, scrape, notification or
proxy span: on the event loop while a project's instances start), every CLI command, every instance
using :mod:`devbox.sdk`. :func:`load_httpx` imports httpx without it (``httpx.main`` is then httpx's own
stand-in, which says the CLI's dependencies are missing); the ``httpx`` command itself is a process of
its own and unaffected. Where httpx was imported before, it is left as it is.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from types import ModuleType
from typing import Any

LOG = logging.getLogger(__name__)


class _TrioOnFirstUse:
    """Stands for the trio module in httpcore's synchronization primitives until one is used."""

    def __getattr__(self, name: str) -> Any:
        return getattr(importlib.import_module("trio"), name)


def _trio_backend(name: str) -> Any:
    """``httpcore.TrioBackend`` on first access (PEP 562), importing trio then."""
    if name == "TrioBackend":
        return importlib.import_module("httpcore._backends.trio").TrioBackend
    raise AttributeError(f"module 'httpcore' has no attribute {name!r}")


def load_httpcore() -> ModuleType:
    """Import httpcore, deferring its import of trio to first use (see the module docstring)."""
    loaded = sys.modules.get("httpcore")
    if loaded is not None:
        return loaded
    if "trio" in sys.modules or importlib.util.find_spec("trio") is None:
        return importlib.import_module("httpcore")  # running under trio already, or nothing to defer
    sys.modules["trio"] = None  # type: ignore[assignment]  # import trio -> ImportError while httpcore loads
    try:
        httpcore = importlib.import_module("httpcore")
    finally:
        del sys.modules["trio"]
    sync = sys.modules.get("httpcore._synchronization")
    if sync is None or getattr(sync, "trio", "absent") is not None or "TrioBackend" not in vars(httpcore):
        # an httpcore laid out differently: import it again with trio, as it expects
        LOG.debug("httpcore layout not recognized; importing trio with it")
        for name in [m for m in sys.modules if m == "httpcore" or m.startswith("httpcore.")]:
            del sys.modules[name]
        return importlib.import_module("httpcore")
    setattr(sync, "trio", _TrioOnFirstUse())  # noqa: B010  # a module attribute mypy does not know
    del httpcore.TrioBackend  # the stand-in that says trio is not installed; the real one on first access
    setattr(httpcore, "__getattr__", _trio_backend)  # noqa: B010  # PEP 562: the module's own lookup
    return httpcore


def load_httpx() -> ModuleType:
    """httpx, with httpcore loaded without trio and without httpx's command line (see the module docstring)."""
    load_httpcore()
    loaded = sys.modules.get("httpx")
    if loaded is not None:
        return loaded
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]  # import -> ImportError: httpx's stand-in
    try:
        return importlib.import_module("httpx")
    finally:
        if blocked:
            del sys.modules["httpx._main"]
