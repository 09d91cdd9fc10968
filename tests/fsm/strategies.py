"""Hypothesis strategies: random valid definitions and random (often hostile) turns."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from fsm.loader import parse_definition
from schemas.definition import AgentDefinition
from schemas.turn import TurnDecision

KEY_TYPES: dict[str, dict[str, Any]] = {
    "text": {"type": "string", "maxLength": 12},
    "count": {"type": "integer", "minimum": 0, "maximum": 9},
    "flag": {"type": "boolean"},
    "choice": {"type": "string", "enum": ["a", "b"]},
    "score": {"type": "number"},
}
KEYS = list(KEY_TYPES)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=15),
    st.sampled_from(["a", "b", "c"]),
    st.lists(st.integers(0, 3), max_size=2),
)

comparisons = st.builds(
    lambda op, key, value: {op: [{"var": key}, value]},
    st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
    st.sampled_from(KEYS + ["_step", "_visits.s0"]),
    st.one_of(st.integers(0, 9), st.sampled_from(["a", "b"]), st.booleans()),
)
guards = st.recursive(
    comparisons,
    lambda inner: st.one_of(
        st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda x: {"!": x}, inner),
    ),
    max_leaves=4,
)


@st.composite
def definitions(draw: st.DrawFn) -> AgentDefinition:
    """A valid definition: a chain s0 -> ... -> end guarantees reachability and an
    exit from every state; random extra transitions, guards and gates on top."""
    count = draw(st.integers(2, 6))
    ids = [f"s{i}" for i in range(count)]
    states: dict[str, Any] = {}
    for i, state_id in enumerate(ids):
        following = ids[i + 1] if i + 1 < count else "end"
        if i > 0 and draw(st.integers(0, 4)) == 0:
            states[state_id] = {
                "approval": {
                    "on_approve": following,
                    "on_reject": draw(st.sampled_from(ids)),
                    "approvers": draw(st.sampled_from([[], ["alice"]])),
                }
            }
            continue
        transitions = [{"target": following}]
        for _ in range(draw(st.integers(0, 3))):
            transition: dict[str, Any] = {
                "target": draw(st.sampled_from([*ids, "end"])),
                "priority": draw(st.integers(0, 200)),
            }
            if draw(st.booleans()):
                transition["requires"] = draw(st.lists(st.sampled_from(KEYS), max_size=2))
            if draw(st.booleans()):
                transition["when"] = draw(guards)
            transitions.append(transition)
        draw(st.randoms()).shuffle(transitions)
        state: dict[str, Any] = {
            "collects": draw(st.lists(st.sampled_from(KEYS), max_size=3, unique=True)),
            "transitions": transitions,
        }
        if draw(st.booleans()):
            state["sees"] = draw(st.lists(st.sampled_from(KEYS), max_size=2, unique=True))
        if draw(st.integers(0, 3)) == 0:
            state["allow_stay"] = False
        states[state_id] = state
    states["end"] = {"terminal": True}
    data = {
        "name": "generated",
        "initial_state": "s0",
        "max_steps": draw(st.integers(1, 8)),
        "context": KEY_TYPES,
        "states": states,
    }
    return parse_definition(data, source="generated").definition


@st.composite
def turns(draw: st.DrawFn, definition: AgentDefinition) -> TurnDecision:
    """A turn that may target anything and write anything, legal or not."""
    target = draw(st.sampled_from([*definition.states, "nowhere", "END"]))
    keys = st.sampled_from([*KEYS, "_state", "_step", "undeclared"])
    update = draw(st.dictionaries(keys, values, max_size=3))
    return TurnDecision(target_state=target, context_update=update)
