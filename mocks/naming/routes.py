"""The route class of naming's HTTP routers: the registry's refusals become the platform's exceptions.

Handlers call the service layer and let its :class:`~devbox.mocks.naming.models.NamingError`
propagate; :class:`NamingRoute` turns it into the matching
:class:`~devbox.platform.errors.ApiError` (see :meth:`NamingError.api_error`) in this one place,
and the listener's edge renders that in its protocol's shape (devbox JSON on ``api``, Polaris's
``{code, info}`` on ``polaris_http``, see :func:`devbox.mocks.naming.polaris_http.render_error`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar

from devbox.mocks.naming.models import NamingError
from fastapi import Request, Response
from fastapi.routing import APIRoute

#: What a write awaits before it is answered: :meth:`NamingService.durable`.
Commit = Callable[[], Awaitable[None]]

#: Methods that only read: answered without waiting for a commit.
READS = frozenset({"GET", "HEAD", "OPTIONS"})


class NamingRoute(APIRoute):
    """An :class:`APIRoute` whose handler raises ``ApiError`` where the registry raised ``NamingError``,
    and — in the class :func:`durable_routes` makes — answers a write only once it is committed."""

    commit: ClassVar[Commit | None] = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        commit = type(self).commit

        async def handle(request: Request) -> Response:
            try:
                response = await handler(request)
            except NamingError as exc:
                raise exc.api_error() from None
            if commit is not None and request.method not in READS:
                await commit()  # acknowledged means durable: a kill -9 after this answer loses nothing
            return response

        return handle


def durable_routes(commit: Commit) -> type[NamingRoute]:
    """A :class:`NamingRoute` class whose writes await ``commit()`` before their answer is sent."""
    return type("DurableNamingRoute", (NamingRoute,), {"commit": staticmethod(commit)})
