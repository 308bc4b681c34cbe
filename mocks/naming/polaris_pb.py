"""Loads Polaris's official protobuf modules from the ``polarismesh-specification`` wheel.

The wheel's ``response_pb2`` does ``import block_allow_list_pb2``, a module the wheel does not ship.
Its only use is ``DiscoverResponse.blockAllowListRule`` (field 26, ``.v1.BlockAllowListRule``),
which devbox never fills. :func:`protos` registers a stand-in file ``block_allow_list.proto``
(package ``v1``, one empty message ``BlockAllowListRule``) in the default descriptor pool and as a
module in ``sys.modules`` before importing, so every official module loads unchanged. This
happens on the first call, never at import time.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
from dataclasses import dataclass
from typing import Any

_MISSING = "block_allow_list"


def _install_block_allow_list() -> None:
    if f"{_MISSING}_pb2" in sys.modules:
        return
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(f"{_MISSING}.proto")
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(name=f"{_MISSING}.proto", package="v1", syntax="proto3")
        proto.message_type.add(name="BlockAllowListRule")
        pool.Add(proto)
        file = pool.FindFileByName(f"{_MISSING}.proto")
    module = types.ModuleType(f"{_MISSING}_pb2")
    module.DESCRIPTOR = file  # type: ignore[attr-defined]
    module.BlockAllowListRule = message_factory.GetMessageClass(  # type: ignore[attr-defined]
        pool.FindMessageTypeByName("v1.BlockAllowListRule")
    )
    sys.modules[module.__name__] = module


@dataclass(frozen=True)
class PolarisProtos:
    """The official generated modules devbox uses."""

    service: Any  # service_manage.service_pb2: Instance, Service, HealthCheck
    request: Any  # service_manage.request_pb2: DiscoverRequest
    response: Any  # service_manage.response_pb2: Response, DiscoverResponse, Batch*Response
    client: Any  # service_manage.client_pb2: Client
    grpcapi: Any  # service_manage.grpcapi_pb2_grpc: PolarisGRPCServicer/Stub
    routing: Any  # traffic_manage.routing_pb2: Routing, RouteRule, RuleRoutingConfig
    ratelimit: Any  # traffic_manage.ratelimit_pb2: RateLimit
    circuitbreaker: Any  # fault_tolerance.circuitbreaker_pb2
    fault_detector: Any  # fault_tolerance.fault_detector_pb2
    model: Any  # model.model_pb2: Location, MatchString
    namespace: Any  # model.namespace_pb2: Namespace


@functools.cache
def protos() -> PolarisProtos:
    """The official modules, loaded once (installing the missing-module stand-in first)."""
    _install_block_allow_list()
    base = "polarismesh_specification.api.v1."

    def load(name: str) -> Any:
        return importlib.import_module(base + name)

    return PolarisProtos(
        service=load("service_manage.service_pb2"),
        request=load("service_manage.request_pb2"),
        response=load("service_manage.response_pb2"),
        client=load("service_manage.client_pb2"),
        grpcapi=load("service_manage.grpcapi_pb2_grpc"),
        routing=load("traffic_manage.routing_pb2"),
        ratelimit=load("traffic_manage.ratelimit_pb2"),
        circuitbreaker=load("fault_tolerance.circuitbreaker_pb2"),
        fault_detector=load("fault_tolerance.fault_detector_pb2"),
        model=load("model.model_pb2"),
        namespace=load("model.namespace_pb2"),
    )
