"""A :class:`Diff` as a terminal table (rich) or one self-contained HTML page."""

from __future__ import annotations

import html
from datetime import datetime

from rich.console import Console
from rich.table import Table

from devbox.diff.core import Diff, Finding

KIND_TITLES = {
    "fanout": "fan-out", "edge_new": "new edge", "edge_gone": "edge gone", "latency": "latency",
    "error_rate": "errors", "error_type_new": "new error type", "error_type_gone": "error type gone",
    "alert_fired": "alert fired", "alert_quiet": "alert quiet", "config": "config",
    "latency_passed_on": "latency (passed on)", "latency_with_more_calls": "latency (more calls)",
    "errors_passed_on": "errors (passed on)", "traffic": "traffic", "latency_whole_run": "latency (whole run)",
}


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "?"


def _side(d: Diff, side: str) -> str:
    s = d.summary.get(side) or {}
    lo, hi = s.get("window") or (0, 0)
    return f"{s.get('label')}: {s.get('traces', 0)} traces, {_when(lo)} → {_when(hi)}"


def print_table(d: Diff, out: Console) -> None:
    out.print(f"A  {_side(d, 'a')}", highlight=False)
    out.print(f"B  {_side(d, 'b')}", highlight=False)
    scale = float(d.summary.get("own_time_scale") or 1.0)
    if abs(scale - 1) >= 0.05:
        out.print(f"[dim]every operation's own time is x{scale:.2f} in B (the machine): compared beyond that[/]",
                  highlight=False)
    if not d.findings:
        out.print("[green]no significant difference[/]")
    else:
        table = Table(title=f"{len(d.findings)} finding(s)", title_justify="left", show_lines=False)
        table.add_column("kind", style="bold")
        table.add_column("what")
        for f in d.findings:
            table.add_row(KIND_TITLES.get(f.kind, f.kind), f.text)
        out.print(table)
    if d.notes:
        out.print("[dim]context (not findings):[/]")
        for n in d.notes:
            out.print(f"  [dim]{KIND_TITLES.get(n.kind, n.kind)}: {n.text}[/]", highlight=False)


PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>devbox diff {a} → {b}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}} table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}} .kind{{font-weight:600;white-space:nowrap}} .notes td{{color:#777}}
.ok{{color:#2a7d2a}} code{{background:#f4f4f4;padding:0 .3em}}</style></head><body>
<h1>devbox diff</h1><p>A <code>{side_a}</code><br>B <code>{side_b}</code></p>
<h2>{count} finding(s)</h2>{findings}<h2>Context (not findings)</h2>{notes}
<p style="color:#777">A finding is significant (p &lt; 0.01: Mann-Whitney U for latency and fan-out, a two-proportion
test for error rates) and material (latency &gt; 10 % and &gt; 5 ms on the median; fan-out by &ge; 0.2 calls per
request; errors by &ge; 1 point). Latency and errors are counted where they started (self time, origin errors);
own time is compared beyond the factor every operation's own time changed by (a busier or idler machine).</p>
</body></html>"""


def _rows(items: list[Finding], css: str = "") -> str:
    if not items:
        return '<p class="ok">none</p>'
    rows = "".join(f"<tr><td class=kind>{html.escape(KIND_TITLES.get(f.kind, f.kind))}</td>"
                   f"<td>{html.escape(f.text)}</td></tr>" for f in items)
    return f'<table class="{css}"><tr><th>kind</th><th>what</th></tr>{rows}</table>'


def to_html(d: Diff) -> str:
    return PAGE.format(a=html.escape(d.a), b=html.escape(d.b), side_a=html.escape(_side(d, "a")),
                       side_b=html.escape(_side(d, "b")), count=len(d.findings), findings=_rows(d.findings),
                       notes=_rows(d.notes, "notes"))
