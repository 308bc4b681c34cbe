"""The ``metrics:`` section of devbox.yaml: storage, scraping and composite indicators.

Composite indicators (007's "复合指标") are formulas over base metrics, for example
``success_rate: rpc_server_requests_total{status="ok"} * 100 / rpc_server_requests_total``. Each
base metric in the formula is filtered like the query, rated over ``window`` when it is a
counter, and summed by the query's group-by (default ``by``); then the arithmetic is applied.
They are queried by name like any metric: in PromQL, in the devbox API and in alert rules.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

INDICATOR_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class IndicatorConfig(BaseModel):
    """One composite indicator."""

    model_config = ConfigDict(extra="forbid")

    formula: str = Field(
        description="Arithmetic over base metric selectors and numbers, e.g. "
        "'rpc_server_requests_total{status=\"ok\"} * 100 / rpc_server_requests_total'."
    )
    by: list[str] = Field(default_factory=list, description="Default group-by dimensions when the query names none.")
    window: float = Field(60.0, gt=0, description="Seconds counters are rated over.")
    help: str = Field("", description="What the indicator means, shown by `devbox metrics ls`.")

    @field_validator("formula")
    @classmethod
    def _parses(cls, value: str) -> str:
        from devbox.mocks.metrics.indicators import check_formula
        from devbox.mocks.metrics.promql import QueryError, parse

        try:
            check_formula(parse(value))
        except QueryError as exc:
            raise ValueError(str(exc)) from None
        return value


def _default_indicators() -> dict[str, IndicatorConfig]:
    # Built without validation: checking a formula imports the PromQL engine (numpy), ~0.1 s of
    # every config load before `devbox up` binds its ports (issue 15); these are fixed, and
    # tests/unit/test_start_imports.py validates them.
    return {
        "success_rate": IndicatorConfig.model_construct(
            formula='rpc_server_requests_total{status="ok"} * 100 / rpc_server_requests_total',
            by=["callee"],
            help="Percent of calls a service answered without error (callee side).",
        ),
        "error_rate": IndicatorConfig.model_construct(
            formula='rpc_server_requests_total{status="error"} * 100 / rpc_server_requests_total',
            by=["callee"],
            help="Percent of calls a service answered with an error (callee side).",
        ),
        "avg_latency_seconds": IndicatorConfig.model_construct(
            formula="rpc_server_duration_seconds_sum / rpc_server_duration_seconds_count",
            by=["callee"],
            help="Mean server-side latency in seconds.",
        ),
        "client_success_rate": IndicatorConfig.model_construct(
            formula='rpc_client_requests_total{status="ok"} * 100 / rpc_client_requests_total',
            by=["caller", "callee"],
            help="Percent of calls that succeeded as seen by the caller.",
        ),
    }


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float = Field(24.0, gt=0, description="Points older than this are deleted.")
    raw_minutes: float = Field(
        60.0, gt=0, description="Points younger than this keep 1 s resolution; older ones are rolled up to 1 min."
    )
    max_series: int = Field(
        200_000, gt=0, description="Requests that would create more series than this are refused (cardinality guard)."
    )
    scrape_interval: float = Field(
        5.0, gt=0, description="Seconds between scrapes of services whose `scrape:` path is set."
    )
    scrape_timeout: float = Field(3.0, gt=0, description="Seconds before a scrape gives up.")
    rpc_buckets: list[float] = Field(
        default_factory=lambda: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        description="Upper bounds (seconds) of the RPC latency histograms derived from spans.",
    )
    indicators: dict[str, IndicatorConfig] = Field(
        default_factory=_default_indicators,
        description="Composite indicators by name; the built-in success_rate, error_rate, "
        "avg_latency_seconds and client_success_rate are kept unless redefined.",
    )

    @field_validator("indicators")
    @classmethod
    def _names(cls, value: dict[str, IndicatorConfig]) -> dict[str, IndicatorConfig]:
        for name in value:
            if not INDICATOR_NAME.match(name):
                raise ValueError(f"indicator name {name!r} must look like a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
        return {**_default_indicators(), **value}

    @field_validator("rpc_buckets")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        if not value or sorted(set(value)) != value:
            raise ValueError("rpc_buckets must be a non-empty, strictly increasing list of seconds")
        return value
