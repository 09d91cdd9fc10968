"""Turn schemas: the enum of allowed moves, typed and bounded keys, strict shape."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from fsm.context import FORMAT_PATTERNS
from fsm.engine import start_run
from fsm.loader import parse_definition
from fsm.turn_schema import turn_schema
from schemas.activity import ToolInfo
from schemas.definition import DEFAULT_STRING_BOUND, AgentDefinition
from schemas.run import RunState
from tests.fsm.conftest import build


def test_conversation_schema(shop: AgentDefinition) -> None:
    run = RunState(state="collect", context={"email": "a@b.co"}, visits={"collect": 1})
    schema = turn_schema(shop, run)
    Draft202012Validator.check_schema(schema)
    assert schema["required"] == ["reasoning", "context_update", "target_state", "message"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["target_state"]["enum"] == ["bye", "adult", "collect"]
    update = schema["properties"]["context_update"]
    # 'name' is only seen here: not writable, so not in the update.
    assert update["required"] == ["email", "age"]
    assert update["additionalProperties"] is False
    assert update["properties"]["age"] == {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": 150}, {"type": "null"}]
    }
    email = update["properties"]["email"]["anyOf"][0]
    # The format, and a pattern a constrained decoder can enforce.
    assert email == {
        "type": "string",
        "maxLength": DEFAULT_STRING_BOUND,
        "format": "email",
        "pattern": FORMAT_PATTERNS["email"],
    }
    assert schema["properties"]["message"]["maxLength"] == 600
    assert schema["properties"]["reasoning"]["maxLength"] == 100


def test_reasoning_and_reply_bounds_keep_the_reply_small() -> None:
    data = build({"reasoning": "none", "reply_max_length": 200})
    data["states"]["collect"]["reasoning"] = "full"
    data["states"]["greeting"]["reply_max_length"] = 80
    definition = parse_definition(data).definition
    greeting = RunState(state="greeting", visits={"greeting": 1})
    schema = turn_schema(definition, greeting)
    # No reasoning at all; keys, then the move, then the message (the streamed part).
    assert schema["required"] == ["context_update", "target_state", "message"]
    assert schema["properties"]["message"]["maxLength"] == 80
    collect = RunState(state="collect", visits={"collect": 1})
    schema = turn_schema(definition, collect)
    assert schema["properties"]["reasoning"]["maxLength"] == 300
    assert schema["properties"]["message"]["maxLength"] == 200
    # A state that collects nothing has no context_update to write.
    data["states"]["greeting"]["collects"] = []
    definition = parse_definition(data).definition
    assert turn_schema(definition, greeting)["required"] == ["target_state", "message"]


def test_enum_and_array_keys() -> None:
    data = build()
    data["context"]["tags"] = {"type": "array", "items": {"type": "string"}, "maxItems": 3}
    data["states"]["adult"]["collects"].append("tags")
    definition = parse_definition(data).definition
    run = RunState(state="adult", visits={"adult": 1})
    update = turn_schema(definition, run)["properties"]["context_update"]["properties"]
    assert update["plan"]["anyOf"][0] == {
        "type": "string",
        "enum": ["basic", "pro"],
        "maxLength": 200,
    }
    assert update["tags"]["anyOf"][0] == {
        "type": "array",
        "items": {"type": "string", "maxLength": 200},
        "maxItems": 3,
    }


def test_autonomous_schema_with_and_without_tools() -> None:
    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["lookup", "unregistered"]
    definition = parse_definition(data).definition
    run = RunState(state="collect", visits={"collect": 1})
    no_tools = turn_schema(definition, run)
    Draft202012Validator.check_schema(no_tools)
    action = no_tools["properties"]["action"]
    assert action["properties"]["kind"]["enum"] == ["transition"]
    tools = {
        "lookup": ToolInfo(
            parameters={
                "type": "object",
                "properties": {"q": {"type": "string", "maxLength": 50}},
                "required": ["q"],
                "additionalProperties": False,
            }
        )
    }
    schema = turn_schema(definition, run, tools)
    Draft202012Validator.check_schema(schema)
    variants = schema["properties"]["action"]["anyOf"]
    assert [v["properties"]["kind"]["enum"] for v in variants] == [["transition"], ["call_tool"]]
    assert variants[1]["properties"]["tool"]["enum"] == ["lookup"]
    validator = Draft202012Validator(schema)
    call = {"kind": "call_tool", "tool": "lookup", "arguments": {"q": "x"}}
    assert validator.is_valid({"reasoning": "", "action": call})
    assert not validator.is_valid({"reasoning": "", "action": {**call, "tool": "unregistered"}})
    assert not validator.is_valid({"reasoning": "", "action": {**call, "arguments": {}}})


def test_no_schema_when_the_run_takes_no_turn(shop: AgentDefinition) -> None:
    run = RunState(state="gate", status="awaiting_approval")
    with pytest.raises(ValueError, match="takes no turn in state 'gate'"):
        turn_schema(shop, run)
    done = start_run(shop).model_copy(update={"state": "done", "status": "completed"})
    with pytest.raises(ValueError):
        turn_schema(shop, done)


def test_two_transitions_to_one_target_need_only_what_both_need() -> None:
    # Found by hypothesis: the stricter transition must not make a key mandatory
    # when another transition to the same target needs nothing.
    data = build()
    greeting = data["states"]["greeting"]
    greeting["allow_stay"] = False
    greeting["transitions"] = [
        {"target": "collect", "requires": ["name"], "priority": 0},
        {"target": "collect"},
    ]
    definition = parse_definition(data).definition
    run = RunState(state="greeting", visits={"greeting": 1})
    name = turn_schema(definition, run)["properties"]["context_update"]["properties"]["name"]
    assert name["anyOf"][-1] == {"type": "null"}


def test_properties_come_in_the_order_a_streaming_reply_needs(shop: AgentDefinition) -> None:
    # A constrained decoder (llama.cpp's json_schema grammar, OpenAI's structured
    # outputs) writes properties in the schema's order: the keys and the move
    # come complete before the message, so its text can stream once they are
    # judged (activities/streaming.py). The order is the order of "properties"
    # (and of "required", the same list).
    run = RunState(state="collect", visits={"collect": 1})
    schema = turn_schema(shop, run)
    assert list(schema["properties"]) == ["reasoning", "context_update", "target_state", "message"]
    assert schema["required"] == list(schema["properties"])
    data = build({"mode": "autonomous"})
    data["states"]["collect"]["tools"] = ["lookup"]
    definition = parse_definition(data).definition
    tools = {"lookup": ToolInfo(parameters={"type": "object", "properties": {}})}
    schema = turn_schema(definition, run, tools)
    assert list(schema["properties"]) == ["reasoning", "action"]
    transition, call = schema["properties"]["action"]["anyOf"]
    assert list(transition["properties"]) == ["kind", "context_update", "target_state"]
    assert list(call["properties"]) == ["kind", "tool", "arguments"]
