"""The ``load:`` section of devbox.yaml: defaults of ``devbox load``, errors with file:line:key,
and the locustfile's precedence (flag, then the section, then ``loadtests/``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devbox.config import ConfigError, load_config, parse_config
from devbox.load import locust
from devbox.load.config import LoadConfig, find_locustfile, require_target
from devbox.load.locust import LoadError

ROOT = Path(__file__).resolve().parents[2]


def test_section_defaults_and_values() -> None:
    assert parse_config("project: x\n").load == LoadConfig()
    conf = parse_config("load:\n  users: 5\n  spawn_rate: 2.5\n  time: 2m\n  target: orders\n  tags: [checkout]\n").load
    assert (conf.users, conf.spawn_rate, conf.time, conf.target, conf.tags) == (5, 2.5, 120.0, "orders", ["checkout"])
    assert parse_config("load:\n  time: 45\n").load.time == 45.0


@pytest.mark.parametrize(("text", "where", "says"), [
    ("project: x\nload:\n  users: 0\n", "devbox.yaml:3: load.users", "0 is out of range: it must be at least 1"),
    ("load:\n  target: gateway\n  time: soon\n", "devbox.yaml:3: load.time", "not a duration"),
    ("load:\n  userz: 3\n", "devbox.yaml:2: load.userz", "allowed: locustfile, target, users"),
    ("load:\n  spawn_rate: -1\n", "devbox.yaml:2: load.spawn_rate", "-1 is out of range: it must be more than 0"),
])
def test_bad_values_name_file_line_and_key(text: str, where: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text, source=Path("devbox.yaml"), root=tmp_path)
    assert where in str(err.value) and says in str(err.value), str(err.value)


def test_the_shop_declares_its_load(tmp_path: Path) -> None:
    config = load_config(ROOT / "scenarios" / "shop" / "devbox.yaml")
    assert config.load.target == "gateway" and config.load.users > 0
    assert find_locustfile(None, config.root, config.project, config.load) == ROOT / "loadtests" / "shop.py"


def test_locustfile_precedence(tmp_path: Path) -> None:
    project = tmp_path / "app"
    (project / "loadtests").mkdir(parents=True)
    (project / "loadtests" / "app.py").write_text("# by convention\n")
    (project / "mine.py").write_text("# configured\n")
    flag = tmp_path / "flag.py"
    conf = LoadConfig(locustfile="mine.py")
    assert find_locustfile(str(flag), project, "app", conf) == flag.resolve()
    assert find_locustfile(None, project, "app", conf) == (project / "mine.py").resolve()
    assert find_locustfile(None, project, "app", LoadConfig()) == (project / "loadtests" / "app.py").resolve()
    with pytest.raises(LoadError, match=r"load\.locustfile nope\.py"):
        find_locustfile(None, project, "app", LoadConfig(locustfile="nope.py"))
    with pytest.raises(LoadError, match="no locustfile"):
        find_locustfile(None, tmp_path / "empty", "empty", LoadConfig())


@pytest.mark.skipif(not locust.available(), reason="locust not installed")
def test_cli_takes_the_section_when_no_flag_is_given(tmp_path: Path) -> None:
    from devbox.cli.load import _spec

    (tmp_path / "mine.py").write_text("# configured\n")
    (tmp_path / "devbox.yaml").write_text(
        "project: app\nload:\n  locustfile: mine.py\n  users: 7\n  spawn_rate: 3\n  time: 1m\n"
        "  target: orders\n  tags: [checkout]\n")
    config = str(tmp_path / "devbox.yaml")
    spec = _spec(config, None, None, None, None, None, None, None, 0, None)
    assert (spec.locustfile, spec.users, spec.spawn_rate, spec.seconds, spec.target, spec.tags) == (
        (tmp_path / "mine.py").resolve(), 7, 3.0, 60.0, "orders", ["checkout"])
    spec = _spec(config, None, "gateway", 2, 1.0, "5s", ["orders"], None, 0, "feature-x")
    assert (spec.users, spec.spawn_rate, spec.seconds, spec.target, spec.tags) == (2, 1.0, 5.0, "gateway", ["orders"])
    assert spec.env()["DEVBOX_LOAD_ENV"] == "feature-x"


def test_no_target_is_required_and_says_how_to_give_one(tmp_path: Path) -> None:
    """No project's entry service is assumed (the shop's gateway is the shop's): a flag or load.target."""
    assert LoadConfig().target is None
    assert require_target("orders", LoadConfig()) == "orders"
    assert require_target(None, LoadConfig(target="gateway")) == "gateway"
    with pytest.raises(LoadError, match=r"no target service: pass --target SERVICE .* load\.target in devbox\.yaml"):
        require_target(None, LoadConfig())


@pytest.mark.skipif(not locust.available(), reason="locust not installed")
def test_cli_without_a_target_exits_with_the_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from devbox.cli.load import _spec

    (tmp_path / "mine.py").write_text("# configured\n")
    (tmp_path / "devbox.yaml").write_text("project: app\nload:\n  locustfile: mine.py\n")
    with pytest.raises(BaseException) as exited:  # typer.Exit / SystemExit with the usage code
        _spec(str(tmp_path / "devbox.yaml"), None, None, None, None, None, None, None, 0, None)
    assert getattr(exited.value, "exit_code", getattr(exited.value, "code", None)) == 2
    assert "load.target" in capsys.readouterr().err
