"""Per-instance circuit breaking with outlier ejection — pure state machines, clock injected.

One :class:`CircuitBreaker` per instance::

    CLOSED ──(consecutive_errors in a row, or error_rate over ≥ min_requests in window)──▶ OPEN
    OPEN ──(sleep window elapsed)──▶ HALF_OPEN: lets ``half_open_probes`` calls through
    HALF_OPEN ──(success_to_close successes)──▶ CLOSED;  ──(any error)──▶ OPEN again

Outlier ejection (Envoy-style, what Polaris's "instance circuit breaking" amounts to) lives in
:class:`CircuitBreakers`, the set for one caller: an instance is only ejected (opened) while
fewer than ``max_ejection_percent`` of the known instances are open — the rest keep taking
traffic rather than the whole service going dark — and the sleep window of an instance that
is ejected again grows with each ejection (``sleep_window * n``, capped at ``max_sleep_window``)
and resets once it closes cleanly.

LIMITATIONS: only instance-level breaking (no Polaris service/method-level rules or fault
detectors); "error" is whatever the caller reports.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

LOG = logging.getLogger(__name__)


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerConfig:
    """Thresholds; :meth:`from_mapping` reads the ``circuit_breaker`` object of a naming watch."""

    consecutive_errors: int = 5
    error_rate: float = 0.5
    min_requests: int = 10
    window: float = 10.0
    sleep_window: float = 5.0
    max_sleep_window: float = 60.0
    half_open_probes: int = 1
    success_to_close: int = 1
    max_ejection_percent: float = 50.0

    def __post_init__(self) -> None:
        if self.consecutive_errors < 1 or self.min_requests < 1 or self.half_open_probes < 1:
            raise ValueError("consecutive_errors, min_requests and half_open_probes must be >= 1")
        if not 0 < self.error_rate <= 1:
            raise ValueError("error_rate must be in (0, 1]")
        if self.window <= 0 or self.sleep_window <= 0 or self.max_sleep_window < self.sleep_window:
            raise ValueError("window and sleep_window must be > 0, max_sleep_window >= sleep_window")
        if self.success_to_close < 1 or self.success_to_close > self.half_open_probes:
            raise ValueError("success_to_close must be in 1..half_open_probes")
        if not 0 <= self.max_ejection_percent <= 100:
            raise ValueError("max_ejection_percent must be in 0..100")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> BreakerConfig:
        """Known keys override the defaults; unknown keys are ignored (the server may send more)."""
        if not data:
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class CircuitBreaker:
    """The state machine of one instance."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._opened_at = 0.0
        self._ejections = 0
        self._probes_out = 0
        self._probe_at = 0.0
        self._probe_successes = 0
        self.last_reason = ""
        self._pending = ""

    @property
    def sleep_window(self) -> float:
        return min(self.config.sleep_window * max(1, self._ejections), self.config.max_sleep_window)

    def state(self) -> CircuitState:
        if self._state is CircuitState.OPEN and self._clock() - self._opened_at >= self.sleep_window:
            self._state = CircuitState.HALF_OPEN
            self._probes_out = 0
            self._probe_successes = 0
        return self._state

    def available(self) -> bool:
        """Whether a call may go to this instance now (does not consume a half-open probe)."""
        state = self.state()
        if state is CircuitState.CLOSED:
            return True
        if state is not CircuitState.HALF_OPEN:
            return False
        if self._probes_out >= self.config.half_open_probes and self._clock() - self._probe_at >= self.sleep_window:
            self._probes_out = 0  # a probe whose outcome was never reported does not block forever
        return self._probes_out < self.config.half_open_probes

    def acquire(self) -> bool:
        """Like :meth:`available`, but takes a half-open probe slot when it lets the call through."""
        if not self.available():
            return False
        if self._state is CircuitState.HALF_OPEN:
            self._probes_out += 1
            self._probe_at = self._clock()
        return True

    def record(self, ok: bool) -> CircuitState:
        """Account one call's outcome; returns the state after it."""
        now = self._clock()
        state = self.state()
        if state is CircuitState.HALF_OPEN:
            if not ok:
                self._open(now, "probe failed in half-open")
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.success_to_close:
                    self._close()
            return self._state
        if state is CircuitState.OPEN:
            return state  # a late answer from before opening: no effect
        self._window.append((now, ok))
        cutoff = now - self.config.window
        while self._window and self._window[0][0] < cutoff:
            self._window.popleft()
        if ok:
            self._consecutive = 0
            return state
        self._consecutive += 1
        if self._consecutive >= self.config.consecutive_errors:
            self._pending = f"{self._consecutive} consecutive errors"
            return state
        total = len(self._window)
        errors = sum(1 for _, good in self._window if not good)
        if total >= self.config.min_requests and errors / total >= self.config.error_rate:
            self._pending = f"error rate {errors}/{total} in {self.config.window:g}s"
        return state

    # -- transitions, driven by CircuitBreakers so the ejection cap can veto an opening ---------

    def take_pending(self) -> str:
        reason, self._pending = self._pending, ""
        return reason

    def _open(self, now: float, reason: str) -> None:
        self._state = CircuitState.OPEN
        self._opened_at = now
        self._ejections += 1
        self._probes_out = 0
        self._probe_successes = 0
        self.last_reason = reason
        LOG.debug("circuit open: %s", reason)

    def _close(self) -> None:
        self._state = CircuitState.CLOSED
        self._consecutive = 0
        self._window.clear()
        self._ejections = 0
        self.last_reason = "closed after successful probe"

    def trip(self, reason: str) -> None:
        """Open now (the ejection decision is the caller's)."""
        self._open(self._clock(), reason)

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.state().value, "consecutive_errors": self._consecutive,
                "ejections": self._ejections, "reason": self.last_reason}


class CircuitBreakers:
    """All instance breakers of one caller, with the outlier-ejection cap."""

    def __init__(self, config: BreakerConfig | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or BreakerConfig()
        self._clock = clock
        self._breakers: dict[str, CircuitBreaker] = {}
        #: ids whose breaker is not closed: the only ones that can refuse calls
        self._tripped: set[str] = set()

    def configure(self, config: BreakerConfig) -> None:
        """New thresholds for breakers created from now on and for existing ones."""
        self.config = config
        for breaker in self._breakers.values():
            breaker.config = config

    def get(self, instance_id: str) -> CircuitBreaker:
        breaker = self._breakers.get(instance_id)
        if breaker is None:
            breaker = self._breakers[instance_id] = CircuitBreaker(self.config, self._clock)
        return breaker

    def state(self, instance_id: str) -> CircuitState:
        breaker = self._breakers.get(instance_id)
        return CircuitState.CLOSED if breaker is None else breaker.state()

    def is_open(self, instance_id: str) -> bool:
        """True when calls must not go to the instance (open, or half-open with probes taken)."""
        breaker = self._breakers.get(instance_id)
        return breaker is not None and not breaker.available()

    def acquire(self, instance_id: str) -> bool:
        breaker = self._breakers.get(instance_id)
        return breaker is None or breaker.acquire()

    def record(self, instance_id: str, ok: bool, *, peers: int | None = None) -> CircuitState:
        """Account one call; ``peers`` = how many instances the service has (for the ejection cap)."""
        breaker = self.get(instance_id)
        state = breaker.record(ok)
        reason = breaker.take_pending()
        if reason and state is CircuitState.CLOSED:
            total = max(peers or 0, len(self._breakers), 1)
            open_now = sum(1 for b in self._breakers.values() if b.state() is not CircuitState.CLOSED)
            if (open_now + 1) * 100 <= self.config.max_ejection_percent * total or total == 1:
                breaker.trip(reason)
            else:
                breaker.last_reason = f"{reason}; not ejected: max_ejection_percent reached"
        final = breaker.state()
        if final is CircuitState.CLOSED:
            self._tripped.discard(instance_id)
        else:
            self._tripped.add(instance_id)
        return final

    def blocked(self) -> frozenset[str]:
        """Ids of the instances that refuse calls right now (cheap when nothing is tripped)."""
        if not self._tripped:
            return frozenset()
        return frozenset(i for i in self._tripped if not self._breakers[i].available())

    def forget(self, keep: set[str]) -> None:
        """Drop breakers of instances that no longer exist."""
        for instance_id in [i for i in self._breakers if i not in keep]:
            del self._breakers[instance_id]
            self._tripped.discard(instance_id)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {iid: b.snapshot() for iid, b in self._breakers.items()}
