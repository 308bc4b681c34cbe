"""What the CLI prints for normal situations: gaps in a series, narrow terminals, refusals from the
API, `register: self` that never registered, uvicorn's shutdown line. No sockets: pure functions
and typer's in-process runner."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from devbox.cli import build_app
from devbox.cli.common import api_url, human_duration, humanize_durations, no_config_message, refusal
from devbox.cli.metrics import _spark, summary
from devbox.cli.serve import _ready_message, _ShutdownCancels, plain
from devbox.cli.status import _status_table
from devbox.config import ConfigError, load_config


def test_a_series_with_gaps_is_summarised_not_crashed() -> None:
    values = [None, 97.5, None, 100.0, 90.0, None]
    assert summary(values) == ("90", "90", "95.83", "100")
    assert summary([None, None]) == ("-", "-", "-", "-")
    spark = _spark(values)
    assert len(spark) == len(values) and spark[0] == " " and spark[-1] == " "


def test_durations_from_the_api_read_as_a_user_would_type_them() -> None:
    assert human_duration(3600) == "1h" and human_duration(90) == "1m30s" and human_duration(0.25) == "250ms"
    said = humanize_durations("no span of service 'x' in the last 3600000 ms")
    assert said == "no span of service 'x' in the last 1h"
    assert humanize_durations("took 250 ms") == "took 250 ms"


def _response(status: int, path: str, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=httpx.Request("GET", "http://127.0.0.1:7070" + path), **kwargs)  # type: ignore[arg-type]


def test_refusals_say_why_without_the_raw_route() -> None:
    said = refusal(_response(404, "/api/topology", json={"error": "unknown service",
                                                         "reason": "no span of service 'x' in the last 3600000 ms"}))
    assert said == "no span of service 'x' in the last 1h"
    bare = refusal(_response(404, "/api/naming/services", json={"detail": "Not Found"}))
    assert "/api/" not in bare and "naming" in bare and "404" not in bare


def test_status_at_80_columns_drops_columns_instead_of_clipping_names() -> None:
    services = [{"service": "gateway-with-a-long-name", "group": "default", "instances": [
        {"name": f"gateway-with-a-long-name-{n}", "state": "ready", "healthy": True, "pid": 4242 + n, "port": 41000 + n,
         "restarts": 0, "started_at": 1.0, "id": "0123456789abcdef"} for n in (1, 2)]}]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(_status_table(services, 100.0, 80), width=80)
    text = out.getvalue()
    assert "…" not in text and "gateway-with-a-long-name-2" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert "ready" in text and "41002" in text
    wide = io.StringIO()
    Console(file=wide, width=200, color_system=None).print(_status_table(services, 100.0, 200), width=200)
    assert "0123456789ab" in wide.getvalue() and "uptime" in wide.getvalue()


def test_ready_line_agrees_with_a_failed_self_registration() -> None:
    assert "ready" in plain(_ready_message(1, 2.0, {}))
    line = plain(_ready_message(1, 16.0, {"orders/orders-1": "did not register itself within 15s (register: self)"}))
    assert "all 1 service(s) ready" not in line and "not registered" in line and "orders/orders-1" in line


def test_uvicorns_shutdown_cancel_is_not_an_error() -> None:
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1,
                               "Cancel %s running task(s), timeout graceful shutdown exceeded", (3,), None)
    shown = _ShutdownCancels().filter(record)
    assert record.levelno == logging.INFO and "closed 3 open request(s)" in record.getMessage()
    assert shown is logging.getLogger().isEnabledFor(logging.INFO)
    other = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "boom", (), None)
    assert _ShutdownCancels().filter(other) and other.levelno == logging.ERROR


def test_unknown_key_lists_keys_as_written_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("services:\n  - name: a\n    regster: self\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "devbox.yaml")
    said = " ".join(caught.value.problems)
    assert "register" in said and "registration" not in said


def test_no_config_here_names_the_running_projects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    said = no_config_message(Path("devbox.yaml"))
    assert "no devbox.yaml in" in said and "no devbox is running" in said
    cards = tmp_path / "cache" / "devbox" / "running"
    cards.mkdir(parents=True)
    (cards / f"{os.getpid()}.json").write_text(json.dumps(
        {"pid": os.getpid(), "project": "shop", "config": "/src/shop/devbox.yaml", "api": "http://127.0.0.1:7171"}))
    (cards / "999999999.json").write_text(json.dumps({"pid": 999999999, "project": "gone", "api": "x"}))
    said = no_config_message(Path("devbox.yaml"))
    assert "shop (/src/shop/devbox.yaml, http://127.0.0.1:7171)" in said and "gone" not in said


def test_a_command_of_a_stopped_project_does_not_act_on_another_project_on_its_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found following the README: with the shop up on 7070, `devbox faults add` in a new project
    (same default port, not running) added the fault to the shop."""
    import json
    import os

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("DEVBOX_API", raising=False)
    own = tmp_path / "own"
    own.mkdir()
    (own / "devbox.yaml").write_text("project: own\nplatform:\n  ports:\n    api: 7171\nservices: []\n")
    cards = tmp_path / "cache" / "devbox" / "running"
    cards.mkdir(parents=True)
    card = {"pid": os.getpid(), "project": "shop", "config": str(tmp_path / "shop" / "devbox.yaml"),
            "api": "http://127.0.0.1:7171", "listeners": {"api": ["127.0.0.1", 7171]}}
    (cards / f"{os.getpid()}.json").write_text(json.dumps(card))
    result = CliRunner().invoke(build_app(), ["faults", "ls", "-f", str(own / "devbox.yaml")])
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())  # as the terminal wrapped it
    assert "is another project's: shop (" in said and "devbox up" in said
    card["config"] = str(own / "devbox.yaml")  # the same project, running (its runtime file lost): allowed
    (cards / f"{os.getpid()}.json").write_text(json.dumps(card))
    assert api_url(str(own / "devbox.yaml")) == "http://127.0.0.1:7171"


def test_logs_takes_dash_f_as_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("project: t\nservices:\n  - name: orders\n")
    logs = tmp_path / ".devbox" / "logs" / "orders"
    logs.mkdir(parents=True)
    (logs / "orders-1.log").write_text("hello from orders\n")
    result = CliRunner().invoke(build_app(), ["logs", "orders", "-f", str(tmp_path / "devbox.yaml")])
    assert result.exit_code == 0, result.output
    assert "hello from orders" in result.output


def test_ids_a_later_command_takes_are_never_cut_at_80_columns() -> None:
    """At 80 columns (any pipe) `traces ls` showed 7bea68bd5… and `traces why 7bea68bd5` then failed."""
    import io

    from rich.console import Console
    from rich.table import Table

    from devbox.cli.common import whole

    trace_id = "7bea68bd5c1f4a2e9b0d8e7f6a5b4c3d"
    table = Table(whole("trace id", [trace_id]), "start", "root", "duration", "spans", "errors", "services")
    table.add_row(trace_id, "06:41:28", "gateway: GET /checkout/{user}", "312 ms", "12", "1",
                  "gateway, orders, payment, users, inventory")
    out = io.StringIO()
    Console(file=out, width=80).print(table)
    assert trace_id in out.getvalue()
