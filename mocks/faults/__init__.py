"""Fault injection at the platform boundary: proxies in front of instances, rules, naming faults."""

from __future__ import annotations

from devbox.mocks.faults.config import FaultsConfig

from devbox.platform.component import ComponentSpec

SPEC = ComponentSpec(
    name="faults",
    factory="devbox.mocks.faults.component:FaultsComponent",
    config_key="faults",
    config_model=FaultsConfig,
    after=("naming",),
)
