"""Alerting (007's 告警配置 / 告警屏蔽 / 告警历史): rules, silences, history, notifications.

- ``config`` — the ``alerting:`` section and the two rule forms (Prometheus rule groups and the
  007-style short form);
- ``rules`` — loading both forms from devbox.yaml and rule files with file:line reasons,
  compiling the short form to PromQL, annotation templates, export as a Prometheus rule file;
- ``engine`` — the pure core: per label set inactive → pending → firing → resolved, silences,
  posted alerts, which transitions are notified, and the backtest;
- ``store`` — alerting.db: history, silences, API-created rules;
- ``notify`` — Alertmanager's webhook payload, the terminal line, forwarding upstream;
- ``api`` / ``alertmanager`` — devbox's ``/api/alerts`` and the Alertmanager API v2 subset;
- ``component`` — wires them to the platform and evaluates through the metrics component.
"""

from __future__ import annotations

from devbox.mocks.alerting.config import AlertingConfig

from devbox.platform.component import ComponentSpec, Listener

SPEC = ComponentSpec(
    name="alerting",
    factory="devbox.mocks.alerting.component:AlertingComponent",
    config_key="alerting",
    config_model=AlertingConfig,
    listeners=(
        Listener("alertmanager", 9093, "http", "Alertmanager API v2.",
                 errors="devbox.mocks.alerting.alertmanager:render_error"),
    ),
    after=("metrics",),
)
