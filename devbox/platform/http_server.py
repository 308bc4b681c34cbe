"""uvicorn as the platform runs each HTTP listener: its server on a socket the platform bound,
without uvicorn's own signal handling, with :class:`~devbox.platform.http_timeouts.HeadTimeoutProtocol`.

Imported by :meth:`devbox.platform.platform.Platform._serve_http` after
:func:`~devbox.platform.edge.load_uvicorn`, so uvicorn's command line is not loaded with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from uvicorn.config import Config
from uvicorn.server import Server

from devbox.platform.http_timeouts import HeadTimeoutProtocol

#: Seconds an idle keep-alive HTTP connection stays open (longer than the clients' own idle expiry).
KEEP_ALIVE_S = 120


class PlatformServer(Server):
    """uvicorn without its own signal handling: the platform owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def server(app: Any) -> PlatformServer:
    """A server for one listener's ASGI ``app`` (served with ``serve(sockets=[...])``)."""
    return PlatformServer(Config(
        # ws="none": no listener serves websockets, and importing uvicorn's implementation of
        # them is start-up time spent before the listener answers. log_config=None: uvicorn's
        # loggers propagate to the root logger (devbox's format), and logging.config is never loaded
        app, log_config=None, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=2,
        ws="none",
        http=HeadTimeoutProtocol,
        # An idle keep-alive connection is closed by the client first: httpx drops its idle connections
        # after 5 s (uvicorn's default here too), Go's transport after 90 s. With the server's timer as
        # short as the client's, an export sent as the server closed met a reset (ReadError, the batch
        # lost to a client that does not retry it) — seen beside a CPU hog, where timers fire late.
        timeout_keep_alive=KEEP_ALIVE_S,
    ))
