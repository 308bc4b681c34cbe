"""Which spans the SDK's sampler takes for a probe's (:func:`devbox.sdk.tracing.is_probe`): the
attributes the ASGI and gRPC instrumentations set at a span's start, as they set them."""

from __future__ import annotations

import pytest

from devbox.sdk.tracing import is_probe


@pytest.mark.parametrize("attributes", [
    {"http.user_agent": "devbox-probe"},  # the deploy pipeline's HTTP probe (old semantic conventions)
    {"user_agent.original": "devbox-probe"},  # the same, new conventions
    {"rpc.user_agent": "devbox-probe grpc-python-asyncio/1.68.0 grpc-c/43.0.0 (linux; chttp2)"},
    {"http.user_agent": "kube-probe/1.30"},  # the kubelet, on a stack `devbox export k8s` wrote
    {"rpc.user_agent": "kube-probe/1.30 grpc-go/1.62.0"},
])
def test_a_probe_is_known_by_its_user_agent(attributes: dict[str, str]) -> None:
    assert is_probe(attributes)


@pytest.mark.parametrize("attributes", [
    None,
    {},
    {"http.user_agent": "curl/8.5.0", "http.target": "/healthz"},  # a person asking: traced
    {"http.user_agent": "python-httpx/0.28.1"},
    {"rpc.user_agent": "grpc-python/1.68.0 devbox-probe"},  # the name not at the start
    {"http.user_agent": "my-devbox-probe"},
    {"http.user_agent": 5},
])
def test_anything_else_is_not_a_probe(attributes: dict[str, object] | None) -> None:
    assert not is_probe(attributes)
