"""Parse Alertmanager-style matcher text: ``alertname="X"``, ``{severity=~"page|crit", env!=prod}``.

What amtool sends as ``filter=`` parameters and what ``devbox alerts silence add`` takes as
arguments. Values may be double-quoted (with ``\\"`` escapes) or bare.
"""

from __future__ import annotations

import re
from typing import Any

from devbox.mocks.alerting.models import Matcher, MatchType

_MATCHER = re.compile(
    r"""\s*(?P<name>[^\s=!~{},"]+)\s*(?P<op>=~|!~|!=|=)\s*(?P<value>"(?:[^"\\]|\\.)*"|[^,}"]*)\s*(?:,|$)"""
)

#: Alertmanager's (and Prometheus's) label name syntax; anything else can never match an alert.
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def check_name(name: str) -> str:
    """``name`` if it is a valid label name; ValueError saying what is allowed otherwise."""
    if not LABEL_NAME.fullmatch(name):
        raise ValueError(f"matcher name {name[:64]!r} is not a label name: use letters, digits and _, "
                         "not starting with a digit")
    return name


def parse_matchers(text: str) -> list[Matcher]:
    """All matchers in ``text`` (a single matcher or a ``{...}`` list); ValueError says what is wrong."""
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise ValueError(f"matcher list {text!r} opens with '{{' but does not close with '}}'")
        body = body[1:-1].strip()
    if not body:
        raise ValueError('empty matcher: write name="value" (ops: =, !=, =~, !~)')
    found: list[Matcher] = []
    pos = 0
    while pos < len(body):
        m = _MATCHER.match(body, pos)
        if not m or m.end() == pos:
            raise ValueError(f'cannot parse matcher at {body[pos:]!r}: write name="value" (ops: =, !=, =~, !~)')
        value = m.group("value").strip()
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        found.append(Matcher(check_name(m.group("name")), value, MatchType(m.group("op"))))
        pos = m.end()
    return found


def parse_filters(filters: list[str] | None) -> list[Matcher]:
    out: list[Matcher] = []
    for item in filters or []:
        out.extend(parse_matchers(item))
    return out


def matcher_from_api(data: Any) -> Matcher:
    """A matcher from Alertmanager's JSON ``{name, value, isRegex, isEqual}``; ValueError if wrong."""
    if not isinstance(data, dict):
        raise ValueError("each matcher must be an object {name, value, isRegex, isEqual}")
    name, value, is_regex = data.get("name"), data.get("value"), data.get("isRegex")
    is_equal = data.get("isEqual", True)
    if not isinstance(name, str) or not name:
        raise ValueError("matcher.name must be a non-empty string")
    if not isinstance(value, str):
        raise ValueError(f"matcher {name}: value must be a string")
    if not isinstance(is_regex, bool):
        raise ValueError(f"matcher {name}: isRegex must be true or false")
    if is_equal is None:
        is_equal = True
    if not isinstance(is_equal, bool):
        raise ValueError(f"matcher {name}: isEqual must be true or false")
    kind = {
        (False, True): MatchType.EQ,
        (False, False): MatchType.NE,
        (True, True): MatchType.RE,
        (True, False): MatchType.NRE,
    }[(is_regex, is_equal)]
    return Matcher(check_name(name), value, kind)


def matches_all(matchers: list[Matcher], labels: dict[str, str]) -> bool:
    return all(m.matches(labels) for m in matchers)
