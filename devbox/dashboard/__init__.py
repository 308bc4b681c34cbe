"""The dashboard: one page on the devbox API port that shows what the platform knows.

It reads only devbox's own HTTP API (the same one the CLI uses): services and instances, the
topology, traces with their waterfall and root cause, PromQL charts, alerts and history.
"""

from __future__ import annotations

from devbox.platform.component import ComponentSpec

#: Serves on the platform's own ``api`` listener; no config section.
SPEC = ComponentSpec(name="dashboard", factory="devbox.dashboard.component:DashboardComponent")
