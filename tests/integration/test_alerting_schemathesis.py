"""devbox's Alertmanager port against the official Alertmanager OpenAPI file (schemathesis, bounded
examples): no server errors, documented status codes, responses that match the schemas; and
devbox's own /api/alerts routes (from the platform's OpenAPI document) never answer 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from devbox.testing import PlatformThread, running_platform
from tests import httpc

SPEC = Path(__file__).resolve().parents[1] / "specs" / "alertmanager-openapi.yaml"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformThread]:
    root = tmp_path_factory.mktemp("am")
    receivers = [{"name": "ops", "url": "http://127.0.0.1:9/hook", "max_retries": 0, "timeout": 0.2}]
    with running_platform(root, components=["alerting"], alerting={"receivers": receivers, "terminal": False}) as p:
        am = p.url("alertmanager")
        # Something to list: an alert and a silence.
        httpc.post(am + "/api/v2/alerts", json=[{"labels": {"alertname": "Seed", "service": "a"}}]).raise_for_status()
        httpc.post(
            am + "/api/v2/silences",
            json={
                "matchers": [{"name": "service", "value": "a", "isRegex": False}],
                "startsAt": "2020-01-01T00:00:00Z",
                "endsAt": "2099-01-01T00:00:00Z",
                "createdBy": "test",
                "comment": "seed",
            },
        ).raise_for_status()
        yield p


def test_alertmanager_api_conforms_to_its_spec(platform: PlatformThread) -> None:
    schema = schemathesis.openapi.from_path(SPEC)
    base = platform.url("alertmanager") + "/api/v2"
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        _fuzz(operation, base)
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) == 9, tested


def _fuzz(operation: schemathesis.APIOperation, base: str) -> None:
    checks = [not_a_server_error, status_code_conformance, response_schema_conformance]

    @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=10)
        case.validate_response(response, checks=checks)

    run()


def test_devbox_alert_api_never_answers_500(tmp_path: Path) -> None:
    rules = [{"name": "X", "indicator": "up", "comparison": "<", "threshold": 1}]
    with running_platform(tmp_path, components=["alerting"], alerting={"rules": rules}) as p:
        schema = schemathesis.openapi.from_url(p.url("api") + "/openapi.json")
        tested = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.startswith("/api/alerts"):
                _fuzz_api(operation, p.url("api"))
                tested += 1
        assert tested >= 12


def _fuzz_api(operation: schemathesis.APIOperation, base: str) -> None:
    @settings(max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base, timeout=10)
        case.validate_response(response, checks=[not_a_server_error])

    run()
