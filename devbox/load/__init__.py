"""Load tests and capacity planning (``devbox load``, ``devbox capacity``).

- :mod:`devbox.load.model` — the pure capacity model: fan-out per entry from traces, predicted
  vs measured QPS per service, saturation per instance from a ramp, instances needed for a target
  mix. No sockets, no files: unit-tested on recorded and synthetic traces.
- :mod:`devbox.load.locust` — Locust as subprocesses (a headless master, N local workers): its
  command line, its CSV output read while it runs, a clean stop that keeps what was measured.
  Locust (and its gevent patching) never enters a devbox process.
- :mod:`devbox.load.runs` — every run kept under ``.devbox/load/<run-id>/``.
- :mod:`devbox.load.platform` — what a run needs from the platform, over its HTTP APIs only.
- :mod:`devbox.load.ramp` — step ramp with a stop condition.
- :mod:`devbox.load.report` — capacity report: terminal tables, JSON, an HTML page with plotly.
"""
