"""What the CLI says about how runs end, and what it refuses before starting one:
run as a user runs it (a subprocess) against the real dev server and worker."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from temporalio.client import Client, WorkflowFailureError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from tests.conftest import EXAMPLES, running_worker
from tests.llm_server import ScriptedLlm, move, say
from tests.test_cli_commands import fsmflow, one_line_error
from tests.workflows.helpers import send, start
from workers.settings import Settings

REVIEW_LOOP = yaml.safe_load((Path(__file__).parent / "workflows" / "review_loop.yaml").read_text())
AGENTS = "callback, contact_form, research, support"


def inline(definition: dict[str, Any], **changes: Any) -> str:
    """A ``--input`` that runs ``definition`` inline."""
    return json.dumps({"definition": {**definition, **changes}, "agent": None, "task": "FSMs"})


async def listed(env: WorkflowEnvironment, settings: Settings, *ids: str) -> dict[str, list[str]]:
    """``fsmflow ls`` rows (split on blanks) of ``ids``, once the visibility store has them all."""
    rows: dict[str, list[str]] = {}
    for _ in range(100):
        code, out, err = await fsmflow(env, settings, "ls", "--limit", "1000")
        assert code == 0, err
        lines = out.splitlines()
        rows = {line.split()[0]: line.split() for line in lines[1:] if line.split()[0] in ids}
        # Closed runs only: the row is final once the workflow is no longer running.
        if len(rows) == len(ids) and all(row[-3] != "running" for row in rows.values()):
            assert lines[0].split()[:7] == [
                "WORKFLOW",
                "ID",
                "AGENT",
                "STATE",
                "APPROVAL",
                "OUTCOME",
                "WORKFLOW",
            ]
            return rows
        await asyncio.sleep(0.2)
    raise AssertionError(f"not listed as closed: {ids}; last: {rows}")


async def test_run_and_chat_refuse_an_unknown_agent_or_context_and_start_nothing(
    temporal_env: WorkflowEnvironment, client: Client, settings: Settings
) -> None:
    refused = f"cli-{uuid.uuid4().hex[:8]}"
    cases = [
        (
            ("run", "contact_from", "--id", refused),
            f"fsmflow: agent 'contact_from' is not in '{EXAMPLES}' (agents: {AGENTS}); "
            "did you mean 'contact_form'?",
        ),
        (
            ("run", "contact_form", "--id", refused, "--input", '{"context": {"emial": "a@b.c"}}'),
            "fsmflow: invalid --input for 'contact_form': context key 'emial' is not declared; "
            "did you mean 'email'? (declared: ",
        ),
        (
            ("run", "contact_form", "--id", refused, "--input", '{"context": {"name": 42}}'),
            "fsmflow: invalid --input for 'contact_form': value 42 for key 'name' does not fit "
            "its declaration",
        ),
        (
            ("chat", "contact_form", "--input", '{"context": {"emial": "a@b.c"}}'),
            "fsmflow: invalid --input for 'contact_form': context key 'emial' is not declared",
        ),
        (
            ("chat", "contact_from"),
            "fsmflow: 'contact_from' is neither an agent in ",
        ),
    ]
    results = [await fsmflow(temporal_env, settings, *args, stdin="hi\n") for args, _ in cases]
    for (args, expected), (code, out, err) in zip(cases, results, strict=True):
        assert code == 1, (args, err)
        assert one_line_error(code, err).startswith(expected), (args, err)
        assert "started" not in out, (args, out)
    assert results[-1][2].strip().endswith(f"(agents: {AGENTS}); did you mean 'contact_form'?")
    with pytest.raises(RPCError) as missing:
        await client.get_workflow_handle(refused).describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    # Nothing else started on this test's task queue either: a run started after the
    # refusals is, once the visibility store lists it, the only one there.
    sentinel = await start(client, settings, agent="contact_form")
    query = f"TaskQueue = '{settings.task_queue}'"
    for _ in range(100):
        ids = [execution.id async for execution in client.list_workflows(query)]
        if sentinel.id in ids:
            break
        await asyncio.sleep(0.2)
    await sentinel.terminate("test over")
    assert ids == [sentinel.id]


async def test_how_runs_ended_in_status_ls_send_approve_and_run_wait(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        move("write", notes="- FSMs bound what an agent may do"),
        move("review", draft="Draft one."),
        say("cancelled", "Stopped.", cancelled=True),
    )
    bounded = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        ran = await fsmflow(
            temporal_env,
            settings,
            "run",
            "review_loop",
            "--id",
            bounded,
            "--wait",
            "--input",
            inline(REVIEW_LOOP, max_steps=2),
        )
        # Past the CLI's own check (started directly), refused by the worker.
        refused = await start(client, settings, agent="nosuchagent")
        with pytest.raises(WorkflowFailureError):
            await refused.result()
        done = await start(client, settings, agent="contact_form")
        await send(done, "stop please")
        await done.result()
    # A run that ended on max_steps is no success: exit 3, the end reason printed.
    code, out, err = ran
    assert code == 3 and '"status": "max_steps"' in out
    assert one_line_error(code, err) == (
        f"fsmflow: run {bounded} ended without completing "
        "(max_steps: max_steps (2) reached in state 'review')"
    )
    # With no worker running, each run's end is read from its history.
    statuses = [
        await fsmflow(temporal_env, settings, "status", workflow_id)
        for workflow_id in (bounded, refused.id, done.id)
    ]
    assert all(code == 0 for code, _, _ in statuses), statuses
    first, reason = statuses[0][1].splitlines()[:2]
    assert first.startswith(f"{bounded}: ended max_steps, agent review_loop, state review, step 2,")
    assert reason == "  ended: max_steps (2) reached in state 'review'"
    assert statuses[1][1].splitlines()[0] == (
        f"{refused.id}: ended failed: definition refused: agent 'nosuchagent' is not in "
        f"'{EXAMPLES}' (agents: {AGENTS})"
    )
    assert (
        statuses[2][1]
        .splitlines()[0]
        .startswith(f"{done.id}: ended completed, agent contact_form, state cancelled, step 1")
    )
    assert "no worker answered" not in "".join(out for _, out, _ in statuses)
    # A message or decision to an ended run says so; an unknown id still says no such run.
    sent = await fsmflow(temporal_env, settings, "send", done.id, "hello again")
    approved = await fsmflow(temporal_env, settings, "approve", bounded, "--by", "alice")
    unknown = await fsmflow(temporal_env, settings, "send", f"no-{bounded}", "hello")
    assert one_line_error(sent[0], sent[2]).startswith(
        f"fsmflow: run '{done.id}' has ended (completed: "
    )
    assert one_line_error(approved[0], approved[2]) == (
        f"fsmflow: run '{bounded}' has ended (max_steps: max_steps (2) reached in state 'review')"
    )
    assert one_line_error(unknown[0], unknown[2]).startswith(
        f"fsmflow: message refused: no workflow 'no-{bounded}'"
    )
    # Waiting for a status a run never reached: exit 1 if it failed, 3 if it ended otherwise.
    waited_failed = await fsmflow(
        temporal_env, settings, "wait", refused.id, "--until", "completed"
    )
    waited_done = await fsmflow(
        temporal_env, settings, "wait", done.id, "--until", "awaiting_approval,max_steps"
    )
    waited_end = await fsmflow(temporal_env, settings, "wait", bounded, "--until", "ended")
    assert waited_failed[0] == 1 and one_line_error(*waited_failed[::2]).startswith(
        f"fsmflow: run '{refused.id}' has ended (failed: definition refused: "
    )
    assert waited_done[0] == 3 and one_line_error(*waited_done[::2]).endswith(
        "), not awaiting_approval or max_steps"
    )
    assert waited_end[0] == 0 and waited_end[1].startswith(f"{bounded}: ended max_steps")
    # The list shows each outcome, and Temporal's status under its own name.
    rows = await listed(temporal_env, settings, bounded, refused.id, done.id)
    # (An empty APPROVAL cell is no word: OUTCOME and WORKFLOW come right after STATE.)
    # A run out of steps did not finish: its workflow closed failed (AgentRunStopped).
    assert rows[bounded][1:5] == ["review_loop", "review", "max_steps", "failed"]
    assert rows[refused.id][1:5] == ["nosuchagent", "-", "failed", "failed"]
    assert rows[done.id][1:5] == ["contact_form", "cancelled", "completed", "completed"]


async def test_wait_for_a_gate_reject_and_a_terminated_run(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        move("write", notes="- FSMs bound what an agent may do"),
        move("review", draft="Draft one."),
        move("publish_gate", verdict="approve"),
    )
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        code, _, err = await fsmflow(
            temporal_env, settings, "run", "x", "--id", workflow_id, "--input", inline(REVIEW_LOOP)
        )
        assert code == 0, err
        gate = await fsmflow(
            temporal_env,
            settings,
            *("wait", workflow_id, "--until", "awaiting_approval", "--timeout", "120"),
        )
    # With no worker, the search attributes say where the run is.
    still = await fsmflow(
        temporal_env, settings, "wait", workflow_id, "--until", "awaiting_approval"
    )
    timed_out = await fsmflow(
        temporal_env, settings, "wait", workflow_id, "--until", "completed", "--timeout", "1"
    )
    async with running_worker(client, settings):
        rejected = await fsmflow(temporal_env, settings, "reject", workflow_id, "--by", "bob")
        await client.get_workflow_handle(workflow_id).terminate(reason="changed my mind")
    status = await fsmflow(temporal_env, settings, "status", workflow_id)
    assert gate == (0, f"{workflow_id}: awaiting_approval in state publish_gate\n", "")
    assert still == gate
    assert timed_out[0] == 4 and one_line_error(*timed_out[::2]) == (
        f"fsmflow: run '{workflow_id}' is still awaiting_approval in state publish_gate "
        "after 1s (waited for completed)"
    )
    assert rejected[0] == 0 and rejected[1].startswith("rejected by bob: now in ")
    assert status[0] == 0
    assert status[1].splitlines()[0].startswith(f"{workflow_id}: ended terminated in state ")
    assert status[1].splitlines()[0].endswith(": changed my mind")
    rows = await listed(temporal_env, settings, workflow_id)
    assert rows[workflow_id][3:5] == ["terminated", "terminated"]


async def test_run_wait_exit_codes_are_in_the_help(
    temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    run_help = await fsmflow(temporal_env, settings, "run", "--help")
    wait_help = await fsmflow(temporal_env, settings, "wait", "--help")
    bad = await fsmflow(temporal_env, settings, "wait", "x", "--until", "awaiting_aproval")
    assert "3 it ended another way: max_steps" in " ".join(run_help[1].split())
    assert "4 the timeout passed" in " ".join(wait_help[1].split())
    assert bad[0] == 2 and "'awaiting_aproval' is not a status" in bad[2]
