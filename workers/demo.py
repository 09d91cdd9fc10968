"""``fsmflow demo``: the examples end to end on the running stack.

1. The research agent is started from the Temporal CLI (``temporal workflow
   start``), its state changes are printed as they happen, and its approval gate
   is approved with ``temporal workflow signal``.
2. A short conversation with the call-back form (``examples/callback.yaml``): a
   scripted user answers its questions, every turn printed with the state it
   left the run in; the form moves by itself (``always:``) as fields are known.
3. Every trace is checked: each applied move is one the table allows.

The embedded model is tiny; the demo shows that the structure holds whatever it
says (a weak model gets re-asked, or the run ends in a defined way).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from typing import Any, TextIO

from temporalio.client import Client

from activities.definitions import load_agents
from fsm.checks import successors
from schemas.definition import AgentDefinition
from schemas.run import TraceEntry
from schemas.workflow import AgentResult, AgentStatus
from workers.binaries import temporal_cli
from workers.client import run_result, send_message
from workers.commands import CommandError, _client, format_entry, reply_text, ui_link
from workers.settings import Settings
from workers.text import printable

TASK = "Write a short article on why LLM agents benefit from finite state machines."
MESSAGES = [
    "My name is Ada Lovelace.",
    "ada@example.com",
    "+44 20 7946 0018",
    "Yes, that's all correct.",
]
"""The scripted user of the call-back form: the happy path."""


def illegal_moves(definition: AgentDefinition, trace: list[TraceEntry]) -> list[TraceEntry]:
    """Applied entries that no transition, approval edge or stay allows.

    An executed tool call is illegal when its state does not list the tool.
    """
    wrong = []
    for entry in trace:
        if not entry.accepted or entry.to_state is None:
            continue
        listed = definition.states[entry.from_state].tools
        if entry.kind == "tool_call" and entry.tool not in listed:
            wrong.append(entry)
            continue
        targets = {entry.from_state, *successors(definition.states[entry.from_state])}
        if entry.to_state not in targets:
            wrong.append(entry)
    return wrong


def _temporal(settings: Settings, *args: str) -> str:
    command = [
        str(temporal_cli()),
        *args,
        "--address",
        settings.temporal_address,
        "--namespace",
        settings.temporal_namespace,
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
    if result.returncode != 0:
        raise CommandError(f"temporal {' '.join(args[:2])} failed: {result.stderr.strip()}")
    return result.stdout


async def _watch(
    client: Client, workflow_id: str, out: TextIO, timeout: float = 600
) -> AgentStatus:
    """Print state changes until the run waits for approval or ends."""
    handle = client.get_workflow_handle(workflow_id)
    last = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = await handle.query("status", result_type=AgentStatus)
        except Exception:  # noqa: BLE001 - not started yet
            await asyncio.sleep(0.3)
            continue
        key = (status.state, status.fsm_status)
        if key != last:
            line = f"    state: {status.state:<14} {status.fsm_status:<18} step {status.step}"
            out.write(printable(line) + "\n")
            if status.waiting_since is not None:
                failed = f"    ({status.model_failures} failed: {status.last_error})"
                out.write(printable(failed) + "\n")
            out.flush()
            last = key
        if status.status != "active":
            return status
        await asyncio.sleep(0.3)
    raise CommandError(f"{workflow_id} did not reach its gate or end within {timeout:.0f}s")


async def _first_status(client: Client, workflow_id: str, timeout: float = 60) -> AgentStatus:
    """The run's status once it has started (it resolves its definition first)."""
    handle = client.get_workflow_handle(workflow_id)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await handle.query("status", result_type=AgentStatus)
        except Exception:  # noqa: BLE001 - not started yet
            if time.monotonic() >= deadline:
                raise CommandError(f"{workflow_id} did not start within {timeout:.0f}s") from None
            await asyncio.sleep(0.2)


def _print_trace(trace: list[TraceEntry], out: TextIO) -> None:
    for entry in trace:
        out.write("    " + format_entry(entry) + "\n")


async def research(settings: Settings, client: Client, out: TextIO) -> list[TraceEntry]:
    """Start the research agent with the Temporal CLI, follow it, approve its gate."""
    workflow_id = f"demo-research-{uuid.uuid4().hex[:6]}"
    payload = json.dumps({"agent": "research", "task": TASK})
    out.write(
        f"\n== research agent (autonomous), started with the Temporal CLI\n"
        f"$ temporal workflow start --type AgentWorkflow --task-queue {settings.task_queue} "
        f"--workflow-id {workflow_id} --input '{payload}'\n"
    )
    _temporal(
        settings,
        "workflow",
        "start",
        "--type",
        "AgentWorkflow",
        "--task-queue",
        settings.task_queue,
        "--workflow-id",
        workflow_id,
        "--input",
        payload,
    )
    status = await _watch(client, workflow_id, out)
    if status.status == "awaiting_approval":
        decision = json.dumps({"by": "demo", "comment": "approved by the demo"})
        out.write(
            f"$ temporal workflow signal --workflow-id {workflow_id} --name approve "
            f"--input '{decision}'\n"
        )
        _temporal(
            settings,
            "workflow",
            "signal",
            "--workflow-id",
            workflow_id,
            "--name",
            "approve",
            "--input",
            decision,
        )
    result = await run_result(client.get_workflow_handle(workflow_id, result_type=AgentResult))
    ended = (
        f"    ended: {result.status} in {result.state} ({result.end_reason}); "
        f"{result.total_tokens} tokens"
    )
    out.write(printable(ended) + "\n")
    _print_trace(result.trace, out)
    out.write(f"    Web UI: {ui_link(settings, workflow_id)}\n")
    return result.trace


async def form(settings: Settings, client: Client, out: TextIO) -> list[TraceEntry]:
    """A short conversation with the call-back form, each turn printed."""
    workflow_id = f"demo-callback-{uuid.uuid4().hex[:6]}"
    out.write("\n== callback agent (conversation; the form moves by itself as fields are known)\n")
    handle = await client.start_workflow(
        "AgentWorkflow", {"agent": "callback"}, id=workflow_id, task_queue=settings.task_queue
    )
    greeting = await _first_status(client, workflow_id)
    if greeting.last_reply:
        said = printable(f"  agent [{greeting.state}]>")
        out.write(f"{said} {reply_text(greeting.last_reply)}\n")
    for text in MESSAGES:
        out.write(f"  user> {text}\n")
        started = time.monotonic()
        reply = await send_message(client, workflow_id, text)
        elapsed = time.monotonic() - started
        flag = "" if reply.accepted else " (fallback: no valid turn)"
        prompt = printable(f"  agent [{reply.state}, {elapsed:.1f}s]{flag}>")
        out.write(f"{prompt} {reply_text(reply.message)}\n")
        if reply.status != "active":
            break
    trace: list[TraceEntry] = await handle.query("trace", result_type=list[TraceEntry])
    _print_trace(trace, out)
    status = await handle.query("status", result_type=AgentStatus)
    path = (
        " -> ".join(
            [
                trace[0].from_state,
                *(
                    e.to_state
                    for e in trace
                    if e.accepted and e.to_state and e.to_state != e.from_state
                ),
            ]
        )
        if trace
        else status.state
    )
    out.write(f"    path: {path}; the run is {status.status} in {status.state}\n")
    if status.status == "active":
        await handle.terminate("demo over")
        out.write("    (the demo ends the conversation here)\n")
    out.write(f"    Web UI: {ui_link(settings, workflow_id)}\n")
    return trace


async def run_demo(settings: Settings, *, out: TextIO) -> int:
    """Run both examples; exit 1 if any applied move was not a legal one."""
    client = await _client(settings)
    agents: dict[str, Any] = load_agents(settings.agents_dir)
    traces = {
        "research": await research(settings, client, out),
        "callback": await form(settings, client, out),
    }
    wrong = [e for name, t in traces.items() for e in illegal_moves(agents[name].definition, t)]
    entries = [e for t in traces.values() for e in t]
    turns = sum(1 for e in entries if e.kind in ("turn", "tool_call"))
    rejected = sum(1 for e in entries if e.kind in ("turn", "tool_call") and not e.accepted)
    tools = sum(1 for e in entries if e.kind == "tool_call" and e.accepted)
    out.write(
        f"\n{turns} model turns, {rejected} rejected and re-asked, {tools} tool calls executed, "
        f"{len(wrong)} illegal moves applied.\n"
    )
    out.write(
        "The same demo on a stronger model (any OpenAI-compatible endpoint): make down, then\n"
        "  OPENAI_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... "
        "FSMFLOW_MODEL_DEFAULT=gpt-4o-mini make demo\n"
    )
    return 1 if wrong else 0
