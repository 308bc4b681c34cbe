"""A scenario's ``fault:`` step can target one instance of the callee, as ``devbox faults add
--instance`` and ``POST /api/faults`` (FaultSpec.instance) can: by a scenario reference (index,
`random`, a name given by `as:`, metadata) resolved to its naming id, or by its deploy name."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import ValidationError

from devbox.scenario.actions import Actions
from devbox.scenario.model import FaultStep


@dataclass
class _Inst:
    id: str
    metadata: dict[str, str] = field(default_factory=dict)


class _Faults:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def add_rule(self, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append(body)
        return {"id": f"f{len(self.bodies)}"}


def _actions(faults: _Faults) -> Actions:
    """Actions with the platform replaced by two users instances and a recording faults port."""
    actions = Actions.__new__(Actions)
    found = [_Inst("id-b", {"devbox.instance": "users-2", "zone": "b"}), _Inst("id-a", {"devbox.instance": "users-1"})]
    actions.rng, actions.aliases, actions.fault_ids = random.Random(1), {"slow": {"id": "id-b"}}, {}
    actions.log = lambda _text: None
    actions.port = lambda _port, _component: faults  # type: ignore[assignment,method-assign,return-value]
    actions.on_loop = lambda fn, *args: fn(*args)  # type: ignore[method-assign]
    actions.instances = lambda _service: found  # type: ignore[method-assign,assignment,return-value]
    return actions


@pytest.mark.parametrize(("ref", "sent"), [
    (0, "id-a"),  # index, sorted by id
    ("slow", "id-b"),  # a name given by `as:`
    ({"zone": "b"}, "id-b"),  # metadata
    ("users-2", "users-2"),  # the deploy name, as `devbox faults add --instance users-2`
    ("all", None),
    (None, None),
])
def test_fault_step_targets_one_instance(ref: Any, sent: str | None) -> None:
    faults = _Faults()
    target = {} if ref is None else {"instance": ref}
    step = FaultStep.model_validate({"service": "users", "latency_ms": 150, **target})
    _actions(faults).fault(step)
    [body] = faults.bodies
    assert body.get("instance") == sent and body["service"] == "users" and body["latency_ms"] == 150
    if sent is None:
        assert "instance" not in body  # every instance: the spec's default, not an explicit null


def test_fault_step_refuses_an_out_of_range_index() -> None:
    with pytest.raises(Exception, match="2 instance"):
        _actions(_Faults()).fault(FaultStep.model_validate({"service": "users", "instance": 5, "error_rate": 0.5}))


def test_fault_step_still_needs_a_fault() -> None:
    with pytest.raises(ValidationError, match="needs latency_ms"):
        FaultStep.model_validate({"service": "users", "instance": 0})
