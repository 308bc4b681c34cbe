"""Polaris's HTTP APIs on the ``polaris_http`` listener: the client API and a console subset.

Client API (what SDKs without gRPC use): ``POST /v1/RegisterInstance``, ``/v1/DeregisterInstance``,
``/v1/Heartbeat``, ``/v1/Discover``, ``/v1/ReportClient`` with protobuf-JSON bodies. Console API
under ``/naming/v1``: ``namespaces``, ``services`` and ``instances`` (list, create, delete,
update). Answers are protobuf-JSON; the HTTP status is ``code // 1000`` and failures carry
``X-Polaris-Code`` / ``X-Polaris-Message`` headers, as the real server does.

LIMITATIONS: no console paging beyond ``offset``/``limit``, no users/auth strategies, no
routing/rate-limit console endpoints (devbox's own ``/api/naming/rules`` manages rules).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from devbox.mocks.naming.core import Registry
from devbox.mocks.naming.models import Code, NamingError
from devbox.mocks.naming.polaris import PolarisApi
from fastapi import APIRouter, Request
from fastapi.responses import Response
from google.protobuf import json_format
from google.protobuf.message import Message

LOG = logging.getLogger(__name__)

MAX_BATCH = 100


def pb_response(message: Message) -> Response:
    """protobuf-JSON with Polaris's status mapping (``code // 1000``) and error headers."""
    body = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
    code = message.code.value  # type: ignore[attr-defined]
    status = code // 1000 if code else 200
    headers = {}
    if status != 200:
        headers["X-Polaris-Code"] = str(code)
        headers["X-Polaris-Message"] = message.info.value.encode("ascii", "replace").decode()  # type: ignore[attr-defined]
    return Response(body, status_code=status, media_type="application/json", headers=headers)


async def _parse(request: Request, message: Message) -> Message:
    """Fill ``message`` from the protobuf-JSON body; NamingError(ParseException) when it is not."""
    body = await request.body()
    if not body.strip():
        raise NamingError(Code.EmptyRequest, "request body is empty")
    try:
        json_format.Parse(body, message, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise NamingError(Code.ParseException, f"body is not a valid {message.DESCRIPTOR.name}: {exc}") from None
    return message


async def _parse_list(request: Request, factory: Callable[[], Message]) -> list[Message]:
    body = await request.body()
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise NamingError(Code.ParseException, f"body is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise NamingError(Code.EmptyRequest, "body must be a non-empty JSON array")
    if len(data) > MAX_BATCH:
        raise NamingError(Code.BatchSizeOverLimit, f"at most {MAX_BATCH} items per request")
    out = []
    for item in data:
        message = factory()
        try:
            json_format.ParseDict(item, message, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise NamingError(Code.ParseException, f"item is not a valid {message.DESCRIPTOR.name}: {exc}") from None
        out.append(message)
    return out


def client_router(api: PolarisApi) -> APIRouter:
    """``/v1/...``: the Polaris client API over HTTP."""
    router = APIRouter(tags=["polaris client api"])
    pb = api.pb

    def token(request: Request) -> str | None:
        return request.headers.get("x-polaris-token")

    async def unary(
        request: Request, factory: Callable[[], Message], op: Callable[..., Message], **kw: Any
    ) -> Response:
        try:
            message = await _parse(request, factory())
        except NamingError as exc:
            return pb_response(api.error(exc))
        return pb_response(op(message, **kw))

    @router.post("/v1/RegisterInstance")
    async def register_instance(request: Request) -> Response:
        return await unary(request, pb.service.Instance, api.register, token=token(request))

    @router.post("/v1/DeregisterInstance")
    async def deregister_instance(request: Request) -> Response:
        return await unary(request, pb.service.Instance, api.deregister, token=token(request))

    @router.post("/v1/Heartbeat")
    async def heartbeat(request: Request) -> Response:
        return await unary(request, pb.service.Instance, api.heartbeat, token=token(request))

    @router.post("/v1/ReportClient")
    async def report_client(request: Request) -> Response:
        return await unary(request, pb.client.Client, api.report_client)

    @router.post("/v1/Discover")
    async def discover(request: Request) -> Response:
        try:
            message = await _parse(request, pb.request.DiscoverRequest())
        except NamingError as exc:
            return pb_response(pb.response.DiscoverResponse(code={"value": int(exc.code)}, info={"value": exc.reason}))
        return pb_response(api.discover(message))

    return router


def console_router(api: PolarisApi, registry: Registry) -> APIRouter:
    """``/naming/v1/...``: the console subset (namespaces, services, instances)."""
    router = APIRouter(prefix="/naming/v1", tags=["polaris console api"])
    pb = api.pb

    def batch_write(responses: list[Message]) -> Response:
        codes = {r.code.value for r in responses}
        code = Code.ExecuteSuccess if codes <= {int(Code.ExecuteSuccess)} else Code(max(codes))
        if len(codes) > 1 and int(Code.ExecuteSuccess) in codes:
            code = Code.BadRequest
        return pb_response(
            pb.response.BatchWriteResponse(
                code={"value": int(code)},
                info={"value": "execute success" if code == Code.ExecuteSuccess else "some items failed"},
                size={"value": len(responses)},
                responses=responses,
            )
        )

    def batch_error(exc: NamingError) -> Response:
        return pb_response(pb.response.BatchWriteResponse(code={"value": int(exc.code)}, info={"value": exc.reason}))

    def query(**payload: Any) -> Response:
        items = next(iter(payload.values()))
        return pb_response(
            pb.response.BatchQueryResponse(
                code={"value": int(Code.ExecuteSuccess)},
                info={"value": "execute success"},
                amount={"value": len(items)},
                size={"value": len(items)},
                **payload,
            )
        )

    def page(items: list[Any], request: Request) -> list[Any]:
        try:
            offset = max(0, int(request.query_params.get("offset", 0)))
            limit = max(0, int(request.query_params.get("limit", 100)))
        except ValueError:
            raise NamingError(Code.InvalidParameter, "offset and limit must be integers") from None
        return items[offset : offset + limit]

    @router.get("/namespaces")
    async def list_namespaces(request: Request) -> Response:
        spaces = [
            pb.namespace.Namespace(name={"value": n.name}, comment={"value": n.comment}) for n in registry.namespaces()
        ]
        return query(namespaces=spaces)

    async def batch(
        request: Request, factory: Callable[[], Message], kind: str, apply: Callable[[Any], Message]
    ) -> Response:
        """The console's write shape: a JSON list in, one response per item (``kind`` names it)."""
        try:
            items = await _parse_list(request, factory)
        except NamingError as exc:
            return batch_error(exc)
        responses = []
        for item in items:
            try:
                responses.append(apply(item))
            except NamingError as exc:
                responses.append(api.error(exc, **{kind: item}))
        return batch_write(responses)

    @router.post("/namespaces")
    async def create_namespaces(request: Request) -> Response:
        def create(item: Any) -> Message:
            registry.create_namespace(item.name.value, comment=item.comment.value)
            return api.response(Code.ExecuteSuccess, namespace=item)

        return await batch(request, pb.namespace.Namespace, "namespace", create)

    @router.get("/services")
    async def list_services(request: Request) -> Response:
        namespace = request.query_params.get("namespace") or None
        name = request.query_params.get("name")
        services = [s for s in registry.services(namespace) if not name or s.name == name]
        try:
            chosen = page(services, request)
        except NamingError as exc:
            return pb_response(api.error(exc))
        return query(services=[api.service_to_pb(s) for s in chosen])

    @router.post("/services")
    async def create_services(request: Request) -> Response:
        def create(item: Any) -> Message:
            svc = registry.create_service(
                item.namespace.value,
                item.name.value,
                owners=item.owners.value or "devbox",
                comment=item.comment.value,
                business=item.business.value,
                department=item.department.value,
                metadata=dict(item.metadata),
            )
            out = api.service_to_pb(svc)
            out.token.value = svc.token
            return api.response(Code.ExecuteSuccess, service=out)

        return await batch(request, pb.service.Service, "service", create)

    @router.post("/services/delete")
    async def delete_services(request: Request) -> Response:
        def delete(item: Any) -> Message:
            registry.delete_service(item.namespace.value, item.name.value)
            return api.response(Code.ExecuteSuccess, service=item)

        return await batch(request, pb.service.Service, "service", delete)

    @router.get("/instances")
    async def list_instances(request: Request) -> Response:
        service = request.query_params.get("service")
        namespace = request.query_params.get("namespace")
        if not service or not namespace:
            return pb_response(api.error(NamingError(Code.InvalidParameter, "service and namespace are required")))
        try:
            chosen = page(registry.instances(namespace, service), request)
        except NamingError as exc:
            return pb_response(api.error(exc))
        return query(instances=[api.instance_to_pb(i) for i in chosen])

    @router.post("/instances")
    async def create_instances(request: Request) -> Response:
        token = request.headers.get("x-polaris-token")
        return await batch(request, pb.service.Instance, "instance", lambda item: api.register(item, token))

    @router.post("/instances/delete")
    async def delete_instances(request: Request) -> Response:
        token = request.headers.get("x-polaris-token")
        return await batch(request, pb.service.Instance, "instance", lambda item: api.deregister(item, token))

    @router.put("/instances")
    async def update_instances(request: Request) -> Response:
        """Update isolate / weight / metadata / healthy of existing instances (the console's edit)."""
        token = request.headers.get("x-polaris-token")
        return await batch(request, pb.service.Instance, "instance", lambda item: api.update(item, token))

    return router


def routing_router(api: PolarisApi, registry: Registry) -> APIRouter:
    """``/naming/v2/routings``: Polaris v2 rule routing, converted to and from devbox rules."""
    from devbox.mocks.naming.polaris_rules import RuleConversionError, rule_from_polaris

    from devbox.polaris import routing as routing_rules

    router = APIRouter(prefix="/naming/v2", tags=["polaris console api"])
    pb = api.pb

    async def body_list(request: Request) -> list[Any]:
        try:
            data = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            raise NamingError(Code.ParseException, f"body is not JSON: {exc}") from None
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list) or not data:
            raise NamingError(Code.EmptyRequest, "body must be a non-empty JSON array of RouteRule objects")
        return data

    def write_answer(results: list[tuple[Code, str]]) -> Response:
        responses = [api.response(code, info) for code, info in results]
        failed = [code for code, _ in results if code != Code.ExecuteSuccess]
        code = Code.ExecuteSuccess if not failed else (failed[0] if len(failed) == len(results) else Code.BadRequest)
        return pb_response(
            pb.response.BatchWriteResponse(
                code={"value": int(code)},
                info={"value": "execute success" if not failed else "some rules were refused"},
                size={"value": len(results)},
                responses=responses,
            )
        )

    @router.post("/routings")
    @router.put("/routings")
    async def create_routings(request: Request) -> Response:
        try:
            items = await body_list(request)
        except NamingError as exc:
            return pb_response(api.error(exc))
        results: list[tuple[Code, str]] = []
        for item in items:
            try:
                rule = rule_from_polaris(item)
            except RuleConversionError as exc:
                results.append((Code.InvalidParameter, str(exc)))
                continue
            try:
                registry.put_rule(rule.model_dump(mode="json"))
            except NamingError as exc:
                results.append((exc.code, exc.reason))
                continue
            results.append((Code.ExecuteSuccess, f"{rule.namespace}/{rule.service}/{rule.name}"))
        return write_answer(results)

    @router.get("/routings")
    async def list_routings(request: Request) -> Response:
        namespace = request.query_params.get("namespace") or None
        service = request.query_params.get("service") or None
        packed = []
        for data in registry.rules(namespace, service):
            message = pb.routing.RouteRule()
            rule = routing_rules.RoutingRule.model_validate(data)
            json_format.ParseDict(routing_rules.to_polaris(rule), message, ignore_unknown_fields=True)
            any_msg = pb.response.BatchQueryResponse().data.add()
            any_msg.Pack(message)
            packed.append(any_msg)
        return pb_response(
            pb.response.BatchQueryResponse(
                code={"value": int(Code.ExecuteSuccess)},
                info={"value": "execute success"},
                amount={"value": len(packed)},
                size={"value": len(packed)},
                data=packed,
            )
        )

    @router.post("/routings/delete")
    async def delete_routings(request: Request) -> Response:
        """Delete by ``id`` (``namespace/service/name``, as listed)."""
        try:
            items = await body_list(request)
        except NamingError as exc:
            return pb_response(api.error(exc))
        results: list[tuple[Code, str]] = []
        for item in items:
            parts = str(item.get("id", "") if isinstance(item, dict) else "").split("/")
            if len(parts) != 3:
                results.append((Code.InvalidParameter, "give the rule id as namespace/service/name"))
                continue
            try:
                registry.delete_rule(*parts)
                results.append((Code.ExecuteSuccess, "deleted"))
            except NamingError as exc:
                results.append((exc.code, exc.reason))
        return write_answer(results)

    return router
