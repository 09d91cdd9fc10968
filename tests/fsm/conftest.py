from __future__ import annotations

import copy
from typing import Any

import pytest

from fsm.loader import parse_definition
from schemas.definition import AgentDefinition

BASE: dict[str, Any] = {
    "name": "shop",
    "initial_state": "greeting",
    "max_steps": 10,
    "context": {
        "name": {"type": "string", "maxLength": 40},
        "email": {"type": "string", "format": "email"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "plan": {"type": "string", "enum": ["basic", "pro"]},
        "agreed": {"type": "boolean"},
        "password": {"type": "string", "secret": True},
    },
    "states": {
        "greeting": {
            "purpose": "Greet the customer.",
            "collects": ["name"],
            "transitions": [
                {"target": "collect", "description": "name known", "requires": ["name"]},
                {"target": "bye", "description": "customer leaves", "priority": 200},
            ],
        },
        "collect": {
            "purpose": "Collect the email and age.",
            "collects": ["email", "age"],
            "sees": ["name"],
            "transitions": [
                {
                    "target": "adult",
                    "requires": ["email"],
                    "when": {">=": [{"var": "age"}, 18]},
                },
                {"target": "bye", "priority": 5},
            ],
        },
        "adult": {
            "collects": ["plan", "agreed", "password"],
            "transitions": [
                {"target": "gate", "when": {"==": [{"var": "agreed"}, True]}},
            ],
        },
        "gate": {
            "approval": {
                "on_approve": "done",
                "on_reject": "adult",
                "approvers": ["alice"],
                "timeout": "1h",
                "on_timeout": "bye",
            }
        },
        "done": {"terminal": True},
        "bye": {"terminal": True},
    },
}


def build(patch: dict[str, Any] | None = None) -> dict[str, Any]:
    """A deep copy of BASE with top-level keys replaced."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(patch or {}))
    return data


@pytest.fixture
def shop() -> AgentDefinition:
    return parse_definition(build(), source="shop.yaml").definition
