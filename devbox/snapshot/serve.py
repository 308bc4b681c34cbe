"""``devbox snapshot load``: a platform with no services holding a snapshot, until Ctrl-C.

It runs in this process on free ports with its state in ``NAME.view/`` beside the snapshot (made
fresh each time), so it never meets the project's own ``devbox up``. The commands of the CLI reach
it through ``DEVBOX_API``, which it prints.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from devbox.snapshot.format import Evidence
from devbox.snapshot.restore import restore

LOG = logging.getLogger(__name__)


def start(ev: Evidence, state: Path) -> tuple[Any, dict[str, Any]]:
    """A started :class:`~devbox.testing.PlatformThread` (no services) with ``ev`` restored into it,
    and what was written and what was refused."""
    import httpx

    from devbox.config import PlatformConfig, Ports, ProjectConfig
    from devbox.testing import PlatformThread

    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    config = ProjectConfig.model_validate({
        "project": str(ev.meta.get("project") or "snapshot"), "services": [], "root": state,
        "platform": PlatformConfig(host="127.0.0.1", ports=Ports.ephemeral(), state_dir=str(state / "state")),
    })
    thread = PlatformThread(config)
    thread.start(timeout=60)
    with httpx.Client(base_url=thread.url("api"), timeout=60) as api:
        return thread, restore(ev, api, thread.url("zipkin"))


def serve(ev: Evidence, state: Path, *, out: Console, stop: threading.Event | None = None) -> None:
    """Start, print where it answers, wait for Ctrl-C (or ``stop``), shut down."""
    thread, done = start(ev, state)
    out.print(f"snapshot {ev.label()} loaded: {done['services']} services, {done['instances']} instances, "
              f"{done['routing_rules']} routing rules, {done['spans']} spans, {done['alert_rules']} alert rules, "
              f"{done['silences']} silences", highlight=False)
    for refusal in done["refused"][:10]:
        out.print(f"[yellow]not restored:[/] {refusal}", highlight=False)
    out.print(f"dashboard: {thread.url('api')}/", highlight=False)
    # a line of its own, never wrapped: it is pasted into another shell
    out.print(f"in another shell: export DEVBOX_API={thread.url('api')}", highlight=False, soft_wrap=True)
    out.print("read-only (in the file; `devbox snapshot show`): alert transitions, deploy events, releases, "
              "fault rules, raw metric samples. Ctrl-C stops.", highlight=False)
    try:
        (stop or threading.Event()).wait()
    except KeyboardInterrupt:
        pass
    finally:
        thread.stop()
