"""Why a faults operation is refused: :mod:`devbox.platform.errors` exceptions the API edge renders,
which are also the :class:`~devbox.platform.ports.PortError` that :class:`~devbox.platform.ports.FaultFront`
promises its callers (and the ``KeyError``/``ValueError`` they caught before)."""

from __future__ import annotations

from devbox.platform.errors import BadRequest, Conflict, NotFound, Unavailable
from devbox.platform.ports import PortError, UnknownInstance


class InvalidFault(BadRequest, PortError, ValueError):
    """A fault rule that does not validate; the reason lists every problem."""

    code = "invalid fault"


class UnknownFault(NotFound, PortError, KeyError):
    code = "unknown fault"


class UnknownTarget(NotFound, UnknownInstance):
    """No such instance (in naming, or behind a fault proxy)."""

    code = "unknown instance"


class NamingAbsent(Unavailable, PortError):
    """Naming is not hosted: there are no heartbeats to drop."""


class FaultsDisabled(Conflict, PortError):
    """``faults.enabled`` is false: a rule would have no proxy to act in."""

    code = "faults disabled"


class EntryPortTaken(Conflict, PortError):
    """The ``port:`` asked for a service's entry is in use."""

    code = "entry port taken"
