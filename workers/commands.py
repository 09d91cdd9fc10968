"""The ``fsmflow`` commands that talk to Temporal.

run, chat, send, approve, reject, status, wait, trace and ls.
Each returns an exit code; expected failures (unknown workflow, unreachable
server, invalid input, a run that ended otherwise than asked) raise
``CommandError`` with one line for the user and its exit code (``EXIT_*``).
Everything printed that came from a model, a user or a definition goes through
``workers.text.printable`` (one line each, but a reply's text keeps its lines).
"""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any, TextIO
from urllib.parse import quote

from pydantic import ValidationError
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.service import RPCError, RPCStatusCode

from activities.definitions import load_agents
from activities.llm import redact_url
from fsm.context import check_initial_context
from fsm.loader import Loaded
from fsm.problems import DefinitionError, did_you_mean, validation_problem
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
from workers.client import RunEnd, connect, is_closed, run_end
from workers.events import send_streaming
from workers.settings import Settings
from workers.text import printable, printable_json

EXIT_FAILED = 1
"""The run failed (by its rules, or refused at its start), or the command did
(unknown run, unreachable server, invalid input, a refused message or decision)."""
EXIT_ENDED_OTHERWISE = 3
"""The run ended another way than asked: ``run --wait`` on ``max_steps``, a
terminated, cancelled or timed-out run; ``wait`` on an end it did not wait for."""
EXIT_TIMEOUT = 4
"""``wait --timeout`` passed with the run still going."""


class CommandError(Exception):
    """A failure to report as one line, with a non-zero exit (``EXIT_FAILED`` unless given)."""

    def __init__(self, message: str, *, code: int = EXIT_FAILED) -> None:
        """Keep the exit code with the message."""
        super().__init__(message)
        self.code = code


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


def local_agents(settings: Settings) -> dict[str, Loaded] | None:
    """The agents of ``settings.agents_dir`` when it is readable here, else None.

    None also when a file there is invalid: the worker, which may read another
    directory, is then the one to say what it knows.
    """
    try:
        return load_agents(settings.agents_dir)
    except (OSError, DefinitionError):
        return None


def check_start(request: AgentRunInput, settings: Settings) -> None:
    """Refuse, before anything starts, what the worker would fail the run for.

    With the agents directory readable here: an agent it lacks, and an initial
    context that does not fit the agent's declaration (undeclared or misspelt
    key, wrong type). Otherwise (or for an inline definition) the worker decides.
    """
    if request.agent is None:
        return
    agents = local_agents(settings)
    if agents is None:
        return
    loaded = agents.get(request.agent)
    if loaded is None:
        known = sorted({each.definition.name for each in agents.values()})
        raise CommandError(
            f"agent {request.agent!r} is not in {str(settings.agents_dir)!r} "
            f"(agents: {', '.join(known) or 'none'}){did_you_mean(request.agent, agents)}"
        )
    problems = check_initial_context(loaded.definition, request.context)
    if problems:
        raise CommandError(f"invalid --input for {request.agent!r}: {'; '.join(problems)}")


def _handle(client: Client, workflow_id: str) -> WorkflowHandle[Any, AgentResult]:
    return client.get_workflow_handle(workflow_id, result_type=AgentResult)


async def _describe(client: Client, workflow_id: str) -> WorkflowExecutionDescription:
    try:
        return await _handle(client, workflow_id).describe()
    except RPCError as exc:
        raise CommandError(explain(exc, workflow_id)) from None


async def _refusal(client: Client, workflow_id: str, what: str, error: BaseException) -> str:
    """Why a message or decision was refused: the run has ended, or what Temporal said."""
    if isinstance(error, RPCError) and error.status == RPCStatusCode.NOT_FOUND:
        try:
            description = await _handle(client, workflow_id).describe()
        except RPCError:
            description = None
        if description is not None and is_closed(description.status):
            end = await run_end(_handle(client, workflow_id))
            return f"run {workflow_id!r} has ended ({end.describe()})"
    return f"{what} refused: {explain(error, workflow_id)}"


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
    """Start a run (``fsmflow run AGENT``); with ``wait``, exit by how it ended (``EXIT_*``)."""
    request = parse_input(raw_input, agent)
    check_start(request, settings)
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
        end = await run_end(handle)
        if end.result is not None:
            out.write(printable_json(end.result.model_dump_json(indent=2)) + "\n")
        if end.outcome == "failed":
            raise CommandError(f"run {handle.id} failed: {end.reason}")
        if end.outcome != "completed":
            raise CommandError(
                f"run {handle.id} ended without completing ({end.describe()})",
                code=EXIT_ENDED_OTHERWISE,
            )
    return 0


async def send(
    settings: Settings, workflow_id: str, text: str, out: TextIO, *, update_id: str | None = None
) -> int:
    """Send one message (``fsmflow send ID TEXT [--id UPDATE_ID]``)."""
    client = await _client(settings)
    try:
        await _converse(client, workflow_id, text, out, update_id=update_id)
    except (WorkflowUpdateFailedError, RPCError) as exc:
        raise CommandError(await _refusal(client, workflow_id, "message", exc)) from None
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
        raise CommandError(await _refusal(client, workflow_id, decision, exc)) from None
    done = {"approve": "approved", "reject": "rejected"}[decision]
    out.write(
        printable(f"{done} by {by or 'anonymous'}: now in {result.state} ({result.status})") + "\n"
    )
    return 0


async def status(settings: Settings, workflow_id: str, out: TextIO) -> int:
    """Print a run's status (``fsmflow status ID``).

    A running run answers the status query (else its search attributes are
    shown); a closed one is described from its history, with no worker needed.
    """
    client = await _client(settings)
    handle = _handle(client, workflow_id)
    description = await _describe(client, workflow_id)
    attributes = {p.key.name: p.value for p in description.typed_search_attributes}
    if is_closed(description.status):
        end = await run_end(handle)
        lines = [_ended_line(workflow_id, end, attributes)]
        if end.result is not None and end.reason:
            lines.append(f"  ended: {end.reason}")
        lines.append(f"  {ui_link(settings, workflow_id)}")
        out.write("".join(printable(line) + "\n" for line in lines))
        return 0
    try:
        current = await asyncio.wait_for(handle.query("status", result_type=AgentStatus), timeout=5)
    except (WorkflowQueryFailedError, RPCError, TimeoutError) as exc:
        why = (
            f"the status query failed: {exc.message}"
            if isinstance(exc, WorkflowQueryFailedError)
            else "no worker answered the status query"
        )
        out.write(
            printable(
                f"{workflow_id}: running, "
                f"state {attributes.get('FsmState', '?')}, "
                f"status {attributes.get('FsmStatus', '?')}, "
                f"awaiting approval: {attributes.get('FsmAwaitingApproval', '?')} ({why})"
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


def _ended_line(workflow_id: str, end: RunEnd, attributes: Mapping[str, Any]) -> str:
    """A closed run in one line: its result's figures, or how it was closed and why."""
    result = end.result
    if result is not None:
        return (
            f"{workflow_id}: ended {result.status}, agent {result.agent}, state {result.state}, "
            f"step {result.steps}, {result.total_tokens} tokens"
        )
    where = f" in state {attributes['FsmState']}" if attributes.get("FsmState") else ""
    return f"{workflow_id}: ended {end.outcome}{where}: {end.reason}"


def outcome_of(workflow_status: str, fsm_status: str | None) -> str:
    """What a run's listing says it is: its ``FsmStatus``, unless it was closed from outside.

    A run terminated, cancelled or timed out keeps the ``FsmStatus`` it had
    (``active``, ...): then how its workflow closed says more.
    """
    closed = workflow_status not in ("running", "continued_as_new", "-")
    if fsm_status is None or (closed and fsm_status not in ("completed", "max_steps", "failed")):
        return workflow_status
    return fsm_status


WAIT_POLL_SECONDS = 0.5
"""How often ``wait`` asks a run where it is."""
QUERY_SECONDS = 5.0
"""How long a status query may take before the search attributes answer instead."""


async def _where(
    handle: WorkflowHandle[Any, AgentResult], attributes: Mapping[str, Any], limit: float
) -> tuple[str, str]:
    """A running run's ``FsmStatus`` and state: from the status query, else its attributes."""
    try:
        current = await handle.query(
            "status",
            result_type=AgentStatus,
            rpc_timeout=timedelta(seconds=max(0.5, min(QUERY_SECONDS, limit))),
        )
    except (WorkflowQueryFailedError, RPCError):
        return str(attributes.get("FsmStatus") or "unknown"), str(attributes.get("FsmState") or "?")
    return current.fsm_status, current.state


async def wait(
    settings: Settings,
    workflow_id: str,
    until: Sequence[str],
    out: TextIO,
    *,
    timeout: float | None = None,
    poll_seconds: float = WAIT_POLL_SECONDS,
) -> int:
    """Wait until a run's status is one of ``until`` (``fsmflow wait ID --until S[,S]``).

    ``until`` holds ``FsmStatus`` values, ways a run is closed from outside
    (``terminated``, ``canceled``, ``timed_out``) or ``ended`` (any end). Polls
    the status query; with no worker answering, the run's ``FsmStatus`` search
    attribute. A closed run is judged by its history.

    Raises:
        CommandError: When the run ended otherwise (``EXIT_FAILED`` if it failed,
            else ``EXIT_ENDED_OTHERWISE``), or ``timeout`` passed (``EXIT_TIMEOUT``).
    """
    client = await _client(settings)
    handle = _handle(client, workflow_id)
    wanted = set(until)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    while True:
        description = await _describe(client, workflow_id)
        attributes = {p.key.name: p.value for p in description.typed_search_attributes}
        if is_closed(description.status):
            end = await run_end(handle)
            if end.outcome in wanted or "ended" in wanted:
                out.write(printable(_ended_line(workflow_id, end, attributes)) + "\n")
                return 0
            raise CommandError(
                f"run {workflow_id!r} has ended ({end.describe()}), not {' or '.join(until)}",
                code=EXIT_FAILED if end.outcome == "failed" else EXIT_ENDED_OTHERWISE,
            )
        left = QUERY_SECONDS if deadline is None else deadline - loop.time()
        fsm_status, state = await _where(handle, attributes, left)
        if fsm_status in wanted:
            out.write(printable(f"{workflow_id}: {fsm_status} in state {state}") + "\n")
            return 0
        if deadline is not None and loop.time() >= deadline:
            raise CommandError(
                f"run {workflow_id!r} is still {fsm_status} in state {state} after "
                f"{timeout:g}s (waited for {' or '.join(until)})",
                code=EXIT_TIMEOUT,
            )
        await asyncio.sleep(poll_seconds)


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
            workflow_status = execution.status.name.lower() if execution.status else "-"
            fsm_status = attributes.get("FsmStatus")
            row = (
                execution.id,
                str(attributes.get("FsmAgent", "-")),
                str(attributes.get("FsmState", "-")),
                "yes" if attributes.get("FsmAwaitingApproval") else "",
                outcome_of(workflow_status, str(fsm_status) if fsm_status else None),
                workflow_status,
                execution.start_time.strftime("%Y-%m-%d %H:%M:%S"),
            )
            rows.append(tuple(printable(value) for value in row))
    except RPCError as exc:
        raise CommandError(f"cannot list runs: {explain(exc)}") from None
    header = ("WORKFLOW ID", "AGENT", "STATE", "APPROVAL", "OUTCOME", "WORKFLOW", "STARTED (UTC)")
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
    agents = local_agents(settings) or {}
    if target in agents:
        request = parse_input(raw_input, target)
        check_start(request, settings)
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
            known = sorted({each.definition.name for each in agents.values()})
            raise CommandError(
                f"{target!r} is neither an agent in {settings.agents_dir} nor a workflow: "
                f"{explain(exc, workflow_id)}"
                + (f" (agents: {', '.join(known)}){did_you_mean(target, agents)}" if known else "")
            ) from None
    if not await _chat_header(client, workflow_id, out):
        return 0
    out.write("Type a message; an empty line or Ctrl-D ends the chat.\n")
    while True:
        out.write("> ")
        out.flush()
        line = await asyncio.get_running_loop().run_in_executor(None, inp.readline)
        if not line or not line.strip():
            out.write("\n")
            await _chat_footer(client, workflow_id, out)
            return 0
        try:
            reply = await _converse(client, workflow_id, line.rstrip("\n"), out)
        except (WorkflowUpdateFailedError, RPCError) as exc:
            out.write(f"! {printable(explain(exc, workflow_id))}\n")
            continue
        if reply.status == "awaiting_approval":
            out.write(f"! waiting for approval: fsmflow approve {printable(workflow_id)}\n")
        if reply.status in ("completed", "max_steps", "failed"):
            await _chat_footer(client, workflow_id, out)
            return 0


CHAT_START_SECONDS = 30.0
"""How long ``chat`` waits for a new run to answer its status query (it resolves
its definition first)."""


async def _chat_header(client: Client, workflow_id: str, out: TextIO) -> bool:
    """Say where the run is and what the agent said last (its greeting, on a new run).

    Returns False when the run has ended (said so; nothing to chat with).
    """
    handle = _handle(client, workflow_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CHAT_START_SECONDS
    while True:
        description = await _describe(client, workflow_id)
        if is_closed(description.status):
            end = await run_end(handle)
            out.write(printable(f"! run {workflow_id!r} has ended ({end.describe()})") + "\n")
            return False
        try:
            current = await handle.query(
                "status", result_type=AgentStatus, rpc_timeout=timedelta(seconds=QUERY_SECONDS)
            )
            break
        except (WorkflowQueryFailedError, RPCError):
            if loop.time() >= deadline:
                out.write("! no worker answered yet; messages wait for one\n")
                return True
            await asyncio.sleep(WAIT_POLL_SECONDS)
    where = (
        f"[{current.agent} · {current.state} · {current.status} · step {current.step}"
        f"/{current.max_steps}]"
    )
    out.write(printable(where) + "\n")
    if current.last_reply:
        out.write(f"< {reply_text(current.last_reply)}\n")
    return True


async def _chat_footer(client: Client, workflow_id: str, out: TextIO) -> None:
    """Say how the run was left: how it ended, or how to go on with it."""
    name = printable(workflow_id)
    try:
        description = await _describe(client, workflow_id)
    except CommandError as exc:
        out.write(f"! {printable(str(exc))}\n")
        return
    if is_closed(description.status):
        end = await run_end(_handle(client, workflow_id))
        out.write(printable(f"The run {workflow_id} has ended ({end.describe()}).") + "\n")
        return
    out.write(
        f"The run {name} is still open: go on with `fsmflow chat {name}`, "
        f"see it with `fsmflow status {name}`, or end it with "
        f"`temporal workflow terminate --workflow-id {name}`.\n"
    )


def run_command(coro: Any, err: TextIO = sys.stderr, prefix: str = "fsmflow") -> int:
    """Run a command coroutine, turning expected failures into one line."""
    try:
        return int(asyncio.run(coro))
    except CommandError as exc:
        err.write(f"{prefix}: {printable(str(exc))}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
