"""Every `fsmflow` command that talks to Temporal: its happy path and its one-line
error on bad input, run as a user runs it (a subprocess)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from schemas.run import TraceEntry
from tests.conftest import EXAMPLES, ROOT, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.workflows.helpers import research_publish, research_to_the_gate, wait_for_status
from workers.settings import Settings


async def fsmflow(
    env: WorkflowEnvironment,
    settings: Settings,
    *args: str,
    stdin: str = "",
    address: str | None = None,
) -> tuple[int, str, str]:
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": address or env.client.service_client.config.target_host,
        "FSMFLOW_TASK_QUEUE": settings.task_queue,
        "FSMFLOW_AGENTS_DIR": str(EXAMPLES),
        "FSMFLOW_UI_URL": "http://ui.test",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "workers",
        *args,
        cwd=ROOT,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin.encode())
    return process.returncode or 0, out.decode(), err.decode()


def one_line_error(code: int, err: str) -> str:
    assert code != 0
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


async def test_run_send_status_trace_and_ls(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Hi Ada, your email?", name="Ada"),
        say("cancelled", "Stopped.", cancelled=True),
    )
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        code, out, _ = await fsmflow(
            temporal_env,
            settings,
            "run",
            "contact_form",
            "--id",
            workflow_id,
            "--input",
            '{"context": {}}',
        )
        assert code == 0 and out.splitlines() == [
            f"started {workflow_id}",
            f"http://ui.test/namespaces/default/workflows/{workflow_id}",
        ]
        code, out, _ = await fsmflow(temporal_env, settings, "send", workflow_id, "I'm Ada")
        # The reply as it streamed, then where it left the run.
        assert code == 0 and out.splitlines() == [
            "< Hi Ada, your email?",
            "[ask_email · active · step 1]",
        ]
        code, out, _ = await fsmflow(temporal_env, settings, "status", workflow_id)
        assert code == 0 and "state ask_email, active, step 1/30, waiting for message" in out
        code, out, _ = await fsmflow(
            temporal_env, settings, "ls", "--state", "ask_email", "--limit", "500"
        )
        assert code == 0 and out.startswith("WORKFLOW ID") and workflow_id in out
        await fsmflow(temporal_env, settings, "send", workflow_id, "stop please")
    # No worker is running now: the trace is rebuilt from the history.
    code, out, _ = await fsmflow(temporal_env, settings, "trace", workflow_id)
    assert code == 0
    lines = out.strip().splitlines()
    assert len(lines) == 2
    assert "turn       ask_name -> ask_email  ok" in lines[0]
    assert "ask_email -> cancelled  ok" in lines[1]


async def test_a_resent_message_and_failed_runs(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(model_name, say("ask_email", "Hi Ada, your email?", name="Ada"))
    chat = f"cli-{uuid.uuid4().hex[:8]}"
    failing = f"cli-{uuid.uuid4().hex[:8]}"
    definition = {
        "name": "strict",
        "initial_state": "ask",
        "states": {
            "ask": {"on_invalid": "fail", "transitions": [{"target": "done"}]},
            "done": {"terminal": True},
        },
    }
    async with running_worker(client, settings):
        await fsmflow(temporal_env, settings, "run", "contact_form", "--id", chat)
        sent = [
            await fsmflow(temporal_env, settings, "send", chat, "I'm Ada", "--id", "m-1")
            for _ in range(2)
        ]
        llm.script(model_name, *[{"content": "nonsense"}] * 3)
        started = asyncio.create_task(
            fsmflow(
                temporal_env,
                settings,
                "run",
                "strict",
                "--id",
                failing,
                "--wait",
                "--input",
                json.dumps({"definition": definition, "agent": None}),
            )
        )
        await asyncio.sleep(1.0)
        await fsmflow(temporal_env, settings, "send", failing, "hello")
        code, out, err = await asyncio.wait_for(started, timeout=60)
        for _ in range(50):
            listed = await fsmflow(temporal_env, settings, "ls", "--status", "failed")
            if failing in listed[1]:
                break
            await asyncio.sleep(0.2)
        bad = await fsmflow(temporal_env, settings, "ls", "--status", "broken")
    # The same --id twice: one turn, the same reply (streamed once, then answered
    # from memory: printed the same).
    assert sent[0] == sent[1] and sent[0][0] == 0
    assert sent[0][1] == "< Hi Ada, your email?\n[ask_email · active · step 1]\n"
    # A failed run: --wait prints its result, then the reason, and exits 1.
    assert code == 1 and '"status": "failed"' in out
    assert one_line_error(code, err).startswith(f"fsmflow: run {failing} failed: in state 'ask'")
    assert listed[0] == 0 and failing in listed[1] and chat not in listed[1]
    assert "OUTCOME  WORKFLOW" in listed[1].splitlines()[0]
    assert bad[0] != 0 and "invalid choice: 'broken'" in bad[2]


async def test_run_wait_prints_the_result(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(model_name, *research_to_the_gate(), *research_publish())
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}"
    async with running_worker(client, settings):
        waiting = asyncio.create_task(
            fsmflow(
                temporal_env,
                settings,
                "run",
                "research",
                "--id",
                workflow_id,
                "--input",
                '{"task": "FSMs"}',
                "--wait",
            )
        )
        handle = client.get_workflow_handle(workflow_id)
        await wait_for_status(handle, lambda s: s.status == "awaiting_approval")
        code, out, err = await fsmflow(
            temporal_env, settings, "approve", workflow_id, "--by", "alice", "--comment", "ok"
        )
        assert code == 0, err
        assert out.strip() == "approved by alice: now in publish (active)"
        code, out, _ = await waiting
    assert code == 0 and '"state": "published"' in out
    # The trace, rebuilt from the history, shows each tool call by name.
    code, out, _ = await fsmflow(temporal_env, settings, "trace", workflow_id)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 9
    assert "  0  tool_call  research: search_corpus  ok (ok, " in lines[0]
    assert "  7  tool_call  publish: publish_article  ok (ok, " in lines[7]


async def test_reject_and_chat(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Your email?", name="Ada"),
        say("ask_phone", "Your phone?", email="ada@example.com"),
    )
    async with running_worker(client, settings):
        code, out, err = await fsmflow(
            temporal_env, settings, "chat", "contact_form", stdin="I'm Ada\nada@example.com\n\n"
        )
    assert code == 0, err
    # Where the run is, and the agent's greeting, before the first prompt.
    greeting = "Hello! I'll take your details for a call-back. What's your full name?"
    assert f"[contact_form · ask_name · active · step 0/30]\n< {greeting}\nType a message" in out
    assert "> < Your email?\n[ask_email · active · step 1]\n" in out
    assert "> < Your phone?\n[ask_phone · active · step 2]\n" in out
    # The greeting is the dialogue's first message: the model reads it.
    first = llm.requests(model_name)[0]["messages"]
    assert {"role": "assistant", "content": greeting} in first
    # Leaving says the run is still open and how to go on.
    workflow_id = out.split()[1]
    assert out.endswith(
        f"The run {workflow_id} is still open: go on with `fsmflow chat {workflow_id}`, see it "
        f"with `fsmflow status {workflow_id}`, or end it with `temporal workflow terminate "
        f"--workflow-id {workflow_id}`.\n"
    )
    # Coming back shows where it is and the agent's last message; an ended run is
    # said so, with no prompt.
    async with running_worker(client, settings):
        code, again, err = await fsmflow(temporal_env, settings, "chat", workflow_id, stdin="\n")
        await client.get_workflow_handle(workflow_id).terminate(reason="test over")
        code_ended, ended, _ = await fsmflow(
            temporal_env, settings, "chat", workflow_id, stdin="hi\n"
        )
    assert code == 0, err
    assert again.startswith("[contact_form · ask_phone · active · step 2/30]\n< Your phone?\n")
    assert code_ended == 0 and ended == f"! run '{workflow_id}' has ended (terminated: test over)\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("send", "no-such-run", "hi"), "fsmflow: message refused: no workflow 'no-such-run'"),
        (("status", "no-such-run"), "fsmflow: no workflow 'no-such-run'"),
        (("trace", "no-such-run"), "fsmflow: no workflow 'no-such-run'"),
        (("approve", "no-such-run"), "fsmflow: approve refused: no workflow 'no-such-run'"),
        (("run", "contact_form", "--input", "{bad json"), "fsmflow: invalid --input: not JSON"),
        (
            ("run", "contact_form", "--input", '{"contxt": {}}'),
            "fsmflow: invalid --input: contxt: Extra inputs are not permitted",
        ),
        (("ls", "--state", "x' OR 1=1"), "fsmflow: invalid --state"),
        (("chat", "no_such_agent_or_run"), "fsmflow: 'no_such_agent_or_run' is neither an agent"),
    ],
)
async def test_clear_one_line_errors(
    temporal_env: WorkflowEnvironment, settings: Settings, args: tuple[str, ...], expected: str
) -> None:
    code, _, err = await fsmflow(temporal_env, settings, *args)
    assert one_line_error(code, err).startswith(expected)


async def test_unreachable_server(temporal_env: WorkflowEnvironment, settings: Settings) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = await fsmflow(temporal_env, settings, "status", "x", address=f"127.0.0.1:{port}")
    assert one_line_error(code, err).startswith(
        f"fsmflow: cannot reach Temporal at 127.0.0.1:{port}"
    )


@pytest.mark.parametrize("decision", ["approve", "reject"])
async def test_a_decision_before_a_gate_opens_is_refused(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
    decision: str,
) -> None:
    async with running_worker(client, settings):
        code, out, _ = await fsmflow(temporal_env, settings, "run", "contact_form")
        workflow_id = out.split()[1]
        handle = client.get_workflow_handle(workflow_id)
        await wait_for_status(handle, lambda s: True)
        code, _, err = await fsmflow(temporal_env, settings, decision, workflow_id)
        after = await wait_for_status(handle, lambda s: True)
        trace = await handle.query("trace", result_type=list[TraceEntry])
        await handle.terminate("test over")
    assert code == 1
    assert one_line_error(code, err) == (
        f"fsmflow: {decision} refused: no approval gate is open (state 'ask_name', active)"
    )
    # Refused before it reached the history: nothing recorded, the run where it was.
    assert trace == [] and (after.state, after.status) == ("ask_name", "active")


@pytest.mark.parametrize(
    "command",
    [
        "check",
        "schema",
        "diagram",
        "import",
        "worker",
        "run",
        "chat",
        "send",
        "approve",
        "reject",
        "status",
        "wait",
        "trace",
        "ls",
        "dev",
        "demo",
        "api",
    ],
)
async def test_every_command_has_help(
    temporal_env: WorkflowEnvironment, settings: Settings, command: str
) -> None:
    code, out, _ = await fsmflow(temporal_env, settings, command, "--help")
    assert code == 0 and out.startswith(f"usage: fsmflow {command}")


async def test_model_and_user_text_is_printed_with_its_controls_escaped(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    # Clear the screen, retitle the window, overwrite the line, a C1 CSI, a bidi override.
    hostile = "Hi\x1b[2J\x1b]0;pwned\x07 Ada\rX\x9b31m\u202e"
    llm.script(
        model_name,
        # Rejected (no such state): the trace shows the reason, which quotes the model.
        {"content": json.dumps({**say("x")["turn"], "target_state": "ask_\x1b[2Jemail"})},
        say("ask_email", hostile + "\r\nYour email?", name="Ada"),
        say("cancelled", "Stopped.", cancelled=True),
    )
    workflow_id = f"cli-{uuid.uuid4().hex[:8]}\x1b]0;id\x07"
    async with running_worker(client, settings):
        started = await fsmflow(temporal_env, settings, "run", "contact_form", "--id", workflow_id)
        sent = await fsmflow(temporal_env, settings, "send", workflow_id, "I'm Ada")
        status = await fsmflow(temporal_env, settings, "status", workflow_id)
        await fsmflow(temporal_env, settings, "send", workflow_id, "stop please")
    traced = await fsmflow(temporal_env, settings, "trace", workflow_id)
    missing = await fsmflow(temporal_env, settings, "status", "no-such-run\x1b[2J")
    for code, out, err in (started, sent, status, traced, missing):
        assert not set(out + err) & set("\x1b\x07\r\x9b\u202e"), (out, err)
        assert code == (1 if err else 0), err
    # The reply keeps its lines (indented); everything else is one line per entry.
    # Streamed piece by piece, printed exactly as the whole reply would be.
    assert sent[1] == (
        "< Hi\\x1b[2J\\x1b]0;pwned\\x07 Ada\\rX\\x9b31m\\u202e\n"
        "    Your email?\n"
        "[ask_email · active · step 1]\n"
    )
    shown_id = workflow_id.replace("\x1b", "\\x1b").replace("\x07", "\\x07")
    assert started[1].splitlines()[0] == f"started {shown_id}"
    assert status[1].startswith(f"{shown_id}: agent contact_form v1, state ask_email")
    assert "ask_name -> -  rejected: " in traced[1] and "ask_\\x1b[2Jemail" in traced[1]
    assert missing[2].startswith("fsmflow: no workflow 'no-such-run\\x1b[2J'")
