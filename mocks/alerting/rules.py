"""Loading alert rules: both written forms → :class:`Rule`, with file:line reasons when they do not parse.

Also the 007 short form's compilation to PromQL and the annotation templates (a subset of
Prometheus's Go templates: ``{{ $labels.x }}``, ``{{ $value }}``, ``humanize``, ``printf`` ...).

LIMITATIONS: templates support value/label references, ``index`` and a handful of functions
piped or called (humanize*, printf, toUpper, toLower, title, reReplaceAll, stripPort,
stripDomain), comparisons and if/else; no range/with/variables or queries (a rule using them
is refused with that reason). External labels are empty. Recording rules are accepted and skipped.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devbox.mocks.alerting.config import PromRuleSpec, RuleGroupSpec, ShortRuleSpec
from devbox.mocks.alerting.models import Rule
from devbox.mocks.alerting.shortform import compile_short
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from devbox.yamlpos import YamlError, YamlMap, dump, item_line, key_line, load, plain


class RuleFile(BaseModel):
    """What a rule file may hold: Prometheus ``groups`` and/or short-form ``rules``."""

    model_config = ConfigDict(extra="forbid")

    groups: list[RuleGroupSpec] = Field(default_factory=list)
    rules: list[ShortRuleSpec] = Field(default_factory=list)


@dataclass
class LoadResult:
    rules: list[Rule] = field(default_factory=list)
    #: ``path:line: reason`` for each problem; a file with any problem contributes no rules.
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- the short form ------------------------------------------------------------------------


def rule_from_short(spec: ShortRuleSpec, source: str) -> Rule:
    annotations = dict(spec.annotations)
    annotations.setdefault(
        "summary",
        f"{spec.indicator} {spec.comparison} {spec.threshold:g} for {spec.duration:g}s"
        " (now {{ $value | humanize }})",
    )
    check_templates(annotations)
    check_templates(spec.labels)
    return Rule(
        name=spec.name,
        expr=compile_short(spec),
        group=spec.group,
        for_s=spec.duration,
        labels=dict(spec.labels),
        annotations=annotations,
        source=source,
        short=spec.model_dump(mode="json", exclude={"labels", "annotations", "group", "name"}),
    )


def rule_from_prom(spec: PromRuleSpec, group: str, source: str) -> Rule:
    assert spec.alert is not None
    check_templates(spec.annotations)
    check_templates(spec.labels)
    return Rule(
        name=spec.alert,
        expr=spec.expr,
        group=group,
        for_s=spec.for_,
        keep_firing_for_s=spec.keep_firing_for,
        labels=dict(spec.labels),
        annotations=dict(spec.annotations),
        source=source,
    )


def rule_from_json(data: Any, source: str = "api") -> Rule:
    """A rule posted to the API: a Prometheus rule (``alert``, ``expr``, ... + optional ``group``)
    or a short-form rule (``name``, ``indicator``, ...). Raises ValueError with the reason."""
    if not isinstance(data, dict):
        raise ValueError(
            "a rule is a JSON object: {alert, expr, for, labels, annotations[, group]} "
            "or {name, indicator, filter, comparison, threshold, duration}"
        )
    try:
        if "indicator" in data:
            return rule_from_short(ShortRuleSpec.model_validate(data), source)
        body = dict(data)
        group = body.pop("group", "devbox")
        if not isinstance(group, str) or not group:
            raise ValueError("group must be a non-empty string")
        spec = PromRuleSpec.model_validate(body)
        if spec.record:
            raise ValueError("recording rules are not evaluated by devbox; post an 'alert' rule")
        return rule_from_prom(spec, group, source)
    except ValidationError as exc:
        raise ValueError("; ".join(_describe(err) for err in exc.errors())) from None


def _describe(err: dict[str, Any]) -> str:
    where = ""
    for part in err["loc"]:
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
    where = where.replace("for_", "for")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    return f"{where}: {msg}" if where else msg


# --- files ---------------------------------------------------------------------------------


def _line_of(tree: Any, loc: tuple[Any, ...], base_line: int = 0) -> int | None:
    node, line = tree, None
    for key in loc:
        key = "for" if key == "for_" else key
        found = key_line(node, key) if isinstance(key, str) else item_line(node, key)
        if found is None:
            break
        line, node = found, node[key]
    return line


def _item_line(tree: Any, *path: Any) -> int | None:
    return _line_of(tree, tuple(path))


def load_tree(tree: Any, where: str, *, prefix: tuple[Any, ...] = ()) -> LoadResult:
    """Rules from a parsed YAML mapping with ``groups``/``rules`` keys (``prefix`` = its path in the file)."""
    result = LoadResult()
    root = tree
    for key in prefix:
        root = root[key] if isinstance(root, dict | list) else None
    data = plain(root) if isinstance(root, dict) else {}
    wanted = {k: v for k, v in data.items() if k in ("groups", "rules")} if prefix else data
    try:
        parsed = RuleFile.model_validate(wanted)
    except ValidationError as exc:
        for err in exc.errors():
            line = _line_of(tree, (*prefix, *err["loc"]))
            result.errors.append(f"{where}:{line or 1}: {_describe(err)}")
        return result
    rules: list[Rule] = []
    for gi, group in enumerate(parsed.groups):
        for ri, spec in enumerate(group.rules):
            line = _item_line(tree, *prefix, "groups", gi, "rules", ri)
            at = f"{where}:{line}" if line else where
            if spec.record:
                result.warnings.append(f"{at}: recording rule {spec.record!r} skipped (not evaluated)")
                continue
            try:
                rules.append(rule_from_prom(spec, group.name, at))
            except ValueError as exc:
                result.errors.append(f"{at}: {exc}")
    for ri, short in enumerate(parsed.rules):
        line = _item_line(tree, *prefix, "rules", ri)
        at = f"{where}:{line}" if line else where
        try:
            rules.append(rule_from_short(short, at))
        except ValueError as exc:
            result.errors.append(f"{at}: {exc}")
    seen: dict[str, str] = {}
    for rule in rules:
        if rule.id in seen:
            result.errors.append(f"{rule.source}: rule {rule.id} is already defined at {seen[rule.id]}")
        seen[rule.id] = rule.source
    if not result.errors:
        result.rules = rules
    return result


def parse_yaml(text: str, where: str) -> tuple[Any, str | None]:
    """(tree, None) or (None, ``where:line: reason``)."""
    try:
        tree = load(text)
    except YamlError as exc:
        return None, f"{where}:{exc.line or 1}: not valid YAML: {exc.problem}"
    if tree is None:
        tree = YamlMap(1)
    if not isinstance(tree, dict):
        return None, f"{where}:1: a rule file is a mapping with 'groups' (Prometheus form) and/or 'rules' (short form)"
    return tree, None


def _read_tree(path: Path, where: str) -> tuple[Any, LoadResult | None]:
    """The file's YAML tree, or the LoadResult that says why it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, LoadResult(errors=[f"{where}:1: cannot read: {exc}"])
    tree, error = parse_yaml(text, where)
    return tree, LoadResult(errors=[error]) if error else None


def load_file(path: Path, display: str | None = None) -> LoadResult:
    where = display or str(path)
    tree, failed = _read_tree(path, where)
    return failed if failed is not None else load_tree(tree, where)


def load_config_file(path: Path, display: str | None = None) -> LoadResult:
    """The inline rules of a devbox.yaml (its ``alerting.groups`` and ``alerting.rules``)."""
    where = display or str(path)
    tree, failed = _read_tree(path, where)
    if failed is not None:
        return failed
    if not isinstance(tree.get("alerting"), dict):
        return LoadResult()
    return load_tree(tree, where, prefix=("alerting",))


# --- export ------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """A Prometheus duration string (``1m30s``, ``500ms``, ``0s``) for ``seconds``."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, ms = divmod(ms, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def export_rule_file(rules: list[Rule]) -> str:
    """The rules as one Prometheus rule file (short-form rules as their compiled PromQL), so a real
    Prometheus (``rule_files:``) can take over what devbox evaluates."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rule in rules:
        item: dict[str, Any] = {"alert": rule.name, "expr": rule.expr}
        if rule.for_s:
            item["for"] = format_duration(rule.for_s)
        if rule.keep_firing_for_s:
            item["keep_firing_for"] = format_duration(rule.keep_firing_for_s)
        if rule.labels:
            item["labels"] = dict(rule.labels)
        if rule.annotations:
            item["annotations"] = dict(rule.annotations)
        groups.setdefault(rule.group, []).append(item)
    return dump({"groups": [{"name": name, "rules": items} for name, items in groups.items()]})


# --- templates -----------------------------------------------------------------------------

_ACTION = re.compile(r"{{(-?)(.*?)(-?)}}", re.S)
_LEX = re.compile(r"""\s*("(?:[^"\\]|\\.)*"|`[^`]*`|\(|\)|\||[^\s()|]+)""")


class TemplateError(ValueError):
    pass


def humanize(value: float) -> str:
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    prefixes = [(1e24, "Y"), (1e21, "Z"), (1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
    for scale, prefix in prefixes:
        if abs(value) >= scale:
            return f"{value / scale:.4g}{prefix}"
    small = [(1e-3, "m"), (1e-6, "u"), (1e-9, "n"), (1e-12, "p")]
    if abs(value) >= 1:
        return f"{value:.4g}"
    for scale, prefix in small:
        if abs(value) >= scale:
            return f"{value / scale:.4g}{prefix}"
    return f"{value:.4g}"


def humanize_duration(value: float) -> str:
    if not math.isfinite(value):
        return f"{value:g}"
    if abs(value) < 1:
        return f"{value * 1000:.4g}ms"
    seconds = int(value)
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    parts = [f"{days}d"] * bool(days) + [f"{hours}h"] * bool(hours) + [f"{minutes}m"] * bool(minutes)
    return "".join(parts) + f"{secs}s"


def _go_printf(fmt: str, *args: Any) -> str:
    py = re.sub(r"%v", "%s", fmt)
    try:
        return py % args
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"printf {fmt!r}: {exc}") from None


_FUNCS: dict[str, Any] = {
    "humanize": lambda v: humanize(float(v)),
    "humanizePercentage": lambda v: f"{float(v) * 100:.4g}%",
    "humanizeDuration": lambda v: humanize_duration(float(v)),
    "toUpper": lambda v: str(v).upper(),
    "toLower": lambda v: str(v).lower(),
    "title": lambda v: str(v).title(),
    "printf": _go_printf,
    "index": lambda m, k: m.get(k, "") if isinstance(m, dict) else "",
    "humanize1024": lambda v: _humanize1024(float(v)),
    "humanizeTimestamp": lambda v: _timestamp(float(v)),
    "reReplaceAll": lambda pattern, repl, text: re.sub(pattern, re.sub(r"\$(\d+)", r"\\\1", repl), str(text)),
    "stripPort": lambda v: _split_port(str(v))[0],
    "stripDomain": lambda v: _strip_domain(str(v)),
}


def _split_port(hostport: str) -> tuple[str, str]:
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return hostport, ""
    return host.strip("[]"), port


def _strip_domain(hostport: str) -> str:
    host, port = _split_port(hostport)
    short = host if ":" in host else host.split(".", 1)[0]
    return f"{short}:{port}" if port else short


def _humanize1024(value: float) -> str:
    if abs(value) < 1 or not math.isfinite(value):
        return f"{value:.4g}"
    for prefix in ("", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi"):
        if abs(value) < 1024:
            return f"{value:.4g}{prefix}"
        value /= 1024
    return f"{value:.4g}Yi"


def _timestamp(value: float) -> str:
    from datetime import UTC, datetime

    if not math.isfinite(value):
        return f"{value:g}"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S.%f %z UTC")


def _compare(op: str) -> Any:
    def compare(a: Any, b: Any) -> bool:
        if isinstance(a, int | float) and isinstance(b, int | float):
            x, y = float(a), float(b)
        else:
            x, y = str(a), str(b)  # type: ignore[assignment]
        return {"lt": x < y, "le": x <= y, "gt": x > y, "ge": x >= y, "ne": x != y}[op]

    return compare


def _truthy(value: Any) -> bool:
    """Go's template truth: false, 0, "", empty maps and nil are false."""
    return bool(value)


_LOGIC: dict[str, Any] = {
    "eq": lambda a, *bs: any(_compare("ne")(a, b) is False for b in bs),
    "ne": _compare("ne"),
    "lt": _compare("lt"),
    "le": _compare("le"),
    "gt": _compare("gt"),
    "ge": _compare("ge"),
    "and": lambda *args: next((a for a in args if not _truthy(a)), args[-1]),
    "or": lambda *args: next((a for a in args if _truthy(a)), args[-1]),
    "not": lambda a: not _truthy(a),
    "len": lambda a: len(a),
}


def _known() -> str:
    return ", ".join(sorted({*_FUNCS, *_LOGIC}))


def _operand(token: str, labels: dict[str, str], value: float) -> Any:
    if token in ("$value", ".Value"):
        return value
    if token in ("$labels", ".Labels"):
        return labels
    if token in ("$externalLabels", ".ExternalLabels"):
        return {}
    if token in ("$externalURL", ".ExternalURL"):
        return ""
    for prefix in ("$labels.", ".Labels."):
        if token.startswith(prefix):
            return labels.get(token[len(prefix) :], "")
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1])
    if token.startswith("`"):
        return token[1:-1]
    if token in ("true", "false"):
        return token == "true"
    try:
        return float(token) if any(c in token for c in ".eE") and not token.startswith("0x") else int(token, 0)
    except ValueError:
        raise TemplateError(
            f"unsupported template term {token!r}: devbox templates know $labels.x, $value and {_known()}"
        ) from None


def _lex(text: str) -> list[str]:
    tokens, pos, text = [], 0, text.strip()
    while pos < len(text):
        m = _LEX.match(text, pos)
        if not m:
            raise TemplateError(f"cannot read template action at {text[pos:]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


def _terms(tokens: list[str]) -> list[str | list[str]]:
    """Top-level terms; a parenthesised group is one term (its own pipeline)."""
    out: list[str | list[str]] = []
    depth, group = 0, []
    for token in tokens:
        if token == "(":
            if depth:
                group.append(token)
            depth += 1
        elif token == ")":
            depth -= 1
            if depth < 0:
                raise TemplateError("unbalanced ')' in a template action")
            if depth:
                group.append(token)
            else:
                out.append(group)
                group = []
        elif depth:
            group.append(token)
        else:
            out.append(token)
    if depth:
        raise TemplateError("unclosed '(' in a template action")
    return out


def _pipeline(tokens: list[str], labels: dict[str, str], value: float) -> Any:
    stages: list[list[str | list[str]]] = [[]]
    for term in _terms(tokens):
        if term == "|":
            stages.append([])
        else:
            stages[-1].append(term)
    result: Any = None
    for i, stage in enumerate(stages):
        if not stage:
            raise TemplateError("empty stage in a template pipeline")
        result = _command(stage, result, labels, value, has_pipe=i > 0)
    return result


def _term_value(term: str | list[str], labels: dict[str, str], value: float) -> Any:
    return _pipeline(term, labels, value) if isinstance(term, list) else _operand(term, labels, value)


def _command(terms: list[str | list[str]], piped: Any, labels: dict[str, str], value: float, *, has_pipe: bool) -> Any:
    head, rest = terms[0], terms[1:]
    function = (_FUNCS.get(head) or _LOGIC.get(head)) if isinstance(head, str) else None
    if function is not None:
        args = [_term_value(t, labels, value) for t in rest]
        if has_pipe:
            args.append(piped)
        try:
            return function(*args)
        except TemplateError:
            raise
        except (TypeError, ValueError, IndexError, re.error) as exc:
            raise TemplateError(f"{head}: {exc}") from None
    if rest or has_pipe:
        raise TemplateError(f"unsupported template function {head!r}: devbox knows {_known()}")
    return _term_value(head, labels, value)


def _render(result: Any) -> str:
    """As Go's text/template prints it: floats in shortest form, maps as ``map[k:v ...]``."""
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        if math.isnan(result):
            return "NaN"
        if math.isinf(result):
            return "+Inf" if result > 0 else "-Inf"
        if result.is_integer() and abs(result) < 1e21:
            return str(int(result))
        return repr(result)
    if isinstance(result, dict):
        return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(result.items())) + "]"
    return str(result)


def _parse_template(template: str) -> list[Any]:
    """Text and actions into nodes: ``("text", s)``, ``("expr", tokens)``, ``("if", [(cond|None, nodes)])``."""
    root: list[Any] = []
    stack: list[list[Any]] = [root]  # the node list being filled
    ifs: list[list[tuple[list[str] | None, list[Any]]]] = []
    pos = 0
    pieces: list[tuple[str, str]] = []
    for m in _ACTION.finditer(template):
        pieces.append(("text", template[pos : m.start()]))
        if m.group(1) and pieces[-1][1]:
            pieces[-1] = ("text", pieces[-1][1].rstrip())
        pieces.append(("action", m.group(2)))
        pos = m.end()
        if m.group(3):
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    pieces.append(("text", template[pos:]))
    for kind, body in pieces:
        if kind == "text":
            if body:
                stack[-1].append(("text", body))
            continue
        text = body.strip()
        if text.startswith("/*") and text.endswith("*/"):
            continue
        tokens = _lex(text)
        if not tokens:
            raise TemplateError("empty template action {{ }}")
        word = tokens[0]
        if word == "if":
            if len(tokens) < 2:
                raise TemplateError("{{ if }} needs a condition")
            branches: list[tuple[list[str] | None, list[Any]]] = [(tokens[1:], [])]
            stack[-1].append(("if", branches))
            ifs.append(branches)
            stack.append(branches[0][1])
        elif word == "else":
            if not ifs:
                raise TemplateError("{{ else }} without {{ if }}")
            stack.pop()
            cond = tokens[2:] if len(tokens) > 2 and tokens[1] == "if" else None
            if len(tokens) > 1 and cond is None:
                raise TemplateError("write {{ else }} or {{ else if CONDITION }}")
            ifs[-1].append((cond, []))
            stack.append(ifs[-1][-1][1])
        elif word == "end":
            if not ifs:
                raise TemplateError("{{ end }} without {{ if }}")
            ifs.pop()
            stack.pop()
        elif word in ("range", "with", "define", "template", "block") or (word.startswith("$") and ":=" in tokens):
            raise TemplateError(f"unsupported template action {{{{ {word} }}}}: devbox templates have if/else only")
        else:
            stack[-1].append(("expr", tokens))
    if ifs:
        raise TemplateError("unclosed {{ if }}: add {{ end }}")
    return root


def _run(nodes: list[Any], labels: dict[str, str], value: float, *, check: bool) -> str:
    out: list[str] = []
    for kind, data in nodes:
        if kind == "text":
            out.append(data)
        elif kind == "expr":
            out.append(_render(_pipeline(data, labels, value)))
        else:
            chosen = False
            for cond, body in data:
                hit = cond is None or _truthy(_pipeline(cond, labels, value))
                if check:
                    _run(body, labels, value, check=True)  # every branch must at least evaluate
                if hit and not chosen:
                    chosen = True
                    if not check:
                        out.append(_run(body, labels, value, check=False))
                        break
    return "".join(out)


def expand(template: str, labels: dict[str, str], value: float, *, check: bool = False) -> str:
    """Expand ``{{ ... }}`` actions with ``$labels``/``$value`` (and ``if``/``else``); TemplateError
    says what devbox cannot expand. ``check`` also evaluates the branches not taken."""
    return _run(_parse_template(template), labels, value, check=check)


def check_templates(mapping: dict[str, str]) -> None:
    for key, template in mapping.items():
        try:
            expand(template, {"service": "x"}, 1.0, check=True)
        except TemplateError as exc:
            raise ValueError(f"template of {key!r}: {exc}") from None


def expand_all(mapping: dict[str, str], labels: dict[str, str], value: float) -> dict[str, str]:
    out = {}
    for key, template in mapping.items():
        try:
            out[key] = expand(template, labels, value)
        except TemplateError as exc:
            out[key] = f"<template error: {exc}>"
    return out
