"""Scenario suites: steps against a fresh platform, assertions read from the platform's own data.

Files are ``*.scenario.yaml`` next to (or below) the project's ``devbox.yaml``; one scenario per
YAML document. ``devbox scenario run scenarios/shop --junit out.xml`` runs them (exit 0 only when
all pass), ``pytest scenarios/shop`` collects them as tests, ``devbox scenario schema`` prints
the format as JSON Schema. A scenario::

    name: feature-env routing          # required
    seed: 7                            # optional; else a fresh one, printed (--seed overrides)
    timeout: 120                       # seconds for the whole scenario
    steps:                             # each step: a mapping with exactly one kind
      - up: {services: [...], overrides: {orders: {replicas: 2, version: v2}},
             add: [{service: orders, tags: {env: feature-x}}], settings: {alerting: {...}}}
      - traffic: {name: t, service: gateway, path: /checkout/alice, labels: {env: feature-x},
                  count: 40 | rate: 10 + duration: 5, concurrency: 4, background: false,
                  protocol: http | grpc, method: GET | /pkg.Service/Method, headers: {...}}
      - expect: {routing: {traffic: t, service: orders, selector: {env: feature-x}, min_share: 0.99},
                 within: 10}

Steps: ``up``, ``traffic``, ``kill`` (SIGKILL), ``hang`` (SIGSTOP), ``signal``, ``stop``,
``start``, ``isolate``, ``fault`` (latency_ms, error_rate + status, abort_rate; scoped by caller,
method, path), ``clear_faults``, ``naming_fault`` (drop_heartbeats, circuit_open),
``routing_rule``, ``silence``, ``wait`` (seconds | traffic [+ stop: true, to end it now] | until: <assertion>),
``expect``.
Instances are picked by index, ``random`` (seeded), ``all``, metadata, or a name given by ``as:``.

Assertions (``expect:``, re-checked until ``within`` seconds): ``routing`` (share of calls on a
metadata selector or a named instance), ``failover`` (error bound; named instance out of naming
within a time), ``trace`` (services/operations in order, no error, root cause, critical-path
share; ``which: any|all``), ``topology`` (edges present/absent), ``metric`` (PromQL or indicator
vs a threshold, optionally over a window), ``alert`` (state, notified, silenced, history),
``log`` (regex in a service's instance logs, or absent). A failure shows the expectation next
to what was observed.

From Python::

    from devbox.scenario import open_session

    with open_session("scenarios/shop/devbox.yaml", seed=7) as s:
        s.do("up", services=["gateway", "users"])
        s.do("traffic", name="t", service="gateway", path="/checkout/alice", count=20)
        s.expect_routing(traffic="t", service="users", selector={"env": "base"})
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devbox.scenario.session import AssertionFailed, Session, StepError

__all__ = ["AssertionFailed", "Session", "StepError", "open_session"]


def __getattr__(name: str) -> Any:
    # The session imports every component; it is loaded on first use so that importing a light
    # part of this package (the pytest plugin, loaded by every pytest run) does not cost seconds.
    if name in ("AssertionFailed", "Session", "StepError"):
        from devbox.scenario import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_session(config: str | os.PathLike[str] | None = None, **kwargs: Any) -> Session:
    """A :class:`Session` for the project's devbox.yaml (``config``, else ./devbox.yaml)."""
    from devbox.config import load_config
    from devbox.scenario.session import Session

    return Session(load_config(Path(config) if config else None), **kwargs)
