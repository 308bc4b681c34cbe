"""Budgets a scenario declares (``budgets:``), checked on the run's evidence against a baseline.

One budget per string, ``FUNCTION(ARGS) OP LIMIT``:

- ``fanout(ENTRY, SERVICE) <= N`` — calls ``SERVICE`` receives per request of ``ENTRY`` (mean over
  the run); ``ENTRY`` is ``service:operation``, e.g. ``gateway:GET /checkout/{user}``.
- ``p99_regression(OP) <= 20%`` / ``p50_regression(OP) <= 20%`` — that quantile of ``OP``'s
  latency in this run over the baseline's, as a change (``+20%`` is 1.2x); needs a baseline. It is
  broken only when the two runs' latencies also differ significantly (Mann-Whitney U, p < 0.01)
  and some operation on its path takes more of its own time (a latency finding of the diff): on
  a busy CI runner a whole run is slower, its tail quantile by half, while no hop changed. When
  this run was the faster one, the baseline's latencies are first taken at its speed (x
  :func:`~devbox.diff.core.run_scale`, the factor on every operation's own time): a baseline
  recorded on a busier machine would otherwise hide a regression (seen: +50 ms in orders read as
  p50 145 → 155 ms, +6.5 %, with the whole run x0.76; +40 % at the same speed). A slower run is not
  scaled down: its waits need not stretch like own time, and scaling them could hide a change.
  LIMITATION: time added between a caller's and a callee's spans (a proxy, the network) is not
  anyone's own time, so a regression made only of it passes.
- ``error_rate(OP) <= 1%`` — share of ``OP``'s calls that failed in this run.

Names match without case (the Zipkin API answers them lower-cased). A budget whose operation
did not run fails (a budget that silently checks nothing would let a renamed route through).
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from devbox.diff.core import ALPHA, diff_latency, fmt_p, run_scale
from devbox.diff.profile import Profile
from devbox.diff.stats import mann_whitney, quantile

_BUDGET = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*(<=|<|>=|>|==)\s*([0-9.]+)\s*(%?)\s*$")
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt, "==": operator.eq}
FUNCTIONS = ("fanout", "p99_regression", "p50_regression", "error_rate")


class BudgetError(ValueError):
    """A budget string that cannot be read; ``str()`` says why."""


@dataclass(frozen=True)
class Budget:
    text: str
    function: str
    args: tuple[str, ...]
    op: str
    limit: float
    percent: bool


@dataclass
class BudgetResult:
    budget: Budget
    ok: bool
    value: float | None
    reason: str


def parse(text: str) -> Budget:
    m = _BUDGET.match(text)
    if not m:
        raise BudgetError(f"{text!r} is not a budget like 'fanout(gateway:GET /checkout/{{user}}, users) <= 2' "
                          "or 'p99_regression(gateway:GET /checkout/{user}) <= 20%'")
    function, raw_args, op, limit, percent = m.groups()
    if function not in FUNCTIONS:
        raise BudgetError(f"{text!r}: unknown budget {function!r} (one of {', '.join(FUNCTIONS)})")
    args = tuple(a.strip() for a in raw_args.split(","))
    wanted = 2 if function == "fanout" else 1
    if len(args) != wanted or not all(args):
        raise BudgetError(f"{text!r}: {function} takes {wanted} argument(s)")
    if ":" not in args[0]:
        raise BudgetError(f"{text!r}: name the operation as service:operation (e.g. gateway:GET /checkout/{{user}})")
    value = float(limit) / 100 if percent else float(limit)
    return Budget(text.strip(), function, args, op, value, bool(percent))


def _op(text: str) -> tuple[str, str]:
    service, _, operation = text.partition(":")
    return service.strip().lower(), operation.strip().lower()


def _fmt(value: float, percent: bool) -> str:
    return f"{value:+.1%}" if percent else f"{value:.2f}"


def _grown_on_path(entry: tuple[str, str], run: Profile, baseline: Profile) -> list[str]:
    """Operations on ``entry``'s path (itself and the services it calls) whose own time grew (the
    diff's latency findings, and own time spent on added calls)."""
    findings, notes = diff_latency(baseline, run)
    path = {entry[0], *run.fanout.get(entry, {})}
    return [f.subject for f in [*findings, *notes] if f.kind in ("latency", "latency_with_more_calls")
            and f.subject.split(":", 1)[0] in path and f.data["self"]["delta_ms"] > 0]


def check(budget: Budget, run: Profile, baseline: Profile | None) -> BudgetResult:
    """Whether ``run`` (against ``baseline`` for regressions) keeps ``budget``."""
    key = _op(budget.args[0])
    if budget.function == "fanout":
        per = run.fanout.get(key)
        if per is None:
            return BudgetResult(budget, False, None, f"no request of {budget.args[0]} in this run")
        column = per.get(budget.args[1].lower(), [0] * run.entries[key])
        value = sum(column) / len(column)
        detail = f"{budget.args[1]} is called {value:.2f}x per request of {budget.args[0]} ({len(column)} requests)"
    elif budget.function == "error_rate":
        stats = run.ops.get(key)
        if stats is None or not stats.count:
            return BudgetResult(budget, False, None, f"no call of {budget.args[0]} in this run")
        value = stats.errors / stats.count
        detail = f"{budget.args[0]} failed {stats.errors}/{stats.count} ({value:.1%})"
    else:
        q = 0.99 if budget.function == "p99_regression" else 0.5
        if baseline is None:
            return BudgetResult(budget, True, None, "not checked: no baseline (run with --baseline SNAPSHOT)")
        now, before = run.ops.get(key), baseline.ops.get(key)
        if now is None or before is None or not now.count or not before.count:
            missing_in = "this run" if now is None or not now.count else "the baseline"
            return BudgetResult(budget, False, None, f"no call of {budget.args[0]} in {missing_in}")
        # a faster run than the baseline's: the baseline at this run's speed. Never the other way: the
        # factor is of own time, and a slower run's waits (network, sleeps) need not stretch with it, so a
        # scaled-up baseline could hide a regression; a slower run is compared as it is, and the checks
        # below tell a busy machine from a change
        scale = min(run_scale(baseline, run), 1.0)
        was = [x * scale for x in before.durations_ms]
        a, b = quantile(was, q), quantile(now.durations_ms, q)
        value = (b - a) / a if a else 0.0
        p = mann_whitney(was, now.durations_ms)
        name = budget.function.split("_")[0]
        speed = ""
        if abs(scale - 1) >= 0.05:
            speed = f", the baseline's {quantile(before.durations_ms, q):.1f} ms at this run's x{scale:.2f} speed"
        detail = (f"{name} of {budget.args[0]} {a:.1f} → {b:.1f} ms ({value:+.1%}{speed}; {before.count} vs "
                  f"{now.count} calls, {fmt_p(p)})")
        if not _OPS[budget.op](value, budget.limit):
            if p >= ALPHA:
                # over the limit, but the two runs' latencies are not told apart by the test: noise
                return BudgetResult(budget, True, value, f"{detail}; over the budget by noise only (not significant)")
            where = _grown_on_path(key, run, baseline)
            if not where:
                return BudgetResult(budget, True, value, f"{detail}; over the budget, but no operation on its path "
                                    "takes more of its own time: the whole run was slower (a busy machine), "
                                    "not a change")
            detail += f"; own time grew in {', '.join(where)}"
    ok = _OPS[budget.op](value, budget.limit)
    limit = _fmt(budget.limit, budget.percent) if budget.percent else f"{budget.limit:g}"
    return BudgetResult(budget, ok, value, f"{detail}; budget {budget.op} {limit}")


def check_all(budgets: list[str], run: Profile, baseline: Profile | None) -> list[BudgetResult]:
    return [check(parse(text), run, baseline) for text in budgets]
