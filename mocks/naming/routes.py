"""The route class of naming's HTTP routers: the registry's refusals become the platform's exceptions.

Handlers call the service layer and let its :class:`~devbox.mocks.naming.models.NamingError`
propagate; :class:`NamingRoute` turns it into the matching
:class:`~devbox.platform.errors.ApiError` (see :meth:`NamingError.api_error`) in this one place,
and the listener's edge renders that in its protocol's shape (devbox JSON on ``api``, Polaris's
``{code, info}`` on ``polaris_http``, see :func:`devbox.mocks.naming.polaris_http.render_error`).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from devbox.mocks.naming.models import NamingError
from fastapi import Request, Response
from fastapi.routing import APIRoute


class NamingRoute(APIRoute):
    """An :class:`APIRoute` whose handler raises ``ApiError`` where the registry raised ``NamingError``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except NamingError as exc:
                raise exc.api_error() from None

        return handle
