"""Balancers (distribution, ring-hash stability) and the circuit-breaker state machine."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from devbox.polaris.balancer import NoInstanceError, RingHash, RoundRobin, WeightedRandom, make_balancer
from devbox.polaris.circuit import BreakerConfig, CircuitBreaker, CircuitBreakers, CircuitState


@dataclass
class Inst:
    id: str
    weight: int = 100


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_weighted_random_distribution_follows_weights() -> None:
    insts = [Inst("a", 100), Inst("b", 300), Inst("z", 0)]
    lb = WeightedRandom(random.Random(1).random)
    counts = Counter(lb.choose(insts).id for _ in range(8000))
    assert counts["z"] == 0
    assert 0.7 < counts["b"] / 8000 < 0.8


def test_round_robin_is_exact_and_smooth() -> None:
    insts = [Inst("a", 500), Inst("b", 100), Inst("c", 100)]
    lb = RoundRobin()
    picks = [lb.choose(insts).id for _ in range(70)]
    assert Counter(picks) == {"a": 50, "b": 10, "c": 10}
    window = picks[:7]
    assert Counter(window) == {"a": 5, "b": 1, "c": 1}
    assert "aaaaa" not in "".join(window)  # interleaved, not a burst
    equal = [Inst("x"), Inst("y"), Inst("w")]
    assert [lb.choose(equal).id for _ in range(6)] == ["x", "y", "w", "x", "y", "w"]


def test_ring_hash_is_consistent_balanced_and_stable() -> None:
    insts = [Inst(f"i{n}") for n in range(5)]
    lb = RingHash(vnodes=160)
    keys = [f"user-{n}" for n in range(4000)]
    before = {k: lb.choose(insts, key=k).id for k in keys}
    assert all(lb.choose(list(reversed(insts)), key=k).id == v for k, v in list(before.items())[:200])
    share = Counter(before.values())
    assert all(500 < c < 1200 for c in share.values()), share
    after = {k: lb.choose(insts[:4], key=k).id for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == "i4" for k in moved)  # only the removed instance's keys move
    assert len(moved) == share["i4"]


def test_ring_hash_without_key_falls_back_and_weight_counts() -> None:
    lb = RingHash(vnodes=100)
    insts = [Inst("a", 300), Inst("b", 100)]
    counts = Counter(lb.choose(insts, key=f"k{n}").id for n in range(4000))
    assert 0.65 < counts["a"] / 4000 < 0.85
    assert lb.choose(insts).id in {"a", "b"}


@pytest.mark.parametrize("name", ["weighted_random", "round_robin", "ring_hash"])
def test_empty_or_zero_weight_raises(name: str) -> None:
    lb = make_balancer(name)
    with pytest.raises(NoInstanceError):
        lb.choose([])
    with pytest.raises(NoInstanceError):
        lb.choose([Inst("a", 0)], key="k")
    with pytest.raises(ValueError, match="unknown balancer"):
        make_balancer("nope")


def test_breaker_opens_on_consecutive_errors_then_half_open_then_closes() -> None:
    clock = Clock()
    cb = CircuitBreakers(BreakerConfig(consecutive_errors=3, sleep_window=5, max_ejection_percent=100), clock)
    for _ in range(2):
        assert cb.record("a", False) is CircuitState.CLOSED
    cb.record("a", True)  # a success resets the run
    for _ in range(2):
        cb.record("a", False)
    assert cb.record("a", False) is CircuitState.OPEN
    assert cb.is_open("a")
    clock.now += 4.9
    assert cb.is_open("a")
    clock.now += 0.2
    assert cb.state("a") is CircuitState.HALF_OPEN and not cb.is_open("a")
    assert cb.acquire("a")  # the single probe
    assert cb.is_open("a") and not cb.acquire("a")  # no second probe meanwhile
    assert cb.record("a", True) is CircuitState.CLOSED
    assert not cb.is_open("a")


def test_unreported_probe_does_not_block_forever() -> None:
    clock = Clock()
    cb = CircuitBreakers(BreakerConfig(consecutive_errors=1, sleep_window=5), clock)
    cb.record("a", False, peers=1)
    clock.now += 5
    assert cb.acquire("a")  # the probe goes out and its outcome is never reported
    clock.now += 4
    assert cb.is_open("a")
    clock.now += 1
    assert not cb.is_open("a") and cb.acquire("a")


def test_failed_probe_reopens_with_a_longer_sleep() -> None:
    clock = Clock()
    cfg = BreakerConfig(consecutive_errors=1, sleep_window=5, max_sleep_window=12)
    cb = CircuitBreaker(cfg, clock)
    cb.record(False)
    cb.trip(cb.take_pending())
    clock.now += 5
    assert cb.acquire()
    assert cb.record(False) is CircuitState.OPEN
    assert cb.sleep_window == 10
    clock.now += 9
    assert cb.state() is CircuitState.OPEN
    clock.now += 1
    assert cb.state() is CircuitState.HALF_OPEN
    cb.acquire()
    cb.record(False)
    assert cb.sleep_window == 12  # capped


def test_breaker_opens_on_error_rate_in_window_only() -> None:
    clock = Clock()
    cb = CircuitBreakers(BreakerConfig(consecutive_errors=100, error_rate=0.5, min_requests=10, window=10,
                                       max_ejection_percent=100), clock)
    for n in range(9):
        cb.record("a", n % 2 == 0)  # 4 errors of 9: below min_requests
    assert cb.state("a") is CircuitState.CLOSED
    clock.now += 11  # everything so far leaves the window
    for n in range(9):
        cb.record("a", n % 3 == 0)
    assert cb.state("a") is CircuitState.CLOSED  # 6/9, still below min_requests
    assert cb.record("a", False) is CircuitState.OPEN  # 7/10 >= 50%
    assert "error rate" in cb.get("a").last_reason


def test_outlier_ejection_is_capped() -> None:
    clock = Clock()
    cb = CircuitBreakers(BreakerConfig(consecutive_errors=1, max_ejection_percent=50), clock)
    assert cb.record("a", False, peers=4) is CircuitState.OPEN
    assert cb.record("b", False, peers=4) is CircuitState.OPEN
    assert cb.record("c", False, peers=4) is CircuitState.CLOSED  # 3 of 4 would exceed 50 %
    assert "max_ejection_percent" in cb.get("c").last_reason
    solo = CircuitBreakers(BreakerConfig(consecutive_errors=1, max_ejection_percent=50), clock)
    assert solo.record("only", False, peers=1) is CircuitState.OPEN  # a lone instance can be ejected


def test_config_from_mapping_and_validation() -> None:
    cfg = BreakerConfig.from_mapping({"consecutive_errors": 2, "unknown": 1})
    assert cfg.consecutive_errors == 2 and cfg.sleep_window == 5
    assert BreakerConfig.from_mapping(None) == BreakerConfig()
    with pytest.raises(ValueError):
        BreakerConfig(error_rate=0)
    with pytest.raises(ValueError):
        BreakerConfig(success_to_close=2, half_open_probes=1)


def test_forget_drops_gone_instances() -> None:
    cb = CircuitBreakers(BreakerConfig(consecutive_errors=1))
    cb.record("a", False, peers=1)
    cb.forget(set())
    assert cb.state("a") is CircuitState.CLOSED and cb.snapshot() == {}
