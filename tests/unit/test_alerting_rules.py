"""Rule loading: both forms, file:line reasons, templates, matchers. No sockets."""

from __future__ import annotations

from pathlib import Path

import pytest
from devbox.mocks.alerting.config import ShortRuleSpec, parse_duration
from devbox.mocks.alerting.matchers import matcher_from_api, parse_matchers
from devbox.mocks.alerting.models import MatchType
from devbox.mocks.alerting.rules import compile_short, expand, load_config_file, load_file, rule_from_json

PROM_FILE = """\
groups:
  - name: shop
    rules:
      - alert: HighErrorRate
        expr: error_rate{service="orders"} > 5
        for: 1m30s
        labels:
          severity: page
          priority: 1
        annotations:
          summary: "{{ $labels.service }} errors at {{ $value | printf \\"%.1f\\" }}%"
      - record: job:errors:rate1m
        expr: sum(rate(errors[1m]))
"""

SHORT_FILE = """\
rules:
  - name: OrdersSuccessRate
    indicator: success_rate
    filter: {service: orders}
    comparison: "<"
    threshold: 99
    duration: 10s
"""


def test_prometheus_rule_file_loads_with_source_lines(tmp_path: Path) -> None:
    path = tmp_path / "rules.yml"
    path.write_text(PROM_FILE)
    result = load_file(path, "rules.yml")
    assert result.errors == []
    assert [r.id for r in result.rules] == ["shop/HighErrorRate"]
    rule = result.rules[0]
    assert rule.for_s == 90
    assert rule.labels == {"severity": "page", "priority": "1"}
    assert rule.source == "rules.yml:4"
    assert "recording rule" in result.warnings[0] and "rules.yml:12" in result.warnings[0]


def test_short_form_compiles_to_promql(tmp_path: Path) -> None:
    path = tmp_path / "short.yml"
    path.write_text(SHORT_FILE)
    result = load_file(path)
    assert result.errors == []
    rule = result.rules[0]
    assert rule.expr == 'success_rate{service="orders"} < 99.0'
    assert rule.for_s == 10
    assert rule.short and rule.short["indicator"] == "success_rate"
    spec = ShortRuleSpec(
        name="Slow",
        indicator="latency_avg",
        filter=['method=~"Get.*"', 'service!="x"'],
        by=["service"],
        aggregate="max",
        comparison=">",
        threshold=200,
    )
    assert compile_short(spec) == 'max by (service) (latency_avg{method=~"Get.*",service!="x"}) > 200.0'


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(\n", 5, "not valid PromQL"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        for: soon\n", 6, "duration"),
        ("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        bogus: 1\n", 6, "unknown key"),
        ("rules:\n  - name: X\n    indicator: sr\n    comparison: '=<'\n    threshold: 1\n", 4, "comparison"),
        ("groups: [\n", 2, "not valid YAML"),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "        annotations: {s: '{{ now }}'}\n",
            4,
            "unsupported template",
        ),
        (
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n"
            "      - alert: A\n        expr: up\n",
            6,
            "already defined",
        ),
    ],
)
def test_bad_rules_name_file_line_and_reason(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "bad.yml"
    path.write_text(text)
    result = load_file(path, "bad.yml")
    assert result.rules == []
    assert any(e.startswith(f"bad.yml:{line}:") and reason in e for e in result.errors), result.errors


def test_inline_rules_of_devbox_yaml(tmp_path: Path) -> None:
    path = tmp_path / "devbox.yaml"
    path.write_text("project: p\nalerting:\n  interval: 1\n" + "\n".join("  " + ln for ln in SHORT_FILE.splitlines()))
    result = load_config_file(path, "devbox.yaml")
    assert result.errors == []
    assert result.rules[0].source == "devbox.yaml:5"


def test_rule_from_json_validates() -> None:
    rule = rule_from_json({"alert": "A", "expr": "up == 0", "for": "5s", "group": "g"})
    assert rule.id == "g/A" and rule.for_s == 5
    with pytest.raises(ValueError, match="PromQL"):
        rule_from_json({"alert": "A", "expr": "up =="})
    with pytest.raises(ValueError, match="threshold"):
        rule_from_json({"name": "B", "indicator": "x", "comparison": ">"})


def test_templates() -> None:
    labels = {"service": "orders"}
    assert expand("{{ $labels.service }} at {{ $value }}", labels, 12.0) == "orders at 12"
    assert expand('{{ printf "%.2f" $value }}', labels, 1.23456) == "1.23"
    assert expand("{{ $value | humanize }}", labels, 1234567) == "1.235M"
    assert expand("{{ .Labels.service | toUpper }}", labels, 0) == "ORDERS"
    assert expand('{{ index $labels "service" }}', labels, 0) == "orders"
    assert expand("{{ humanizePercentage $value }}", labels, 0.25) == "25%"


def test_durations() -> None:
    assert parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    assert parse_duration(0) == 0
    with pytest.raises(ValueError):
        parse_duration("5 minutes")


def test_matchers_parse_amtool_forms() -> None:
    ms = parse_matchers('{alertname="High", severity=~"page|crit",env!=prod}')
    assert [(m.name, m.type, m.value) for m in ms] == [
        ("alertname", MatchType.EQ, "High"),
        ("severity", MatchType.RE, "page|crit"),
        ("env", MatchType.NE, "prod"),
    ]
    assert parse_matchers('msg="say \\"hi\\""')[0].value == 'say "hi"'
    assert ms[1].matches({"severity": "crit"}) and not ms[1].matches({"severity": "critical"})
    assert matcher_from_api({"name": "a", "value": "b", "isRegex": False, "isEqual": False}).type is MatchType.NE
    for bad in ["", "=x", 'a=~"("', "{a=b"]:
        with pytest.raises(ValueError):
            parse_matchers(bad)


def test_devbox_yaml_with_a_bad_rule_fails_before_start_with_file_and_line() -> None:
    from devbox.config import ConfigError, parse_config

    text = (
        "project: p\nalerting:\n  groups:\n    - name: g\n      rules:\n        - alert: A\n"
        "          expr: rate(x[5m]) >\n  receivers:\n    - {name: ops, url: 'ftp://x'}\n"
    )
    with pytest.raises(ConfigError) as info:
        parse_config(text, source=Path("devbox.yaml"))
    problems = "\n".join(info.value.problems)
    assert "devbox.yaml:7: alerting.groups[g].rules[0].expr: expr is not valid PromQL" in problems
    assert "devbox.yaml:9: alerting.receivers[ops].url" in problems


COMMUNITY_RULES = """\
groups:
- name: node
  rules:
  - alert: HostOutOfMemory
    expr: node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100 < 10
    for: 2m
    labels:
      severity: warning
    annotations:
      summary: Host out of memory (instance {{ $labels.instance }})
      description: "Node memory is filling up (< 10% left)\\n  VALUE = {{ $value }}\\n  LABELS = {{ $labels }}"
  - alert: HostDown
    expr: up == 0
    annotations:
      summary: "{{ $labels.instance | stripPort }} is down since {{ $value | humanizeTimestamp }}"
"""


def test_community_rule_file_loads_and_renders_like_go_templates(tmp_path: Path) -> None:
    path = tmp_path / "node.yml"
    path.write_text(COMMUNITY_RULES)
    result = load_file(path)
    assert result.errors == []
    labels = {"instance": "db1:9100", "job": "node"}
    description = expand(result.rules[0].annotations["description"], labels, 7.123456789)
    assert description.endswith("VALUE = 7.123456789\n  LABELS = map[instance:db1:9100 job:node]")
    assert expand(result.rules[1].annotations["summary"], labels, 0).startswith("db1 is down since 1970-01-01")
    ranged = tmp_path / "range.yml"
    ranged.write_text(
        "groups:\n- name: g\n  rules:\n  - alert: A\n    expr: up\n"
        "    annotations: {s: '{{ range $labels }}x{{ end }}'}\n"
    )
    [error] = load_file(ranged).errors
    assert "unsupported template action {{ range }}" in error


@pytest.mark.parametrize(
    ("template", "value", "out"),
    [
        ("{{ if gt $value 80.0 }}critical{{ else if gt $value 50.0 }}warning{{ else }}ok{{ end }}", 90, "critical"),
        ("{{ if gt $value 80.0 }}critical{{ else if gt $value 50.0 }}warning{{ else }}ok{{ end }}", 60, "warning"),
        ("{{ if gt $value 80.0 }}critical{{ else if gt $value 50.0 }}warning{{ else }}ok{{ end }}", 10, "ok"),
        ('{{ if and (gt $value 1.0) (eq $labels.service "orders") }}page{{ end }}', 2, "page"),
        ('{{ if not (eq $labels.service "orders") }}x{{ end }}-', 2, "-"),
        ("a  {{- $labels.service -}}  b", 0, "aordersb"),
        ('{{ reReplaceAll "(o)r" "$1R" $labels.service | toUpper }}', 0, "ORDERS"),
        ("{{/* a comment */}}{{ $labels.missing }}.", 0, "."),
        ("{{ if $labels.service }}has{{ end }}", 0, "has"),
    ],
)
def test_template_conditionals(template: str, value: float, out: str) -> None:
    assert expand(template, {"service": "orders"}, value) == out


@pytest.mark.parametrize(
    "template",
    [
        "{{ if }}x{{ end }}",
        "{{ if gt 1 2 }}x",
        "{{ end }}",
        "{{ else }}",
        "{{ (gt 1 }}",
        "{{ if true }}{{ nope 1 }}{{ end }}",
    ],
)
def test_bad_templates_are_refused(template: str) -> None:
    from devbox.mocks.alerting.rules import TemplateError

    with pytest.raises(TemplateError):
        expand(template, {}, 1.0, check=True)
