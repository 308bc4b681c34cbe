"""Loads Polaris's official protobuf modules from the ``polarismesh-specification`` wheel.

The wheel's ``response_pb2`` does ``import block_allow_list_pb2``, a module the wheel does not ship.
Its only use is ``DiscoverResponse.blockAllowListRule`` (field 26, ``.v1.BlockAllowListRule``),
which devbox never fills. :func:`protos` registers a stand-in file ``block_allow_list.proto``
(package ``v1``, one empty message ``BlockAllowListRule``) in the default descriptor pool and as a
module in ``sys.modules`` before importing, so every official module loads unchanged. This
happens on the first call, never at import time.

The wheel's package ``__init__`` files star-import every ``*_pb2_grpc`` module, and those import
grpc, which the platform loads only when a gRPC client connects (~13 MB). :func:`protos` registers
each ``api.v1`` package bare (its path, none of its ``__init__``) so loading a message module loads
protobuf alone; the ``*_pb2_grpc`` modules load when asked for (``PolarisProtos.grpcapi``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
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


def _bare_packages() -> None:
    """Register each ``api.v1`` package without running its ``__init__`` (one already imported stays)."""
    base = "polarismesh_specification.api.v1"
    parent = importlib.import_module(base)  # its __init__, and its parents', import nothing
    for root in parent.__path__:
        for entry in os.scandir(root):
            name = f"{base}.{entry.name}"
            init = os.path.join(entry.path, "__init__.py")
            if name in sys.modules or not entry.is_dir() or not os.path.exists(init):
                continue
            spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[entry.path])
            assert spec is not None
            sys.modules[name] = package = importlib.util.module_from_spec(spec)
            setattr(parent, entry.name, package)


@dataclass(frozen=True)
class PolarisProtos:
    """The official generated modules devbox uses."""

    service: Any  # service_manage.service_pb2: Instance, Service, HealthCheck
    request: Any  # service_manage.request_pb2: DiscoverRequest
    response: Any  # service_manage.response_pb2: Response, DiscoverResponse, Batch*Response
    client: Any  # service_manage.client_pb2: Client
    routing: Any  # traffic_manage.routing_pb2: Routing, RouteRule, RuleRoutingConfig
    ratelimit: Any  # traffic_manage.ratelimit_pb2: RateLimit
    circuitbreaker: Any  # fault_tolerance.circuitbreaker_pb2
    fault_detector: Any  # fault_tolerance.fault_detector_pb2
    model: Any  # model.model_pb2: Location, MatchString
    namespace: Any  # model.namespace_pb2: Namespace

    @property
    def grpcapi(self) -> Any:
        """service_manage.grpcapi_pb2_grpc: PolarisGRPCServicer/Stub. It imports grpc, which the
        platform loads only when a gRPC client connects: imported on first use (by clients)."""
        return _load("service_manage.grpcapi_pb2_grpc")


def _load(name: str) -> Any:
    return importlib.import_module("polarismesh_specification.api.v1." + name)


@functools.cache
def protos() -> PolarisProtos:
    """The official modules, loaded once (installing the missing-module stand-in first)."""
    _install_block_allow_list()
    _bare_packages()
    return PolarisProtos(
        service=_load("service_manage.service_pb2"),
        request=_load("service_manage.request_pb2"),
        response=_load("service_manage.response_pb2"),
        client=_load("service_manage.client_pb2"),
        routing=_load("traffic_manage.routing_pb2"),
        ratelimit=_load("traffic_manage.ratelimit_pb2"),
        circuitbreaker=_load("fault_tolerance.circuitbreaker_pb2"),
        fault_detector=_load("fault_tolerance.fault_detector_pb2"),
        model=_load("model.model_pb2"),
        namespace=_load("model.namespace_pb2"),
    )
