"""Each listener's one error map: a refused request (:class:`~devbox.platform.errors.ApiError`)
turned into the protocol's error shape at the listener's edge, never inside a handler.

HTTP listeners render with the listener's own renderer (``Listener.errors``, ``"module:function"``
imported when the app is built) or devbox's JSON ``{"error": code, "reason": reason}``; gRPC
listeners abort the call with ``ApiError.grpc_status`` (:mod:`devbox.platform.grpc_server`). A
:class:`~devbox.platform.errors.Busy` error always carries ``Retry-After``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import math
import sys
import threading
import types
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, ClassVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from devbox.platform.component import Listener
from devbox.platform.errors import ApiError, Busy

LOG = logging.getLogger(__name__)

Renderer = Callable[[ApiError], Response]


def default_error_response(exc: ApiError) -> Response:
    """devbox's own error shape: ``{"error": code, "reason": reason}`` plus the error's detail fields
    (e.g. Polaris's numeric ``code``, a failed build's log ``tail``), with the error's status."""
    return JSONResponse({**exc.detail, "error": exc.code, "reason": exc.reason}, status_code=exc.status)


def renderer(listener: Listener) -> Renderer:
    """The listener's error renderer, imported from its ``"module:function"`` (or devbox's default).

    A renderer that cannot be imported is logged and replaced by the default, so one protocol
    adapter being rewritten does not keep the platform from starting; ``tests/unit/test_structure``
    checks that every declared renderer imports.
    """
    if listener.errors is None:
        return default_error_response
    try:
        return resolve(listener.errors)
    except (ImportError, AttributeError, TypeError) as exc:
        LOG.warning("listener %s: error renderer %s unusable (%s); using devbox's JSON", listener.name,
                    listener.errors, exc)
        return default_error_response


def resolve(path: str) -> Renderer:
    """The callable named ``"module:function"``; TypeError when it is not callable."""
    module_name, _, attr = path.partition(":")
    found = getattr(importlib.import_module(module_name), attr)
    if not callable(found):
        raise TypeError(f"{path} is not callable")
    return found  # type: ignore[no-any-return]


def api_error_handler(listener: Listener) -> Callable[[Request, Exception], Awaitable[Response]]:
    """A Starlette exception handler for ``ApiError`` on ``listener``'s app."""
    render = renderer(listener)

    async def handle(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, ApiError):  # registered for ApiError only; keeps the signature honest
            raise exc
        response = render(exc)
        if isinstance(exc, Busy) and "retry-after" not in response.headers:
            response.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        return response

    return handle


#: devbox's error body, as the OpenAPI schema documents it.
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "required": ["error", "reason"],
    "properties": {
        "error": {"type": "string", "description": "a short machine-readable word"},
        "reason": {"type": "string", "description": "what was wrong and what to do"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
}

#: What a devbox listener answers for a refused request, as documented on every operation.
ERROR_RESPONSES = {
    "400": "invalid request: a parameter or the body is malformed (reasons name each)",
}


#: Held while load_fastapi sets and restores pydantic's switches (two platforms may start in one process).
_FASTAPI_LOADING = threading.Lock()


def load_fastapi() -> None:
    """Import FastAPI with its OpenAPI document models built when a document is first made, and
    without pydantic's v1 API.

    ``fastapi.openapi.models`` defines ~60 pydantic models at its import, and pydantic builds each
    one's validator and serializer as the class is made: ~70 ms of CPU and ~1.7 MB of every
    platform's start, for a document only ``/openapi.json`` and ``/docs`` make. Those classes are
    made with pydantic's ``defer_build`` (set on ``BaseModel`` only while that module imports: every
    other model is built as usual), so they build on their first use. The module ends by calling
    ``model_rebuild()`` on three of them (``Schema``, ``Operation``, ``Encoding``, for their forward
    references), which builds them regardless, and with them nearly every other model, since an
    ``Operation`` holds the rest: those three calls are skipped (:func:`_rebuilds_skipped`), and the
    models resolve their references when first used, from the same module (~0.8 MB).

    ``pydantic.v1`` (~1.7 MB) is used by nothing devbox runs: FastAPI imports it as it makes each
    route, only to ask whether an annotation is a v1 model, and reads an ImportError as "no" (as it
    will once pydantic drops v1). It is marked unimportable unless something imported it already.

    Call it before anything imports fastapi: the first part does nothing once fastapi is imported."""
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]  # None: "not importable"
    with _FASTAPI_LOADING:
        if "fastapi.openapi.models" in sys.modules:
            return
        from pydantic import BaseModel

        config = BaseModel.model_config
        before = config.get("defer_build")
        config["defer_build"] = True
        try:
            with _rebuilds_skipped(BaseModel, "fastapi.openapi.models"):
                importlib.import_module("fastapi.openapi.models")
        finally:
            if before is None:
                config.pop("defer_build", None)
            else:
                config["defer_build"] = before


@contextlib.contextmanager
def _rebuilds_skipped(base: Any, module: str) -> Iterator[None]:
    """Skip the ``model_rebuild()`` calls that ``module``'s own top-level statements make while it
    imports. Every other call goes through: pydantic's own build on a model's first use calls it
    too (``fastapi.security`` makes an ``OAuthFlows`` as its module imports, so that one builds)."""
    rebuild = base.__dict__["model_rebuild"]

    def maybe(cls: Any, *args: Any, **kwargs: Any) -> Any:
        caller = sys._getframe(1)
        if caller.f_code.co_name == "<module>" and caller.f_globals.get("__name__") == module:
            return None
        # pydantic resolves forward references from its caller's frame, this many frames up: one more
        # now (this one), so that a rebuild another thread makes meanwhile still sees its own names
        kwargs["_parent_namespace_depth"] = kwargs.get("_parent_namespace_depth", 2) + 1
        return rebuild.__func__(cls, *args, **kwargs)

    base.model_rebuild = classmethod(maybe)
    try:
        yield
    finally:
        base.model_rebuild = rebuild


def load_uvicorn() -> None:
    """Let the platform import uvicorn's modules without the package's ``__init__``.

    That ``__init__`` imports uvicorn's command line (``uvicorn.main``: click) and its reload and
    worker supervisors (watchfiles with its native library, multiprocessing): ~2 MB of every idle
    platform for what ``uvicorn APP`` runs, never the platform, which builds ``Config`` and
    ``Server`` from their own modules. The package is registered without running it
    (:func:`defer_init`); code that uses uvicorn as usual in the same process (tests do) sees no
    difference.

    The same goes for ``logging.config`` (with ``logging.handlers``, ``socketserver``, ``pickle``:
    ~0.7 MB), which ``uvicorn.config`` imports to apply a logging config the platform does not give
    it (``log_config=None`` in :mod:`devbox.platform.http_server`: uvicorn's loggers propagate to
    the root logger, as devbox's own do); it runs the first time something uses it.

    Call it before anything imports uvicorn; once uvicorn is imported it does nothing."""
    if "uvicorn" in sys.modules:
        return
    logging_config = defer_init("logging.config")
    if logging_config is not None:
        setattr(logging, "config", logging_config)  # noqa: B010 - what `import logging.config` binds
    package = defer_init("uvicorn")
    if package is not None:
        # what uvicorn's own modules take from the package (its lifespan modules: `from uvicorn import Config`)
        package.Config = importlib.import_module("uvicorn.config").Config


def defer_init(name: str) -> Any:
    """Register the package ``name`` in ``sys.modules`` without running its ``__init__``, which runs
    on the first access to a name the package does not have yet (PEP 562's ``__getattr__``): its
    submodules import as usual meanwhile. None when it is imported already or cannot be found (the
    import then fails where it is made, saying so).

    One thread runs the ``__init__``; another reading any of the package's names meanwhile waits for
    it to finish (:class:`_Deferred`), and the ``__init__`` itself sees its package as a partly made
    module does. An ``__init__`` that raises raises to the access that ran it and runs again with the
    next access. (``importlib.reload`` of a package whose ``__init__`` has not run yet runs it, and
    the next missing name runs it again.)"""
    if name in sys.modules:
        return None
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return None
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    lock = _Deferred.running[name] = threading.RLock()  # reentrant: the __init__ reads its own names
    running = threading.local()

    def ran() -> bool:
        return type(package) is not _Deferred

    def complete(attr: str) -> Any:
        with lock:
            if not ran() and not getattr(running, "now", False):
                running.now = True
                try:
                    loader.exec_module(package)
                finally:
                    running.now = False
                if vars(package).get("__getattr__") is complete:  # unless the __init__ made its own
                    del package.__getattr__
                package.__class__ = types.ModuleType  # ran: names are read as from any module again
                _Deferred.running.pop(name, None)
        if ran():  # as the package answers it
            return getattr(package, attr)
        raise AttributeError(f"partially initialized module {name!r} has no attribute {attr!r} (its __init__ is "
                             "running in this thread)")

    package.__class__ = _Deferred
    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules[name] = package
    return package


class _Deferred(types.ModuleType):
    """A package :func:`defer_init` registered, until its ``__init__`` has run: reading any of its
    names waits while another thread runs that ``__init__`` (a name it has already made is not handed
    out before the helpers it needs exist); the running thread itself reads on (the lock is reentrant)."""

    #: package name -> the lock its ``__init__`` runs under
    running: ClassVar[dict[str, threading.RLock]] = {}

    def __getattribute__(self, attr: str) -> Any:
        lock = _Deferred.running.get(types.ModuleType.__getattribute__(self, "__name__"))
        if lock is not None:
            with lock:
                pass
        return types.ModuleType.__getattribute__(self, attr)


#: One OpenAPI document built at a time in a process (see openapi_without_422).
_DOCUMENTS = threading.Lock()


def openapi_without_422(app: Any) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` documenting what devbox answers: FastAPI documents a 422 validation error on
    every operation with parameters, but the edge answers those as 400 in devbox's error shape, so
    the 422 is replaced by 400 (a 422 a route declares itself, e.g. deploy's, stays)."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema  # type: ignore[no-any-return]
        # one document at a time in a process: the first builds FastAPI's document models, and
        # pydantic's deferred builds are not thread-safe (two platforms of one process, each on its
        # own loop, asked at once: one in ~50 failed with AttributeError)
        with _DOCUMENTS, warnings.catch_warnings():
            # a route serving GET and POST gets one operationId for both: made unique below
            warnings.filterwarnings("ignore", message="Duplicate Operation ID")
            schema: dict[str, Any] = original()
        seen: set[str] = set()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components["Error"] = ERROR_SCHEMA
        ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        for operations in schema.get("paths", {}).values():
            for method, operation in operations.items():
                responses = operation.get("responses") if isinstance(operation, dict) else None
                if responses is None:
                    continue
                op_id = operation.get("operationId")
                if op_id in seen:
                    operation["operationId"] = f"{op_id}_{method}"
                seen.add(operation.get("operationId"))
                if "HTTPValidationError" in str(responses.get("422", "")):
                    del responses["422"]
                    responses.setdefault("400", {"description": ERROR_RESPONSES["400"], **ref})
        if "HTTPValidationError" not in str(schema.get("paths")):
            for unused in ("HTTPValidationError", "ValidationError"):
                components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    return openapi
