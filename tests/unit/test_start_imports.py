"""What `devbox up` does before its listeners answer stays light (issue 15, platform up <= 1 s):
loading devbox.yaml does not import the PromQL engine (numpy), the web framework or networkx —
those load in the background while the listeners answer "starting"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from devbox.mocks.metrics.config import IndicatorConfig, _default_indicators


def test_the_built_in_indicators_are_valid_although_built_without_validation() -> None:
    for name, indicator in _default_indicators().items():
        assert IndicatorConfig.model_validate(indicator.model_dump()) == indicator, name


def test_loading_the_config_imports_no_heavy_module(tmp_path: Path) -> None:
    (tmp_path / "devbox.yaml").write_text("project: p\nservices: []\n")
    probe = (
        "import sys\n"
        "from devbox.config import load_config\n"
        f"load_config({str(tmp_path / 'devbox.yaml')!r})\n"
        "print(sorted(m for m in ('numpy', 'fastapi', 'networkx') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _in_a_fresh_platform(tmp_path: Path, body: str) -> str:
    """The last line ``body`` prints, run in a new interpreter inside a started platform (``platform``
    and its ``api`` URL bound, ``sys``, ``json`` and ``urllib.request`` imported)."""
    probe = (
        "import json, sys, urllib.request\n"
        "from devbox.testing import running_platform\n"
        f"with running_platform({str(tmp_path)!r}) as thread:\n"
        "    platform = thread.platform\n"
        "    assert platform is not None and platform.ctx.serving.is_set()\n"
        "    api = platform.ctx.url('api')\n"
        + "".join(f"    {line}\n" for line in body.splitlines())
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip(), out.stdout + out.stderr
    return out.stdout.strip().splitlines()[-1]


#: What an idle platform does not import, each loaded with its first use (issue 15, idle RSS): the
#: PromQL engine's numpy (~11 MB) with the first samples or query, httpx (~5 MB) with the first scrape,
#: notification or proxy span, the deploy probes' h11 with the first HTTP probe, the PromQL parser and
#: RE2 (~3 MB) with the first query or regex, prometheus-client with the first scrape of /metrics, the
#: Locust glue with the first load run, protobuf (~3 MB with its C++ runtime) with the first OTLP,
#: Zipkin protobuf or Polaris message, multiprocessing with the first span indexed; uvicorn's command
#: line (click) and reload supervisors (watchfiles), and logging.config's handlers and socket server,
#: never (devbox.platform.edge.load_uvicorn); the PromQL evaluator with the first query.
LAZY = ("numpy", "httpx", "h11", "promql_parser", "re2", "prometheus_client", "devbox.load.locust",
        "google.protobuf", "multiprocessing", "uvicorn.main", "click", "watchfiles", "logging.handlers",
        "socketserver", "devbox.mocks.metrics.promql.evaluator")


def test_an_idle_platform_without_services_loads_none_of_what_it_does_not_use(tmp_path: Path) -> None:
    out = _in_a_fresh_platform(tmp_path, (
        "urllib.request.urlopen(api + '/healthz', timeout=30).read()\n"
        f"print(sorted(m for m in {LAZY!r} if m in sys.modules))"
    ))
    assert out == "[]"


def test_what_an_idle_platform_skips_loads_with_its_first_use(tmp_path: Path) -> None:
    """A regex query and a scrape of /metrics answer as before, loading the parser, RE2 and
    prometheus-client as they go."""
    out = _in_a_fresh_platform(tmp_path, (
        "prom = platform.ctx.url('prometheus')\n"
        "query = urllib.parse.quote('count(devbox_up{version=~\"[0-9].*|dev\"}) or vector(0)')\n"
        "answer = json.loads(urllib.request.urlopen(f'{prom}/api/v1/query?query={query}', timeout=30).read())\n"
        "scraped = urllib.request.urlopen(prom + '/metrics', timeout=30).read().decode()\n"
        "print(answer['status'], 'devbox_up{' in scraped,\n"
        "      sorted(m for m in ('promql_parser', 're2', 'prometheus_client') if m in sys.modules))"
    ))
    assert out == "success True ['prometheus_client', 'promql_parser', 're2']"


def test_the_promql_package_offers_every_name_from_its_module() -> None:
    """The package's names load with their first use (PEP 562); each is its module's own object."""
    import importlib

    from devbox.mocks.metrics import promql

    assert set(promql._HOME) == set(promql.__all__)
    for name, home in promql._HOME.items():
        assert getattr(promql, name) is getattr(importlib.import_module(f"{promql.__name__}.{home}"), name), name
    with pytest.raises(AttributeError):
        promql.no_such_name  # noqa: B018


def test_the_openapi_document_models_build_with_the_first_document(tmp_path: Path) -> None:
    """FastAPI's ~60 OpenAPI models (~70 ms of every start) are built when /openapi.json is first
    asked for, not at start (nor by the module's own model_rebuild() calls); the document and /docs
    are what they were, and the models those calls were for resolve their references when used."""
    out = _in_a_fresh_platform(tmp_path, (
        "from fastapi.openapi.models import OpenAPI\n"
        "from pydantic import BaseModel\n"
        "from fastapi.openapi.models import Operation, Schema\n"
        "before = [m.__pydantic_complete__ for m in (OpenAPI, Operation, Schema)]\n"
        "doc = json.loads(urllib.request.urlopen(api + '/openapi.json', timeout=30).read())\n"
        "docs = urllib.request.urlopen(api + '/docs', timeout=30).status\n"
        "Operation.model_validate({'responses': {'200': {'description': 'ok'}}})  # built with its first use\n"
        "Schema.model_validate({'type': 'object', 'properties': {'a': {'type': 'string'}}})\n"
        "after = [m.__pydantic_complete__ for m in (OpenAPI, Operation, Schema)]\n"
        "print(before, after, BaseModel.model_config, doc['openapi'][:2], '/api/naming/services' in doc['paths'],\n"
        "      'Error' in doc['components']['schemas'], docs, BaseModel.model_rebuild.__func__.__name__)"
    ))
    assert out == "[False, False, False] [True, True, True] {} 3. True True 200 model_rebuild"
