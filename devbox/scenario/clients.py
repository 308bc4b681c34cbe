"""Small clients of a running platform's stores, for Python scenarios and pytest fixtures.

Each speaks the platform's public protocol (naming registry through the devbox API, traces
through the Zipkin v2 API, metrics through the Prometheus HTTP API, alerts through the
Alertmanager v2 API), so a test reads exactly what other tools read.
"""

from __future__ import annotations

from typing import Any

import httpx


class _Client:
    def __init__(self, base: str, *, timeout: float = 10.0) -> None:
        self.base = base.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def _get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()


class NamingClient(_Client):
    """Instances of a service as the naming watch API shows them (``/api/naming/watch``)."""

    def __init__(self, base: str, *, namespace: str = "default") -> None:
        super().__init__(base)
        self.namespace = namespace

    def instances(self, service: str) -> list[dict[str, Any]]:
        data = self._get("/api/naming/watch", namespace=self.namespace, service=service, revision="", timeout=0)
        return list(data.get("instances", []))

    def healthy(self, service: str) -> list[dict[str, Any]]:
        return [i for i in self.instances(service) if i.get("healthy") and not i.get("isolated")]


class TracesClient(_Client):
    """The Zipkin v2 query API."""

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        return list(self._get(f"/api/v2/trace/{trace_id}"))

    def services(self) -> list[str]:
        return list(self._get("/api/v2/services"))

    def dependencies(self, lookback_ms: int = 3_600_000) -> list[dict[str, Any]]:
        import time

        return list(self._get("/api/v2/dependencies", endTs=int(time.time() * 1000) + 1000, lookback=lookback_ms))


class MetricsClient(_Client):
    """The Prometheus HTTP query API."""

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self._get("/api/v1/query", query=expr)
        return list(data["data"]["result"])

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None


class AlertsClient(_Client):
    """The Alertmanager v2 API."""

    def alerts(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._get("/api/v2/alerts", **filters))

    def silences(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v2/silences"))
