"""Why a deploy operation is refused, as exceptions the API edge renders and the scenario runner catches.

Each is a :mod:`devbox.platform.errors` exception (the listener turns it into
``{"error": code, "reason": reason}`` with its status) and also what
:class:`~devbox.platform.ports.DeployView` promises its callers (:class:`UnknownInstance` for no
such thing, :class:`PortError` for "not now"), which are ``KeyError``/``ValueError`` as before.
"""

from __future__ import annotations

from devbox.platform.errors import Conflict, NotFound, Unprocessable
from devbox.platform.ports import PortError, UnknownInstance


class DeployError(Unprocessable, PortError):
    """A step of the pipeline failed; ``str()`` says which and quotes the output that explains it."""

    code = "deploy failed"

    def __init__(self, service: str, message: str, tail: list[str] | None = None) -> None:
        self.service = service
        self.tail = tail or []
        text = f"{service}: {message}"
        if self.tail:
            text += "\n" + "\n".join(f"  | {line}" for line in self.tail)
        super().__init__(text, detail={"tail": self.tail})


class NotDeployed(NotFound, UnknownInstance):
    """No such service, deployment or instance."""

    code = "not found"


class NotPossibleNow(Conflict, PortError, ValueError):
    """The instance or deployment is not in a state that allows the operation (or the input is unknown)."""

    code = "not possible now"
