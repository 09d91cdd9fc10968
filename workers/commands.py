"""The ``fsmflow`` commands that talk to Temporal.

run, chat, send, approve, reject, status, trace and ls.
Each returns an exit code; expected failures (unknown workflow, unreachable
server, invalid input) raise ``CommandError`` with one line for the user.
Everything printed that came from a model, a user or a definition goes through
``workers.text.printable`` (one line each, but a reply's text keeps its lines).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any, TextIO
from urllib.parse import quote

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.definitions import load_agents
from activities.llm import redact_url
from fsm.problems import validation_problem
from schemas.events import RunEvent
from schemas.run import TraceEntry
from schemas.snapshot import FSM_STATUSES
from schemas.workflow import (
    AgentResult,
    AgentRunInput,
    AgentStatus,
    AgentWorkflowInput,
    DecideInput,
    DecisionResult,
    Reply,
)
from workers.client import connect, run_result
from workers.events import send_streaming
from workers.settings import Settings
from workers.text import printable, printable_json


class CommandError(Exception):
    """A failure to report as one line, with a non-zero exit."""


def explain(error: BaseException, workflow_id: str | None = None) -> str:
    """One line saying what a Temporal error means (the CLI's and the HTTP API's words)."""
    if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND and workflow_id:
        return f"no workflow {workflow_id!r} ({error.message})"
    if isinstance(error, WorkflowUpdateFailedError | WorkflowFailureError):
        cause = error.cause
        return str(getattr(cause, "message", None) or cause or error)
    if isinstance(error, WorkflowQueryFailedError):
        return f"query failed: {error.message}"
    if isinstance(error, RPCError):
        return f"{error.message}"
    return str(error)


def ui_link(settings: Settings, workflow_id: str) -> str:
    """The run's page in the Temporal Web UI (the ids percent-encoded, as in a URL).

    Credentials in ``FSMFLOW_UI_URL`` (user info, a query string) are not shown.
    """
    base = redact_url(settings.ui_url).rstrip("/")
    namespace = quote(settings.temporal_namespace, safe="")
    return printable(f"{base}/namespaces/{namespace}/workflows/{quote(workflow_id, safe='')}")


def parse_input(text: str | None, agent: str) -> AgentRunInput:
    """The ``--input`` JSON merged with the agent name, validated field by field."""
    try:
        data: Any = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise CommandError(f"invalid --input: not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(data, dict):
        raise CommandError('invalid --input: expected a JSON object like {"context": {...}}')
    data.setdefault("agent", agent)
    try:
        return AgentRunInput.model_validate(data)
    except ValidationError as exc:
        raise CommandError(f"invalid --input: {validation_problem(exc, 'input')}") from None


def _handle(client: Client, workflow_id: str) -> WorkflowHandle[Any, AgentResult]:
    return client.get_workflow_handle(workflow_id, result_type=AgentResult)


async def _client(settings: Settings) -> Client:
    try:
        return await connect(settings)
    except RuntimeError as exc:
        raise CommandError(str(exc)) from None


def reply_text(message: str) -> str:
    """A reply's text for the terminal: its lines kept, each after the first indented."""
    return printable(message.rstrip("\r\n"), multiline=True, indent="    ")


class ReplyPrinter:
    """Prints a reply as it streams (``< ...``), then where the run is (``[state ...]``).

    The text is printed as ``reply_text`` prints the whole message (controls
    escaped, later lines indented, trailing line breaks dropped), piece by piece:
    line breaks are held back until text follows them. A ``reset`` ends the line
    with a note (``! ...``) and the reply starts again. When the reply the update
    returned is not what was printed (it did not stream, or not all of it), it is
    printed whole after a note: the last ``< `` block is always the reply.
    """

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._text = ""
        self._held = ""
        self._open = False

    def event(self, event: RunEvent) -> None:
        """Print a ``delta`` (or withdraw what was printed, on ``reset``)."""
        if event.kind == "delta" and event.text:
            if not self._open:
                self._out.write("< ")
                self._open = True
            self._text += event.text
            body = self._held + event.text
            kept = body.rstrip("\r\n")
            self._held = body[len(kept) :]
            if kept:
                self._out.write(printable(kept, multiline=True, indent="    "))
            self._out.flush()
        elif event.kind == "reset" and self._open:
            self._out.write(f"\n! {printable(event.text or 'the reply was withdrawn')}\n")
            self._out.flush()
            self._text, self._held, self._open = "", "", False

    def abandon(self) -> None:
        """End a line left open (the message failed; what streamed stands for nothing)."""
        if self._open:
            self._out.write("\n")
            self._out.flush()
        self._text, self._held, self._open = "", "", False

    def finish(self, reply: Reply) -> None:
        """End with the reply the update returned and where it left the run."""
        if self._open and self._text.rstrip("\r\n") == reply.message.rstrip("\r\n"):
            self._out.write("\n")
        else:
            if self._open:
                self._out.write("\n! the reply, as decided:\n")
            self._out.write(f"< {reply_text(reply.message)}\n")
        self._text, self._held, self._open = "", "", False
        flag = "" if reply.accepted else " (not answered; fallback reply)"
        self._out.write(printable(f"[{reply.state} · {reply.status} · step {reply.step}]{flag}"))
        self._out.write("\n")
        if reply.reason:
            self._out.write(f"  why: {printable(reply.reason)}\n")
        self._out.flush()


async def _converse(
    client: Client, workflow_id: str, text: str, out: TextIO, *, update_id: str | None = None
) -> Reply:
    """Send a message, printing its reply as it streams; returns the update's reply."""
    printer = ReplyPrinter(out)
    try:
        reply = await send_streaming(
            client, workflow_id, text, on_event=printer.event, update_id=update_id
        )
    except BaseException:
        printer.abandon()
        raise
    printer.finish(reply)
    return reply


async def run(
    settings: Settings,
    agent: str,
    raw_input: str | None,
    *,
    wait: bool,
    workflow_id: str | None,
    out: TextIO,
) -> int:
    """Start a run (``fsmflow run AGENT``)."""
    request = parse_input(raw_input, agent)
    client = await _client(settings)
    workflow_id = workflow_id or f"{request.agent or 'inline'}-{uuid.uuid4().hex[:8]}"
    try:
        handle = await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput.model_validate(request.model_dump()),
            id=workflow_id,
            task_queue=settings.task_queue,
            result_type=AgentResult,
        )
    except RPCError as exc:
        raise CommandError(f"cannot start {workflow_id!r}: {explain(exc)}") from None
    out.write(f"started {printable(handle.id)}\n{ui_link(settings, handle.id)}\n")
    if wait:
        try:
            result = await run_result(handle)
        except WorkflowFailureError as exc:
            raise CommandError(f"run {handle.id} failed: {explain(exc)}") from None
        out.write(printable_json(result.model_dump_json(indent=2)) + "\n")
        if result.status == "failed":
            raise CommandError(f"run {handle.id} failed: {result.end_reason}")
    return 0


async def send(
    settings: Settings, workflow_id: str, text: str, out: TextIO, *, update_id: str | None = None
) -> int:
    """Send one message (``fsmflow send ID TEXT [--id UPDATE_ID]``)."""
    client = await _client(settings)
    try:
        await _converse(client, workflow_id, text, out, update_id=update_id)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise CommandError(f"message refused: {explain(exc, workflow_id)}") from None
    return 0


async def decide(
    settings: Settings, workflow_id: str, decision: str, by: str, comment: str, out: TextIO
) -> int:
    """Approve or reject at the open gate (``fsmflow approve|reject ID``)."""
    client = await _client(settings)
    try:
        result = await _handle(client, workflow_id).execute_update(
            "decide",
            DecideInput(decision=decision, by=by, comment=comment),  # type: ignore[arg-type]
            result_type=DecisionResult,
        )
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise CommandError(f"{decision} refused: {explain(exc, workflow_id)}") from None
    out.write(
        printable(f"{decision}d by {by or 'anonymous'}: now in {result.state} ({result.status})")
        + "\n"
    )
    return 0


async def status(settings: Settings, workflow_id: str, out: TextIO) -> int:
    """Print a run's status (``fsmflow status ID``); falls back to visibility data."""
    client = await _client(settings)
    handle = _handle(client, workflow_id)
    try:
        description = await handle.describe()
    except RPCError as exc:
        raise CommandError(explain(exc, workflow_id)) from None
    try:
        current = await asyncio.wait_for(handle.query("status", result_type=AgentStatus), timeout=5)
    except (WorkflowQueryFailedError, RPCError, TimeoutError):
        attributes = {p.key.name: p.value for p in description.typed_search_attributes}
        out.write(
            printable(
                f"{workflow_id}: {description.status.name if description.status else '?'}, "
                f"state {attributes.get('FsmState', '?')}, "
                f"status {attributes.get('FsmStatus', '?')}, "
                f"awaiting approval: {attributes.get('FsmAwaitingApproval', '?')} "
                "(no worker answered the status query)"
            )
            + "\n"
        )
        return 0
    lines = [
        f"{workflow_id}: agent {current.agent} v{current.version}, state {current.state}, "
        f"{current.fsm_status}, step {current.step}/{current.max_steps}, "
        f"waiting for {current.waiting_for}, {current.total_tokens} tokens"
    ]
    if current.end_reason:
        lines.append(f"  ended: {current.end_reason}")
    if current.waiting_since is not None:
        lines.append(
            f"  waiting for the model since {current.waiting_since:%Y-%m-%d %H:%M:%S} UTC, "
            f"{current.model_failures} failed attempts, last error: {current.last_error}"
        )
    if current.pending_decision:
        lines.append(f"  pending decision: {current.pending_decision}")
    lines.append(f"  {ui_link(settings, workflow_id)}")
    out.write("".join(printable(line) + "\n" for line in lines))
    return 0


def format_entry(entry: TraceEntry) -> str:
    """One trace line: step, kind, from -> to (or state: tool), verdict, model, tokens, latency.

    One line whatever the reason says (``printable``).
    """
    verdict = "ok" if entry.accepted else f"rejected: {entry.reason}"
    if entry.accepted and entry.reason:
        verdict += f" ({entry.reason})"
    parts = [f"{entry.step:>3}", f"{entry.kind:<9}"]
    if entry.kind == "tool_call":
        parts.append(f"{entry.from_state}: {entry.tool}")
    else:
        parts.append(f"{entry.from_state} -> {entry.to_state or '-'}")
    details = []
    if entry.by:
        details.append(f"by {entry.by}")
    if entry.model:
        details.append(entry.model)
    if entry.tokens is not None:
        details.append(f"{entry.tokens} tok")
    if entry.latency_ms is not None:
        details.append(f"{entry.latency_ms} ms")
    line = "  ".join(parts) + f"  {verdict}" + (f"  [{', '.join(details)}]" if details else "")
    return printable(line)


async def trace(settings: Settings, workflow_id: str, out: TextIO) -> int:
    """Print a run's trace from its history (``fsmflow trace ID``)."""
    from workers.history_trace import ReplayError, trace_from_history

    client = await _client(settings)
    try:
        history = await _handle(client, workflow_id).fetch_history()
        entries = await trace_from_history(history, data_converter=client.data_converter)
    except RPCError as exc:
        raise CommandError(explain(exc, workflow_id)) from None
    except ReplayError as exc:
        raise CommandError(f"cannot replay {workflow_id!r}: {exc}") from None
    for entry in entries:
        out.write(format_entry(entry) + "\n")
    if not entries:
        out.write(f"{printable(workflow_id)}: no turns yet\n")
    return 0


async def ls(
    settings: Settings,
    state: str | None,
    awaiting: bool,
    limit: int,
    out: TextIO,
    *,
    status: str | None = None,
) -> int:
    """List runs from the visibility store (``fsmflow ls``)."""
    client = await _client(settings)
    clauses = ["WorkflowType = 'AgentWorkflow'"]
    if status:
        if status not in FSM_STATUSES:
            raise CommandError(f"invalid --status {status!r}: one of {', '.join(FSM_STATUSES)}")
        clauses.append(f"FsmStatus = '{status}'")
    if state:
        if not state.replace("_", "").isalnum():
            raise CommandError(f"invalid --state {state!r}: a state id is letters, digits and _")
        clauses.append(f"FsmState = '{state}'")
    if awaiting:
        clauses.append("FsmAwaitingApproval = true")
    query = " AND ".join(clauses)
    rows = []
    try:
        async for execution in client.list_workflows(query, limit=limit):
            attributes = {p.key.name: p.value for p in execution.typed_search_attributes}
            row = (
                execution.id,
                str(attributes.get("FsmAgent", "-")),
                str(attributes.get("FsmState", "-")),
                "yes" if attributes.get("FsmAwaitingApproval") else "",
                str(attributes.get("FsmStatus", "-")),
                execution.status.name.lower() if execution.status else "-",
                execution.start_time.strftime("%Y-%m-%d %H:%M:%S"),
            )
            rows.append(tuple(printable(value) for value in row))
    except RPCError as exc:
        raise CommandError(f"cannot list runs: {explain(exc)}") from None
    header = ("WORKFLOW ID", "AGENT", "STATE", "APPROVAL", "FSM STATUS", "RUN", "STARTED (UTC)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write(
            "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
        )
    return 0


async def chat(
    settings: Settings, target: str, raw_input: str | None, inp: TextIO, out: TextIO
) -> int:
    """Talk to a run in the terminal (``fsmflow chat AGENT|WORKFLOW_ID``)."""
    client = await _client(settings)
    agents = {}
    try:
        agents = load_agents(settings.agents_dir)
    except Exception:  # noqa: BLE001 - no local agents dir: the target is a workflow id
        agents = {}
    if target in agents:
        request = parse_input(raw_input, target)
        workflow_id = f"{target}-chat-{uuid.uuid4().hex[:8]}"
        await client.start_workflow(
            "AgentWorkflow",
            AgentWorkflowInput.model_validate(request.model_dump()),
            id=workflow_id,
            task_queue=settings.task_queue,
        )
        out.write(f"started {printable(workflow_id)}  {ui_link(settings, workflow_id)}\n")
    else:
        workflow_id = target
        try:
            await _handle(client, workflow_id).describe()
        except RPCError as exc:
            raise CommandError(
                f"{target!r} is neither an agent in {settings.agents_dir} nor a workflow: "
                f"{explain(exc, workflow_id)}"
            ) from None
    out.write("Type a message; an empty line or Ctrl-D ends the chat.\n")
    while True:
        out.write("> ")
        out.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, inp.readline)
        if not line or not line.strip():
            out.write("\n")
            return 0
        try:
            reply = await _converse(client, workflow_id, line.rstrip("\n"), out)
        except (WorkflowUpdateFailedError, RPCError) as exc:
            out.write(f"! {printable(explain(exc, workflow_id))}\n")
            continue
        if reply.status == "awaiting_approval":
            out.write(f"! waiting for approval: fsmflow approve {printable(workflow_id)}\n")
        if reply.status in ("completed", "max_steps", "failed"):
            return 0


def run_command(coro: Any, err: TextIO = sys.stderr, prefix: str = "fsmflow") -> int:
    """Run a command coroutine, turning expected failures into one line."""
    try:
        return int(asyncio.run(coro))
    except CommandError as exc:
        err.write(f"{prefix}: {printable(str(exc))}\n")
        return 1
    except KeyboardInterrupt:
        return 130
