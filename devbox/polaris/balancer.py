"""Load balancers: weighted random, (smooth weighted) round robin, ring hash — pure, no I/O.

Every balancer has one method, ``choose(instances, key=None)``, over objects with ``id`` and
``weight`` (the registry's ``Instance`` and the SDK's both fit). Weights of 0 or less are never
chosen; an empty list raises :class:`NoInstanceError`.

- :class:`WeightedRandom` — Polaris's default ``weightedRandom``; ``rng`` injectable.
- :class:`RoundRobin` — nginx's smooth weighted round robin: over any window of sum(weights)
  picks each instance is chosen exactly weight-proportionally, interleaved, not in bursts.
- :class:`RingHash` — Polaris ``ringHash``: each instance owns ``vnodes * weight/100`` points
  on a 64-bit ring; a key goes to the first point at or after its hash, so removing one instance
  only moves the keys it owned. Without a key it falls back to weighted random.

LIMITATIONS: Maglev and L5 consistent hash (other Polaris balancers) are not provided.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

LOG = logging.getLogger(__name__)


class Weighted(Protocol):
    """What a balancer reads of an instance; read-only, so frozen dataclasses (the SDK's) qualify."""

    @property
    def id(self) -> str: ...

    @property
    def weight(self) -> int: ...


T = TypeVar("T", bound=Weighted)


class NoInstanceError(LookupError):
    """Nothing to choose from."""


class Balancer(Protocol):
    name: str

    def choose(self, instances: Sequence[T], key: str | None = None) -> T: ...


def _usable(instances: Sequence[T]) -> list[T]:
    usable = [i for i in instances if i.weight > 0]
    if not usable:
        raise NoInstanceError("no instance with a positive weight")
    return usable


class WeightedRandom:
    """Pick with probability weight / sum(weights).

    The same list object passed again reuses its prepared weights: pass a new list (not the old
    one mutated) when the candidates change — the SDK's routing results are never mutated.
    """

    name = "weighted_random"

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._rng = rng
        # the last list seen and its cumulative weights: callers that pass the same (cached)
        # candidate list again skip the O(n) preparation
        self._last: tuple[Sequence[Any], list[Any], list[int]] | None = None

    def choose(self, instances: Sequence[T], key: str | None = None) -> T:
        last = self._last
        if last is not None and last[0] is instances:
            usable, cumulative = last[1], last[2]
        else:
            usable = _usable(instances)
            cumulative = list(itertools.accumulate(i.weight for i in usable))
            self._last = (instances, usable, cumulative)
        if len(usable) == 1:
            return usable[0]
        index = bisect.bisect_right(cumulative, self._rng() * cumulative[-1])
        return usable[min(index, len(usable) - 1)]


class RoundRobin:
    """Smooth weighted round robin; state is per instance id, so list order does not matter."""

    name = "round_robin"

    def __init__(self) -> None:
        self._current: dict[str, int] = {}

    def choose(self, instances: Sequence[T], key: str | None = None) -> T:
        usable = _usable(instances)
        if len(usable) == 1:
            return usable[0]
        current = self._current
        if len(current) > 4 * len(usable):  # forget instances that went away long ago
            ids = {i.id for i in usable}
            self._current = current = {k: v for k, v in current.items() if k in ids}
        total = 0
        best: T | None = None
        best_value = 0
        for inst in usable:
            value = current.get(inst.id, 0) + inst.weight
            current[inst.id] = value
            total += inst.weight
            if best is None or value > best_value:
                best, best_value = inst, value
        assert best is not None
        current[best.id] = best_value - total
        return best


def hash64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class RingHash:
    """Consistent hashing by key with virtual nodes.

    Rings are cached per instance set (a few sets, e.g. one per routing subset, stay warm), so
    a ring is built only when a set is seen for the first time.
    """

    name = "ring_hash"
    max_rings = 16

    def __init__(self, vnodes: int = 100, rng: Callable[[], float] = random.random) -> None:
        if vnodes < 1:
            raise ValueError("vnodes must be >= 1")
        self.vnodes = vnodes
        self._fallback = WeightedRandom(rng)
        self._rings: dict[tuple[tuple[str, int], ...], tuple[list[int], list[str]]] = {}
        self._last: tuple[Sequence[Any], tuple[list[int], list[str]], dict[str, Any]] | None = None

    def _build(self, usable: Sequence[Weighted]) -> tuple[list[int], list[str]]:
        ring: list[tuple[int, str]] = []
        for inst in usable:
            count = max(1, round(self.vnodes * inst.weight / 100))
            ring.extend((hash64(f"{inst.id}#{n}"), inst.id) for n in range(count))
        ring.sort()
        return [p for p, _ in ring], [owner for _, owner in ring]

    def choose(self, instances: Sequence[T], key: str | None = None) -> T:
        if key is None:
            return self._fallback.choose(instances)
        last = self._last
        if last is not None and last[0] is instances:  # same list object as last time (see WeightedRandom)
            ring, by_id = last[1], last[2]
        else:
            usable = _usable(instances)
            signature = tuple(sorted((i.id, i.weight) for i in usable))
            cached = self._rings.get(signature)
            if cached is None:
                if len(self._rings) >= self.max_rings:
                    self._rings.pop(next(iter(self._rings)))  # oldest first
                cached = self._rings[signature] = self._build(usable)
            ring = cached
            # objects may be fresh copies with the same ids: answer with this call's objects
            by_id = {i.id: i for i in usable}
            self._last = (instances, ring, by_id)
        points, owners = ring
        index = bisect.bisect_left(points, hash64(key))
        return by_id[owners[index if index < len(points) else 0]]


BALANCERS: dict[str, Callable[[], Balancer]] = {
    "weighted_random": WeightedRandom,
    "round_robin": RoundRobin,
    "ring_hash": RingHash,
}


def make_balancer(name: str) -> Balancer:
    """A new balancer by name (``weighted_random``, ``round_robin``, ``ring_hash``)."""
    try:
        return BALANCERS[name]()
    except KeyError:
        raise ValueError(f"unknown balancer {name!r}; known: {', '.join(BALANCERS)}") from None
