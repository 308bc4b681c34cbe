"""A scenario session: one fresh platform with the project's services, and every step as a method.

The YAML runner calls these methods; Python users call them too — ``session.do("traffic",
service="gateway", count=10)`` validates keyword arguments exactly like a YAML step, and
``session.expect_routing(...)`` and friends check assertions: the same power from code.

Each session starts a platform on ephemeral ports with its state in a new folder (clean platform
state), so scenarios never see each other's spans, metrics, alerts or instances. Assertions read
the platform's own data: naming's registry and its change events, the spans the collector
accepted (routing shares), the traces it stored and its analysis (root cause, critical path,
topology), the metrics query engine, alerting's history store, instance log files.

The session is put together from three parts: :mod:`devbox.scenario.system` (the platform's
set-up and teardown, and how the session reaches components: through their ports),
:mod:`devbox.scenario.actions` (what steps do to the running system) and
:mod:`devbox.scenario.assertions` (what ``expect`` reads to check).

LIMITATIONS: runs the platform inside the calling process (not against a `devbox up` elsewhere).
"""

from __future__ import annotations

import time
from typing import Any

from devbox.scenario.actions import Actions
from devbox.scenario.assertions import Assertions
from devbox.scenario.model import Expectation, WaitStep
from devbox.scenario.system import AssertionFailed, StepError


class Session(Actions, Assertions):
    """One platform for one scenario. Use as a context manager, or call :meth:`close`."""

    def __enter__(self) -> Session:
        return self

    def do(self, kind: str, /, **kwargs: Any) -> Any:
        """Run one step by kind with keyword arguments, validated like YAML (``do("traffic", ...)``)."""
        from devbox.scenario.model import STEP_KINDS

        if kind not in STEP_KINDS:
            raise StepError(f"unknown step kind {kind!r} (allowed: {', '.join(STEP_KINDS)})")
        args = STEP_KINDS[kind].model_validate(kwargs)
        if isinstance(args, Expectation):
            return self.expect(args)
        return getattr(self, kind)(args)

    def wait(self, step: WaitStep) -> None:
        """Wait some seconds, for a background traffic to finish, or until an assertion holds."""
        if step.seconds is not None:
            time.sleep(step.seconds)
        elif step.traffic is not None:
            run = self._traffic(step.traffic)
            if step.stop:
                run.cancelled.set()
            self._finish(run)
        elif step.until is not None:
            exp = step.until.model_copy(update={"within": step.timeout})
            try:
                self.expect(exp)
            except AssertionFailed as exc:
                raise AssertionFailed(f"timed out after {step.timeout:g}s waiting until: {exc}") from None

    # --- clients of the platform's public APIs -------------------------------------------

    def naming_client(self) -> Any:
        from devbox.scenario.clients import NamingClient

        return NamingClient(self.url("api"), namespace=self.namespace)

    def traces_client(self) -> Any:
        from devbox.scenario.clients import TracesClient

        return TracesClient(self.url("zipkin"))

    def metrics_client(self) -> Any:
        from devbox.scenario.clients import MetricsClient

        return MetricsClient(self.url("prometheus"))

    def alerts_client(self) -> Any:
        from devbox.scenario.clients import AlertsClient

        return AlertsClient(self.url("alertmanager"))


__all__ = ["AssertionFailed", "Session", "StepError"]
