"""Fault rules and the decision for one call: pure, no sockets.

A rule targets a callee service's inbound traffic, optionally only calls from one caller
(caller→callee pair), one instance of the callee (its deploy name ``users-2`` or naming id: one
bad instance among healthy siblings), one HTTP method, or paths starting with a prefix (for gRPC:
the method path ``/pkg.Service/Method`` — only where the proxy can see it). It adds latency, answers a
share of calls with an error status, and/or resets a share of connections. Each rule draws from
its own seeded random generator, so a scenario with a fixed seed gets the same faults.

LIMITATIONS: the Polaris fault-injection model is not spoken; rules are devbox's own JSON.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FaultSpec(BaseModel):
    """What ``POST /api/faults`` takes."""

    model_config = ConfigDict(extra="forbid")

    service: str = Field(min_length=1, description="Callee whose inbound traffic is affected.")
    caller: str | None = Field(None, description="Only calls from this service.")
    instance: str | None = Field(None, min_length=1,
                                 description="Only calls to this instance: its deploy name (users-2) or naming id.")
    path: str | None = Field(None, description="Only HTTP paths (or gRPC methods) starting with this.")
    method: str | None = Field(None, description="Only this HTTP method.")
    latency_ms: float = Field(0, ge=0, le=60_000)
    error_rate: float = Field(0, ge=0, le=1)
    status: int = Field(503, ge=400, le=599)
    abort_rate: float = Field(0, ge=0, le=1)
    seed: int | None = Field(None, description="Seed of this rule's random draws.")

    @model_validator(mode="after")
    def _something(self) -> FaultSpec:
        if not (self.latency_ms or self.error_rate or self.abort_rate):
            raise ValueError("a fault needs latency_ms, error_rate or abort_rate")
        return self


@dataclass
class Rule:
    spec: FaultSpec
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    created: float = field(default_factory=time.time)
    rng: random.Random = field(default_factory=random.Random)
    hits: int = 0
    errors: int = 0
    aborts: int = 0
    delayed: int = 0

    def __post_init__(self) -> None:
        if self.spec.seed is not None:
            self.rng = random.Random(self.spec.seed)

    def applies(self, *, service: str, caller: str | None, method: str | None, path: str | None,
                instance: Collection[str] = ()) -> bool:
        """``instance``: the names the called instance goes by (naming id, deploy name)."""
        s = self.spec
        if s.service != service:
            return False
        if s.instance is not None and s.instance not in instance:
            return False
        if s.caller is not None and s.caller != caller:
            return False
        if s.method is not None and (method or "").upper() != s.method.upper():
            return False
        return not (s.path is not None and not (path or "").startswith(s.path))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            **self.spec.model_dump(),
            "created": self.created,
            "stats": {"hits": self.hits, "delayed": self.delayed, "errors": self.errors, "aborts": self.aborts},
        }


@dataclass
class Decision:
    """What to do with one call: abort it, answer it with ``status``, or forward it after a delay."""

    latency_ms: float = 0.0
    status: int | None = None
    abort: bool = False
    rules: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.latency_ms or self.status or self.abort)


def decide(rules: list[Rule], *, service: str, caller: str | None = None, method: str | None = None,
           path: str | None = None, instance: Collection[str] = ()) -> Decision:
    """Combine every applicable rule: latencies add up; the first abort or error drawn wins.
    ``instance``: the names the called instance goes by (naming id, deploy name)."""
    decision = Decision()
    for rule in rules:
        if not rule.applies(service=service, caller=caller, method=method, path=path, instance=instance):
            continue
        rule.hits += 1
        spec = rule.spec
        decision.rules.append(rule.id)
        if spec.latency_ms:
            decision.latency_ms += spec.latency_ms
            rule.delayed += 1
        if not decision.abort and decision.status is None:
            if spec.abort_rate and rule.rng.random() < spec.abort_rate:
                decision.abort = True
                rule.aborts += 1
            elif spec.error_rate and rule.rng.random() < spec.error_rate:
                decision.status = spec.status
                rule.errors += 1
    return decision


def caller_of(headers: dict[str, str]) -> str | None:
    """The calling service: ``x-devbox-caller``, else W3C baggage ``caller`` or ``service.name``."""
    explicit = headers.get("x-devbox-caller")
    if explicit:
        return explicit.strip()
    baggage = headers.get("baggage", "")
    found: dict[str, str] = {}
    for item in baggage.split(","):
        key, sep, value = item.partition("=")
        if sep:
            found[key.strip()] = value.split(";")[0].strip()
    return found.get("caller") or found.get("service.name") or found.get("service") or None


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace_id, parent span id) of a W3C traceparent header, or None."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    return parts[1].lower(), parts[2].lower()
