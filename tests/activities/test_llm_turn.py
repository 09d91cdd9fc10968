"""The llm_turn activity on its own (Temporal's ActivityEnvironment) against the
scripted OpenAI-compatible server over real HTTP: what is retried, what is not,
what a cut-off reply becomes, how reasoning tiers are asked, and the bundle."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.bundles import BundleCache
from activities.llm import LlmActivities, LlmConfig, ModelEndpoint, redact_url
from fsm.engine import start_run
from fsm.judge import bundle_hash
from fsm.loader import load_file
from schemas.activity import AgentBundle, LlmTurnInput
from schemas.run import DialogueTurn
from tests.conftest import EXAMPLES
from tests.llm_server import ScriptedLlm, say

FORM = load_file(EXAMPLES / "form.yaml").definition
DOCUMENT = FORM.model_dump(mode="json")
KEY = bundle_hash(DOCUMENT, {})


def activities(llm: ScriptedLlm, model: str, **options: Any) -> LlmActivities:
    endpoint = ModelEndpoint(model=model, base_url=llm.url, api_key=SecretStr("sk-secret-key"))
    tiers = {"default": dataclasses.replace(endpoint, **options.pop("endpoint", {}))}
    config = LlmConfig(tiers=tiers, timeout_seconds=5.0, **options)
    bundles = BundleCache()
    bundles.add(KEY, AgentBundle(definition=DOCUMENT))
    return LlmActivities(config, bundles)


def turn(**changes: Any) -> LlmTurnInput:
    values: dict[str, Any] = {
        "bundle_hash": KEY,
        "run": start_run(FORM),
        "dialogue": [DialogueTurn(role="user", text="Hi, I'm Ada")],
    }
    values.update(changes)
    return LlmTurnInput(**values)


async def test_a_valid_reply_is_parsed_and_the_prompt_rendered_here(
    llm: ScriptedLlm, model_name: str
) -> None:
    llm.script(model_name, say("ask_email", "Hello Ada", name="Ada"))
    reply = await ActivityEnvironment().run(activities(llm, model_name).llm_turn, turn())
    assert reply.problem is None and reply.parsed is not None
    assert reply.parsed["target_state"] == "ask_email" and reply.content == ""
    request = llm.requests(model_name)[0]
    assert request["messages"][0]["role"] == "system"
    assert request["messages"][-1] == {"role": "user", "content": "Hi, I'm Ada"}
    assert request["response_format"]["json_schema"]["strict"] is True
    assert request["temperature"] == 0 and request["max_tokens"] == 1024


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (401, False),
        (403, False),
        (404, False),
        (400, False),
        (408, True),
        (409, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
async def test_statuses_are_classified(
    llm: ScriptedLlm, model_name: str, status: int, retryable: bool
) -> None:
    llm.script(model_name, {"status": status, "message": "scripted refusal"})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(activities(llm, model_name).llm_turn, turn())
    assert info.value.non_retryable is not retryable
    assert info.value.type == ("LlmUnavailable" if retryable else "LlmRequestRejected")
    assert f"answered {status}: " in info.value.message
    assert "sk-secret-key" not in info.value.message


async def test_a_cut_off_reply_is_a_problem_to_re_ask_not_an_error(
    llm: ScriptedLlm, model_name: str
) -> None:
    llm.script(model_name, {"finish_reason": "length", "content": '{"reasoning": "very lo'})
    reply = await ActivityEnvironment().run(activities(llm, model_name).llm_turn, turn())
    assert reply.problem_kind == "truncated" and reply.parsed is None
    assert reply.problem is not None and "reply again, shorter" in reply.problem


async def test_a_reasoning_tier_gets_no_temperature(llm: ScriptedLlm, model_name: str) -> None:
    llm.script(model_name, say("ask_email", "Hello", name="Ada"))
    runner = activities(llm, model_name, endpoint={"reasoning_effort": "low"}, max_tokens=2048)
    await ActivityEnvironment().run(runner.llm_turn, turn())
    request = llm.requests(model_name)[0]
    assert "temperature" not in request and "max_tokens" not in request
    assert request["max_completion_tokens"] == 2048 and request["reasoning_effort"] == "low"


async def test_the_fallback_is_asked_when_the_workflow_says_so(
    llm: ScriptedLlm, model_name: str
) -> None:
    backup = ModelEndpoint(model=f"{model_name}-b", base_url=llm.url, api_key=SecretStr("k"))
    runner = activities(llm, model_name, fallbacks={"default": backup})
    llm.script(f"{model_name}-b", say("ask_email", "Hi", name="Ada"))
    reply = await ActivityEnvironment().run(runner.llm_turn, turn(fallback=True))
    assert reply.used_fallback and reply.model == f"{model_name}-b"
    assert llm.requests(model_name) == []


async def test_a_worker_without_the_bundle_asks_for_it(llm: ScriptedLlm, model_name: str) -> None:
    runner = LlmActivities(
        LlmConfig(tiers=activities(llm, model_name)._config.tiers), BundleCache()
    )
    with pytest.raises(ApplicationError) as missing:
        await ActivityEnvironment().run(runner.llm_turn, turn())
    assert missing.value.type == "BundleMissing" and missing.value.non_retryable
    llm.script(model_name, say("ask_email", "Hi", name="Ada"), say("ask_email", "Hi", name="Ada"))
    sent = turn(bundle=AgentBundle(definition=DOCUMENT))
    assert (await ActivityEnvironment().run(runner.llm_turn, sent)).parsed is not None
    # Held from now on: the next turn needs only the hash.
    assert (await ActivityEnvironment().run(runner.llm_turn, turn())).parsed is not None


async def test_a_tier_this_worker_lacks_is_named(llm: ScriptedLlm, model_name: str) -> None:
    runner = activities(llm, model_name)
    capable = FORM.model_copy(
        update={
            "states": {
                **FORM.states,
                "ask_name": FORM.states["ask_name"].model_copy(update={"model": "capable"}),
            }
        }
    )
    document = capable.model_dump(mode="json")
    runner._bundles.add("capable", AgentBundle(definition=document))
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(runner.llm_turn, turn(bundle_hash="capable"))
    assert info.value.type == "UnknownTier" and "set FSMFLOW_MODEL_CAPABLE" in info.value.message


def test_urls_lose_their_credentials() -> None:
    assert redact_url("https://user:pw@api.example.com:8443/v1?key=s") == (
        "https://***@api.example.com:8443/v1"
    )
    assert redact_url("http://127.0.0.1:8088/v1") == "http://127.0.0.1:8088/v1"


async def test_a_refused_request_goes_to_the_fallback_at_once(
    llm: ScriptedLlm, model_name: str
) -> None:
    backup = ModelEndpoint(model=f"{model_name}-b", base_url=llm.url, api_key=SecretStr("k2"))
    runner = activities(llm, model_name, fallbacks={"default": backup})
    llm.script(model_name, {"status": 401, "message": "invalid api key"})
    llm.script(f"{model_name}-b", say("ask_email", "Hi", name="Ada"))
    reply = await ActivityEnvironment().run(runner.llm_turn, turn())
    assert reply.used_fallback and reply.model == f"{model_name}-b" and reply.parsed is not None
    # Without a fallback the refusal is the answer, not retried.
    llm.script(model_name, {"status": 401, "message": "invalid api key"})
    with pytest.raises(ApplicationError) as info:
        await ActivityEnvironment().run(activities(llm, model_name).llm_turn, turn())
    assert info.value.type == "LlmRequestRejected"
