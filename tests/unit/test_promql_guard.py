"""PromQL text is bounded before the native parser sees it: the known crashers are refused with a
reason, and ordinary queries (long label alternations, comments, strings full of brackets) pass.

Each crasher is parsed in a child process: if the guard ever lets one through, the child dies with
SIGSEGV and the test fails, instead of pytest dying with it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc

import pytest
from devbox.mocks.metrics.promql import Evaluator, ListSource, QueryError, parse
from devbox.mocks.metrics.promql.guard import MAX_NESTING, MAX_OPERATORS, MAX_QUERY_CHARS, check_text

#: Python expressions building the texts that crashed (or froze) the native parser, and what the
#: refusal must name.
CRASHERS = {
    "5000-term chain": ('"+".join(["1"] * 5000)', "operators"),
    "100k parentheses": ('"(" * 100_000 + "1" + ")" * 100_000', "characters"),
    "3000 parentheses": ('"(" * 3000 + "1" + ")" * 3000', "nests"),
    "2000 nested sums": ('"sum(" * 2000 + "x" + ")" * 2000', "nests"),
    "5000 unary minus": ('"-" * 5000 + "1"', "operators"),
    "unclosed braces": ('"{" * 100_000', "characters"),
    "chain of subqueries": ('"x" + "[1m:1s]" * 2000', "operators"),
}

_CHILD = textwrap.dedent(
    """
    import sys
    from devbox.mocks.metrics.promql import Evaluator, ListSource, QueryError, parse
    text = eval(sys.argv[1])
    try:
        parse(text)
    except QueryError as exc:
        print("REFUSED", exc)
    else:
        print("PARSED")
    """
)


@pytest.mark.parametrize("name", sorted(CRASHERS))
def test_known_crashers_are_refused_without_killing_the_process(name: str) -> None:
    builder, reason = CRASHERS[name]
    out = subprocess.run([sys.executable, "-c", _CHILD, builder], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"the parser process died ({out.returncode}): {out.stderr[-500:]}"
    assert out.stdout.startswith("REFUSED"), out.stdout
    assert reason in out.stdout


def test_bounds_leave_room_for_real_queries() -> None:
    alternation = "|".join(f"pod-{i}" for i in range(3000))
    queries = [
        f'sum by (pod) (rate(http_requests_total{{pod=~"{alternation}"}}[5m]))',
        'sum(rate(x{a="((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((("}[1m]))',
        "# a comment with ((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((\n up",
        " or ".join(f"up{{job='{i}'}}" for i in range(100)),
        "histogram_quantile(0.99, sum by (le) (rate(rpc_server_duration_seconds_bucket[5m]))) * 1e-3",
        "(" * MAX_NESTING + "1" + ")" * MAX_NESTING,
        "+".join(["1"] * (MAX_OPERATORS + 1)),
    ]
    for query in queries:
        check_text(query)
        parse(query)


def test_each_bound_is_named_in_the_refusal() -> None:
    with pytest.raises(QueryError, match="at most 65536"):
        check_text("x" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(QueryError, match=f"nests {MAX_NESTING + 1} levels"):
        check_text("(" * (MAX_NESTING + 1) + "1" + ")" * (MAX_NESTING + 1))
    with pytest.raises(QueryError, match=f"has {MAX_OPERATORS + 1} operators"):
        check_text("+".join(["1"] * (MAX_OPERATORS + 2)))


def test_deepest_accepted_query_evaluates_within_the_recursion_limit() -> None:
    """The evaluator walks the AST recursively: the deepest text the guard accepts must evaluate
    (a RecursionError would be a refusal of a query the guard promised to take)."""
    ev = Evaluator(ListSource())
    chain = "-" * (MAX_OPERATORS // 2) + "+".join(["1"] * (MAX_OPERATORS // 2 - 1))
    deep = "(" * MAX_NESTING + chain + ")" * MAX_NESTING
    check_text(deep)
    kind, _ = ev.instant(deep, 0.0)
    assert kind == "scalar"


# --- query-side denial of service --------------------------------------------------------------


def _hostile_source(chars: int = 40) -> ListSource:
    source = ListSource()
    source.add({"__name__": "x", "k": "a" * chars + "!"}, [(t, 1.0) for t in range(0, 600, 15)])
    source.add({"__name__": "x", "k": "aaa"}, [(t, 2.0) for t in range(0, 600, 15)])
    return source


def test_catastrophic_regex_is_linear_time() -> None:
    """``(a+)+$`` against 40 a's and a mismatch: Python's backtracking engine needs ~2^40 steps."""
    ev = Evaluator(_hostile_source(40))
    started = time.monotonic()
    _, result = ev.instant('x{k=~"(a+)+$"}', 300.0)
    assert time.monotonic() - started < 1.0
    assert [labels["k"] for labels, _ in result] == ["aaa"]


def test_regex_is_re2_anchored_and_dot_matches_newline_like_prometheus() -> None:
    source = ListSource()
    for value in ("api", "api-v2", "line\nbreak", "web"):
        source.add({"__name__": "x", "k": value}, [(0.0, 1.0)])
    ev = Evaluator(source)

    def keys(expr: str) -> list[str]:
        return sorted(labels["k"] for labels, _ in ev.instant(expr, 10.0)[1])

    assert keys('x{k=~"api"}') == ["api"]  # anchored: not a search
    assert keys('x{k=~"api|web"}') == ["api", "web"]
    assert keys('x{k=~"line.break"}') == ["line\nbreak"]
    assert keys('x{k!~"a.*"}') == ["line\nbreak", "web"]
    with pytest.raises(QueryError, match=r"regex|regular expression"):
        ev.instant('x{k=~"(a)\\\\1"}', 10.0)  # backreferences are not RE2 (Prometheus refuses them too)


def test_huge_subquery_is_refused_before_building_its_steps() -> None:
    source = ListSource()
    source.add({"__name__": "x"}, [(0.0, 1.0)])
    ev = Evaluator(source)
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(QueryError, match="subquery would evaluate"):
            ev.instant("max_over_time(x[4h:1ms])", 14400.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1.0
    assert peak < 10 * 2**20


@pytest.mark.parametrize(("query", "at"), [
    ("max_over_time(vector(1)[1s:1ms])", 1e17),  # a float second cannot hold 1 ms there
    ("max_over_time(vector(1)[1s:1ms] offset -999999999d)", 14400.0),
])
def test_a_subquery_step_finer_than_a_timestamp_far_from_now_is_refused(query: str, at: float) -> None:
    """It looped for good (the step added to the time left it unchanged), holding a query thread."""
    with pytest.raises(QueryError, match="finer than a timestamp"):
        Evaluator(ListSource()).instant(query, at)


def test_subquery_steps_are_aligned_multiples_of_the_step() -> None:
    source = ListSource()
    source.add({"__name__": "x"}, [(float(t), float(t)) for t in range(0, 100)])
    got = Evaluator(source).instant("count_over_time(x[1s:100ms])", 50.0)
    assert got == ("vector", [({}, 10.0)])  # the 10 steps in (49 s, 50 s], each seeing the sample at 49 s


def test_sample_budget_refuses_a_query_that_would_hold_too_many_points() -> None:
    source = ListSource()
    for i in range(50):
        source.add({"__name__": "x", "i": str(i)}, [(float(t), 1.0) for t in range(0, 3600, 10)])
    ev = Evaluator(source, max_samples=30_000)
    with pytest.raises(QueryError, match="too many samples"):
        ev.range("x", 0.0, 3600.0, 1.0)
    assert ev.range("sum(x)", 0.0, 3600.0, 60.0)[0] == "matrix"  # 18,000 samples read + 50 x 61 points fit


def test_query_past_its_deadline_is_refused() -> None:
    ev = Evaluator(_hostile_source())
    with pytest.raises(QueryError, match="timed out"):
        ev.instant("sum(x)", 300.0, deadline=time.monotonic() - 1)


def test_query_pool_refuses_past_its_queue_and_frees_slots() -> None:
    """Two run, two wait, the fifth is refused at once as busy; slots come back when queries end."""
    from devbox.mocks.metrics.core import QueryBusy, QueryRunner

    runner = QueryRunner(workers=2, waiting=2, timeout=30)
    release = threading.Event()
    try:
        futures = [runner.submit(lambda _deadline: release.wait(30)) for _ in range(4)]
        with pytest.raises(QueryBusy, match="too many queries"):
            runner.submit(lambda _deadline: True)
        release.set()
        assert all(f.result(30) for f in futures)
        assert runner.call(lambda deadline: deadline > time.monotonic())  # a slot again, with a deadline ahead
    finally:
        release.set()
        runner.close()
