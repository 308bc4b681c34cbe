"""A reader of the devbox HTTP API for explain and the tour: required reads fail like the CLI,
optional ones (a component that is not running, a service that is not deployed) answer None."""

from __future__ import annotations

import logging
from typing import Any

import httpx

from devbox.cli.common import Api

LOG = logging.getLogger(__name__)


class Reader:
    """Owns one :class:`Api` client; ``need`` exits the CLI on failure, ``maybe`` returns None."""

    def __init__(self, api: Api) -> None:
        self.api = api

    @property
    def base(self) -> str:
        return self.api.base

    def need(self, path: str, **params: Any) -> Any:
        return self.api.get(path, params=params or None)

    def maybe(self, path: str, **params: Any) -> Any:
        try:
            response = self.api.http.get(path, params=params or None)
        except httpx.TransportError as exc:
            LOG.debug("GET %s: %s", path, exc)
            return None
        if response.status_code >= 400:
            return None
        try:
            return response.json()
        except ValueError:
            return None
