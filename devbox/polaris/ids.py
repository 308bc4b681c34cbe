"""Polaris's instance-id rule, used by the naming server and by the deploy pipeline."""

from __future__ import annotations

import hashlib


def instance_id(namespace: str, service: str, host: str, port: int) -> str:
    """Polaris's id for an instance registered without one: sha1 of ``ns##svc##host##port``."""
    return hashlib.sha1(f"{namespace}##{service}##{host}##{port}".encode()).hexdigest()
