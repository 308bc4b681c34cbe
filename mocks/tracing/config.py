"""The ``tracing:`` section of devbox.yaml."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TracingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retention_hours: float = Field(24.0, gt=0, description="Spans older than this are deleted.")
    max_spans: int = Field(2_000_000, gt=0, description="At most this many spans are kept (oldest go first).")
    retention_interval_s: float = Field(
        30.0, gt=0, description="How often the age/count retention runs, in seconds."
    )
    write_batch_spans: int = Field(
        20_000, gt=0, description="Most spans the indexer writes in one SQLite transaction."
    )
    # One lane a core by default: the lanes are niced with the indexer (acknowledging goes first) and
    # decode side by side (bench_ingest --drain: 2 lanes index 1.16-1.22x what 1 does on a 2-core VM).
    index_lanes: int = Field(
        0, ge=0, le=16,
        description="Processes that index the WAL side by side (decoding runs on every core, writes take turns); "
                    "0: one per core, at most 4.",
    )
    # Under a saturating load exports queued behind one check process (it used ~0.55 of a core); the
    # second starts only while every running one has a check in flight (indexer.CheckPool).
    check_processes: int = Field(
        0, ge=0, le=16,
        description="Processes that read exports before they are acknowledged (each takes the checks of its turn; "
                    "more start only under concurrent exports); 0: one per core, at most 2.",
    )
    # The WAL is on disk (~160 bytes a span of OTLP protobuf: 8M spans ~1.3 GB), not in memory: a
    # burst is acknowledged at the WAL's speed and indexed behind it. 2M refused the 20 s
    # burst at the in-memory Jaeger's rate after ~7 s (0.42x Jaeger's acknowledged spans; 8M: 1.04x,
    # where Jaeger held 9 GB of RAM; bench/bench_ingest.py); the price of the room is disk and the
    # time to queryable while a burst is indexed (lag / the indexing rate, ~28-33k spans/s on 2 cores).
    max_pending_spans: int = Field(
        8_000_000, gt=0,
        description="Exports are refused (503 + Retry-After) while this many acknowledged spans wait in the WAL "
                    "(on disk, ~160 bytes each) to be indexed.",
    )
    wal_min_free_mb: int = Field(
        512, ge=0,
        description="Exports are refused (503 + Retry-After) while the disk holding the WAL has less than this "
                    "many MB free, rather than filling it.",
    )
    wal_fsync_interval_s: float = Field(
        0.2, ge=0,
        description="The WAL is fsynced this often (acknowledged spans survive a process kill at once, an OS "
                    "crash after the next fsync); 0 fsyncs before each acknowledgement.",
    )
    max_future_skew_s: float = Field(
        3600.0, ge=0, description="Spans starting further than this in the future are rejected as absurd."
    )
    analysis_max_spans: int = Field(
        200_000, gt=0, description="Most spans one topology/fan-out analysis reads (newest first)."
    )
    autocomplete_keys: list[str] = Field(
        default_factory=lambda: ["http.route", "http.request.method", "http.response.status_code", "rpc.method"],
        description="Tag keys the Zipkin API offers for autocompletion (/api/v2/autocompleteKeys).",
    )
