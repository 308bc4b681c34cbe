"""The dependency linker's helpers (tracing/links.py) against their straightforward definitions."""

from __future__ import annotations

import random
from typing import Any

from devbox.mocks.tracing.links import break_cycles


def _break_cycles_by_definition(parent_of: dict[Any, Any]) -> None:
    """Walk up from each node in turn, keeping the path; a node met again on the path closes a loop,
    whose last link walked is dropped; every node walked is settled."""
    settled: set[Any] = set()
    for start in list(parent_of):
        path: list[Any] = []
        node = start
        while node is not None and node not in settled:
            if node in path:
                del parent_of[path[-1]]
                break
            path.append(node)
            node = parent_of.get(node)
        settled.update(path)


def test_break_cycles_drops_the_links_walking_each_path_drops() -> None:
    r = random.Random(5)
    for _ in range(500):
        n = r.randint(1, 30)
        parent_of = {k: r.randrange(n + 3) for k in r.sample(range(n), r.randint(0, n))}  # loops, self-loops, roots
        want = dict(parent_of)
        _break_cycles_by_definition(want)
        break_cycles(parent_of)
        assert parent_of == want
        # what is left has no loop: every walk up ends
        for start in parent_of:
            node, steps = start, 0
            while node in parent_of:
                node, steps = parent_of[node], steps + 1
                assert steps <= n


def test_add_calls_sums_each_call_into_its_minute_and_bucket() -> None:
    from devbox.mocks.tracing.links import MINUTE_US, add_calls, bucket_of

    r = random.Random(9)
    calls = [(r.randrange(0, 5 * MINUTE_US), r.choice("ab"), r.choice("bc"),
              r.choice([0, 1, 2, 999, r.randrange(10**7)]), r.randint(0, 1)) for _ in range(2000)]
    for sign in (1, -1):
        delta: dict = {}
        add_calls(delta, calls, sign)
        want: dict = {}
        for start_us, caller, callee, duration, error in calls:
            row = want.setdefault((start_us // MINUTE_US, caller, callee), [0, 0, 0, 0, {}])
            row[0] += sign
            row[1] += sign * error
            row[2] += sign * duration
            row[3] = max(row[3], duration) if sign > 0 else row[3]
            row[4][bucket_of(duration)] = row[4].get(bucket_of(duration), 0) + sign
        assert delta == want
