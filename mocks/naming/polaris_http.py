"""Polaris's HTTP APIs on the ``polaris_http`` listener: the client API and a console subset.

Client API (what SDKs without gRPC use): ``POST /v1/RegisterInstance``, ``/v1/DeregisterInstance``,
``/v1/Heartbeat``, ``/v1/Discover``, ``/v1/ReportClient`` with protobuf-JSON bodies. Console API
under ``/naming/v1``: ``namespaces``, ``services`` and ``instances`` (list, create, delete,
update). Answers are protobuf-JSON; the HTTP status is ``code // 1000`` and failures carry
``X-Polaris-Code`` / ``X-Polaris-Message`` headers, as the real server does. A request refused as
a whole (unparsable body, bad query) is raised and rendered at the listener's edge by
:func:`render_error` in that same shape; per-item refusals are answers inside the batch.

LIMITATIONS: no console paging beyond ``offset``/``limit``, no users/auth strategies, no
routing/rate-limit console endpoints (devbox's own ``/api/naming/rules`` manages rules).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from devbox.mocks.naming.models import Code, NamingError
from devbox.mocks.naming.polaris import PolarisApi
from devbox.mocks.naming.polaris_pb import PolarisProtos
from devbox.mocks.naming.polaris_rules import RuleConversionError, rule_from_polaris
from devbox.mocks.naming.routes import durable_routes
from fastapi import APIRouter, Request
from fastapi.responses import Response

from devbox.platform.errors import ApiError
from devbox.polaris import routing as routing_rules

if TYPE_CHECKING:  # protobuf loads with the first Polaris message (PolarisApi.pb), not with the platform
    from google.protobuf.message import Message

LOG = logging.getLogger(__name__)

MAX_BATCH = 100

#: The Polaris code for a refusal raised without one (by the platform, e.g. a bad token).
_CODE_OF_STATUS = {401: Code.Unauthorized, 404: Code.NotFoundResource, 409: Code.ExistedResource}


def pb_response(message: Message) -> Response:
    """protobuf-JSON with Polaris's status mapping (``code // 1000``) and error headers."""
    from google.protobuf import json_format

    body = json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None)
    return _answer(body, message.code.value, message.info.value)  # type: ignore[attr-defined]


def _answer(body: str, code: int, info: str) -> Response:
    status = code // 1000 if code else 200
    headers = {}
    if status != 200:
        headers["X-Polaris-Code"] = str(code)
        headers["X-Polaris-Message"] = info.encode("ascii", "replace").decode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def render_error(exc: ApiError) -> Response:
    """A refused request in Polaris's shape: ``{"code", "info"}``, status ``code // 1000``, X-Polaris-* headers.

    The ``polaris_http`` listener's edge calls it for every :class:`ApiError`; the Polaris code is
    ``exc.detail["code"]``, else the nearest one for the HTTP status. The body is what protobuf-JSON
    makes of a ``Response`` with those two fields, written without the messages: a refusal (a probe's
    404, a bad token) does not load them.
    """
    code = exc.detail.get("code")
    if code is None:
        fallback = Code.BadRequest if exc.status < 500 else Code.ExecuteException
        code = _CODE_OF_STATUS.get(exc.status, fallback)
    return _answer(json.dumps({"code": int(code), "info": exc.reason}), int(code), exc.reason)


async def _json_list(request: Request, what: str, limit: int | None = MAX_BATCH) -> list[Any]:
    """The body as a non-empty JSON list (one object is a list of one), at most ``limit`` long."""
    try:
        data = json.loads(await request.body() or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise NamingError(Code.ParseException, f"body is not JSON: {exc}") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise NamingError(Code.EmptyRequest, f"body must be a non-empty JSON array{what}")
    if limit is not None and len(data) > limit:
        raise NamingError(Code.BatchSizeOverLimit, f"at most {limit} items per request")
    return data


async def _parse(request: Request, message: Message) -> Message:
    """Fill ``message`` from the protobuf-JSON body; NamingError(ParseException) when it is not."""
    body = await request.body()
    if not body.strip():
        raise NamingError(Code.EmptyRequest, "request body is empty")
    from google.protobuf import json_format

    try:
        json_format.Parse(body, message, ignore_unknown_fields=True)
    except (json_format.ParseError, UnicodeDecodeError, RecursionError) as exc:
        raise NamingError(Code.ParseException, f"body is not a valid {message.DESCRIPTOR.name}: {exc}") from None
    return message


async def _parse_list(request: Request, factory: Callable[[], Message]) -> list[Message]:
    from google.protobuf import json_format

    out = []
    for i, item in enumerate(await _json_list(request, "")):
        message = factory()
        if not isinstance(item, dict):  # ParseDict fails on these with TypeError/AttributeError, or reads "x" as {}
            raise NamingError(Code.ParseException,
                              f"item {i} is not a {message.DESCRIPTOR.name} object: {json.dumps(item)[:80]}")
        try:
            json_format.ParseDict(item, message, ignore_unknown_fields=True)
        except (json_format.ParseError, RecursionError) as exc:
            raise NamingError(Code.ParseException, f"item is not a valid {message.DESCRIPTOR.name}: {exc}") from None
        out.append(message)
    return out


def _token(request: Request) -> str | None:
    return request.headers.get("x-polaris-token")


def _page(items: list[Any], request: Request) -> list[Any]:
    try:
        offset = max(0, int(request.query_params.get("offset", 0)))
        limit = max(0, int(request.query_params.get("limit", 100)))
    except ValueError:
        raise NamingError(Code.InvalidParameter, "offset and limit must be integers") from None
    return items[offset : offset + limit]


def _flag(params: Mapping[str, str], key: str) -> bool | None:
    raw = params.get(key)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise NamingError(Code.InvalidParameter, f"{key} must be true or false, not {raw!r}")


def instance_filter(params: Mapping[str, str]) -> Callable[[Any], bool]:
    """The console's instance query filters, as Polaris applies them: ``host`` (comma-separated
    list), ``port``, ``healthy``, ``isolate``, ``protocol``, ``version`` and metadata as
    ``keys``/``values`` (one pair; Polaris's console sends it that way). All given must hold."""
    hosts = {h.strip() for h in params.get("host", "").split(",") if h.strip()}
    port: int | None = None
    if params.get("port"):
        try:
            port = int(params["port"])
        except ValueError:
            raise NamingError(Code.InvalidParameter, f"port must be an integer, not {params['port']!r}") from None
    healthy, isolate = _flag(params, "healthy"), _flag(params, "isolate")
    protocol, version = params.get("protocol") or None, params.get("version") or None
    key, value = params.get("keys") or "", params.get("values") or ""
    if value and not key:
        raise NamingError(Code.InvalidParameter, "values needs keys (the metadata key to filter on)")

    def matches(i: Any) -> bool:
        return (
            (not hosts or i.host in hosts)
            and (port is None or i.port == port)
            and (healthy is None or i.healthy == healthy)
            and (isolate is None or i.isolated == isolate)
            and (protocol is None or i.protocol == protocol)
            and (version is None or i.version == version)
            and (not key or (key in i.metadata and (not value or i.metadata[key] == value)))
        )

    return matches


def _batch_write(api: PolarisApi, responses: list[Message], failed: str) -> Response:
    """A console write's answer: one response per item; the whole is success, the items' one
    failure code when all failed, else BadRequest (``failed`` is then the info)."""
    codes = {r.code.value for r in responses}  # type: ignore[attr-defined]
    code = Code.ExecuteSuccess if codes <= {int(Code.ExecuteSuccess)} else Code(max(codes))
    if len(codes) > 1 and int(Code.ExecuteSuccess) in codes:
        code = Code.BadRequest
    return pb_response(
        api.pb.response.BatchWriteResponse(
            code={"value": int(code)},
            info={"value": "execute success" if code == Code.ExecuteSuccess else failed},
            size={"value": len(responses)},
            responses=responses,
        )
    )


def _batch_query(api: PolarisApi, amount: int | None = None, **payload: Any) -> Response:
    """A console list's answer: ``payload`` is the one repeated field (``services=[...]``, ...);
    ``amount`` is how many matched before paging (Polaris's ``amount``; ``size`` is the page)."""
    items = next(iter(payload.values()))
    return pb_response(
        api.pb.response.BatchQueryResponse(
            code={"value": int(Code.ExecuteSuccess)},
            info={"value": "execute success"},
            amount={"value": len(items) if amount is None else amount},
            size={"value": len(items)},
            **payload,
        )
    )


class _Handlers:
    """Handlers over one :class:`PolarisApi` (and its registry, for the console's reads and writes)."""

    def __init__(self, api: PolarisApi) -> None:
        self.api = api
        self.registry = api.registry

    @property
    def pb(self) -> PolarisProtos:
        return self.api.pb


# --- client API ----------------------------------------------------------------------------


class ClientHandlers(_Handlers):
    """``/v1/...``: the Polaris client API over HTTP, each call one :class:`PolarisApi` operation."""

    async def register_instance(self, request: Request) -> Response:
        msg = await _parse(request, self.pb.service.Instance())
        return pb_response(self.api.register(msg, _token(request)))

    async def deregister_instance(self, request: Request) -> Response:
        msg = await _parse(request, self.pb.service.Instance())
        return pb_response(self.api.deregister(msg, _token(request)))

    async def heartbeat(self, request: Request) -> Response:
        msg = await _parse(request, self.pb.service.Instance())
        return pb_response(self.api.heartbeat(msg, _token(request)))

    async def report_client(self, request: Request) -> Response:
        return pb_response(self.api.report_client(await _parse(request, self.pb.client.Client())))

    async def discover(self, request: Request) -> Response:
        return pb_response(self.api.discover(await _parse(request, self.pb.request.DiscoverRequest())))


def client_router(api: PolarisApi) -> APIRouter:
    """``/v1/...``: the Polaris client API over HTTP."""
    h = ClientHandlers(api)
    router = APIRouter(tags=["polaris client api"], route_class=durable_routes(api.service.durable))
    router.add_api_route("/v1/RegisterInstance", h.register_instance, methods=["POST"])
    router.add_api_route("/v1/DeregisterInstance", h.deregister_instance, methods=["POST"])
    router.add_api_route("/v1/Heartbeat", h.heartbeat, methods=["POST"])
    router.add_api_route("/v1/ReportClient", h.report_client, methods=["POST"])
    router.add_api_route("/v1/Discover", h.discover, methods=["POST"])
    return router


# --- console API ---------------------------------------------------------------------------


class ConsoleHandlers(_Handlers):
    """``/naming/v1/...``: the console subset (namespaces, services, instances)."""

    async def _batch(self, request: Request, factory: Callable[[], Message], kind: str,
                     apply: Callable[[Any], Message]) -> Response:
        """The console's write shape: a JSON list in, one response per item (``kind`` names it)."""
        responses = []
        for item in await _parse_list(request, factory):
            try:
                responses.append(apply(item))
            except NamingError as exc:  # one item refused: its answer in the batch, not the request's
                responses.append(self.api.error(exc, **{kind: item}))
        return _batch_write(self.api, responses, "some items failed")

    async def list_namespaces(self) -> Response:
        spaces = [self.pb.namespace.Namespace(name={"value": n.name}, comment={"value": n.comment})
                  for n in self.registry.namespaces()]
        return _batch_query(self.api, namespaces=spaces)

    async def create_namespaces(self, request: Request) -> Response:
        def create(item: Any) -> Message:
            self.registry.create_namespace(item.name.value, comment=item.comment.value)
            return self.api.response(Code.ExecuteSuccess, namespace=item)

        return await self._batch(request, self.pb.namespace.Namespace, "namespace", create)

    async def list_services(self, request: Request) -> Response:
        namespace = request.query_params.get("namespace") or None
        name = request.query_params.get("name")
        services = [s for s in self.registry.services(namespace) if not name or s.name == name]
        return _batch_query(self.api, services=[self.api.service_to_pb(s) for s in _page(services, request)])

    async def create_services(self, request: Request) -> Response:
        def create(item: Any) -> Message:
            svc = self.registry.create_service(
                item.namespace.value,
                item.name.value,
                owners=item.owners.value or "devbox",
                comment=item.comment.value,
                business=item.business.value,
                department=item.department.value,
                metadata=dict(item.metadata),
            )
            out = self.api.service_to_pb(svc)
            out.token.value = svc.token
            return self.api.response(Code.ExecuteSuccess, service=out)

        return await self._batch(request, self.pb.service.Service, "service", create)

    async def delete_services(self, request: Request) -> Response:
        def delete(item: Any) -> Message:
            self.registry.delete_service(item.namespace.value, item.name.value)
            return self.api.response(Code.ExecuteSuccess, service=item)

        return await self._batch(request, self.pb.service.Service, "service", delete)

    async def list_instances(self, request: Request) -> Response:
        service = request.query_params.get("service")
        namespace = request.query_params.get("namespace")
        if not service or not namespace:
            raise NamingError(Code.InvalidParameter, "service and namespace are required")
        matching = instance_filter(request.query_params)
        found = [i for i in self.registry.instances(namespace, service) if matching(i)]
        chosen = _page(found, request)
        return _batch_query(self.api, amount=len(found), instances=[self.api.instance_to_pb(i) for i in chosen])

    async def _instances(self, request: Request, op: Callable[[Any, str | None], Message]) -> Response:
        """A write on existing or new instances: ``op`` is the PolarisApi operation (it answers refusals)."""
        token = _token(request)
        return await self._batch(request, self.pb.service.Instance, "instance", lambda item: op(item, token))

    async def create_instances(self, request: Request) -> Response:
        return await self._instances(request, self.api.register)

    async def delete_instances(self, request: Request) -> Response:
        return await self._instances(request, self.api.deregister)

    async def update_instances(self, request: Request) -> Response:
        """Update isolate / weight / metadata / healthy of existing instances (the console's edit)."""
        return await self._instances(request, self.api.update)


def console_router(api: PolarisApi) -> APIRouter:
    """``/naming/v1/...``: the console subset (namespaces, services, instances)."""
    h = ConsoleHandlers(api)
    router = APIRouter(
        prefix="/naming/v1", tags=["polaris console api"], route_class=durable_routes(api.service.durable)
    )
    router.add_api_route("/namespaces", h.list_namespaces, methods=["GET"])
    router.add_api_route("/namespaces", h.create_namespaces, methods=["POST"])
    router.add_api_route("/services", h.list_services, methods=["GET"])
    router.add_api_route("/services", h.create_services, methods=["POST"])
    router.add_api_route("/services/delete", h.delete_services, methods=["POST"])
    router.add_api_route("/instances", h.list_instances, methods=["GET"])
    router.add_api_route("/instances", h.create_instances, methods=["POST"])
    router.add_api_route("/instances/delete", h.delete_instances, methods=["POST"])
    router.add_api_route("/instances", h.update_instances, methods=["PUT"])
    return router


# --- v2 routing console ---------------------------------------------------------------------


class RoutingHandlers(_Handlers):
    """``/naming/v2/routings``: Polaris v2 rule routing, converted to and from devbox rules."""

    async def _write(self, request: Request, apply: Callable[[Any], str]) -> Response:
        """Each item through ``apply`` (its success info); a refusal is that item's answer."""
        responses = []
        for item in await _json_list(request, " of RouteRule objects", limit=None):
            try:
                responses.append(self.api.response(Code.ExecuteSuccess, apply(item)))
            except RuleConversionError as exc:
                responses.append(self.api.response(Code.InvalidParameter, str(exc)))
            except NamingError as exc:
                responses.append(self.api.error(exc))
        return _batch_write(self.api, responses, "some rules were refused")

    async def put_routings(self, request: Request) -> Response:
        def put(item: Any) -> str:
            rule = rule_from_polaris(item)
            self.registry.put_rule(rule.model_dump(mode="json"))
            return f"{rule.namespace}/{rule.service}/{rule.name}"

        return await self._write(request, put)

    async def list_routings(self, request: Request) -> Response:
        namespace = request.query_params.get("namespace") or None
        service = request.query_params.get("service") or None
        from google.protobuf import json_format

        packed = []
        for data in self.registry.rules(namespace, service):
            message = self.pb.routing.RouteRule()
            rule = routing_rules.RoutingRule.model_validate(data)
            json_format.ParseDict(routing_rules.to_polaris(rule), message, ignore_unknown_fields=True)
            any_msg = self.pb.response.BatchQueryResponse().data.add()
            any_msg.Pack(message)
            packed.append(any_msg)
        return _batch_query(self.api, data=packed)

    async def delete_routings(self, request: Request) -> Response:
        """Delete by ``id`` (``namespace/service/name``, as listed)."""

        def delete(item: Any) -> str:
            parts = str(item.get("id", "") if isinstance(item, dict) else "").split("/")
            if len(parts) != 3:
                raise RuleConversionError("give the rule id as namespace/service/name")
            self.registry.delete_rule(*parts)
            return "deleted"

        return await self._write(request, delete)


def routing_router(api: PolarisApi) -> APIRouter:
    """``/naming/v2/routings``: Polaris v2 rule routing, converted to and from devbox rules."""
    h = RoutingHandlers(api)
    router = APIRouter(
        prefix="/naming/v2", tags=["polaris console api"], route_class=durable_routes(api.service.durable)
    )
    router.add_api_route("/routings", h.put_routings, methods=["POST", "PUT"])
    router.add_api_route("/routings", h.list_routings, methods=["GET"])
    router.add_api_route("/routings/delete", h.delete_routings, methods=["POST"])
    return router
