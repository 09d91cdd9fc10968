"""The ``fsmflow`` command line.

Commands print to stdout/stderr (this is the user interface, not library code)
and turn every expected failure into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fsm.diagram import mermaid
from fsm.loader import load_file, load_text
from fsm.problems import DefinitionError
from schemas.definition import definition_json_schema
from schemas.snapshot import FSM_STATUSES
from workers.text import printable

if TYPE_CHECKING:
    from fsm.tools import ToolRegistry
    from workers.settings import Settings


def _tool_modules(args: argparse.Namespace) -> list[str]:
    """``--tools`` (repeatable, comma lists), else ``FSMFLOW_TOOL_MODULES``."""
    from workers.settings import split_modules

    # Not Settings.load(): checking files must not depend on the worker's other settings.
    given = args.tools or [os.environ.get("FSMFLOW_TOOL_MODULES", "")]
    return [module for entry in given for module in split_modules(entry)]


def _load_tools(command: str, modules: list[str], err: TextIO) -> ToolRegistry | None:
    from activities.tools import ToolModuleError, load_tool_modules

    try:
        return load_tool_modules(modules)
    except ToolModuleError as exc:
        print(f"fsmflow {command}: {exc}", file=err)
        return None


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check definition files; exit 1 if any has an error."""
    modules = _tool_modules(args)
    registry = _load_tools("check", modules, err) if modules else None
    if modules and registry is None:
        return 1
    tools = registry.names() if registry is not None else None
    failed = False
    for path in args.files:
        try:
            loaded = load_file(path, tools=tools)
        except DefinitionError as exc:
            failed = True
            for problem in exc.problems:
                print(printable(problem.render(exc.source)), file=err)
            continue
        for warning in loaded.warnings:
            print(printable(warning.render(loaded.source)), file=out)
        definition = loaded.definition
        transitions = sum(len(s.transitions) for s in definition.states.values())
        eventless = sum(len(s.always) for s in definition.states.values())
        gates = sum(1 for s in definition.states.values() if s.approval is not None)
        named = sorted({t for s in definition.states.values() for t in s.tools})
        summary = (
            f"{path}: ok: agent {definition.name!r} v{definition.version}, {definition.mode}, "
            f"{len(definition.states)} states, {transitions} transitions, "
            + (f"{eventless} eventless, " if eventless else "")
            + f"{gates} approval gates"
        )
        if named:
            summary += f", tools {', '.join(named)}"
            if tools is None:
                summary += " (not checked: give --tools or FSMFLOW_TOOL_MODULES)"
        print(printable(summary), file=out)
    return 1 if failed else 0


def cmd_tools(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """List the tools of tool modules, or export their schemas for other frameworks."""
    modules = _tool_modules(args)
    if not modules:
        print("fsmflow tools: no tool modules (give --tools or FSMFLOW_TOOL_MODULES)", file=err)
        return 2
    registry = _load_tools("tools", modules, err)
    if registry is None:
        return 1
    if args.format == "list":
        for spec in registry.specs():
            arguments = ", ".join(spec.parameters.get("properties", {}))
            print(f"{spec.name}({arguments}): {spec.description}", file=out)
        return 0
    print(json.dumps(registry.export(args.format), indent=2), file=out)
    return 0


def cmd_schema(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print the JSON Schema of the definition format."""
    print(json.dumps(definition_json_schema(), indent=2), file=out)
    return 0


def cmd_diagram(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Print a Mermaid state diagram of a definition."""
    try:
        loaded = load_file(args.file)
    except DefinitionError as exc:
        for problem in exc.problems:
            print(printable(problem.render(exc.source)), file=err)
        return 1
    out.write(printable(mermaid(loaded.definition), multiline=True))
    return 0


def cmd_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Convert another framework's definition to fsmflow YAML; exit 1 if it fails the checks."""
    from fsm.importers.llm_fsm import LlmFsmError, convert
    from schemas.limits import KIB, MAX_SOURCE_BYTES

    path = Path(args.file)
    target = Path(args.output) if args.output else None
    if target is not None and target.exists() and not args.force:
        print(f"fsmflow import: {target} exists; give --force to overwrite it", file=err)
        return 1
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_SOURCE_BYTES + 1)
        if len(raw) > MAX_SOURCE_BYTES:
            print(f"{path}: larger than the limit of {MAX_SOURCE_BYTES // KIB:,} KB", file=err)
            return 1
        data = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        print(printable(f"{path}: cannot read file: {exc.strerror or exc}"), file=err)
        return 1
    except UnicodeDecodeError as exc:
        print(f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}", file=err)
        return 1
    except json.JSONDecodeError as exc:
        print(f"{path}: not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})", file=err)
        return 1
    except (RecursionError, ValueError) as exc:
        print(printable(f"{path}: not JSON: {exc}"), file=err)
        return 1
    try:
        result = convert(data, source=str(path))
    except LlmFsmError as exc:
        for problem in exc.problems:
            print(printable(f"{path}: {problem}"), file=err)
        return 1
    for line in result.report:
        print(printable(f"{path}: {line}"), file=err)
    text = result.definition_yaml
    if target is not None:
        target.write_text(text)
    else:
        out.write(printable(text, multiline=True))
    written = str(target) if target is not None else "the converted definition"
    try:
        loaded = load_text(text, source=written, fmt="yaml")
    except DefinitionError as exc:
        # Written anyway: it is the whole conversion, and the lines say what to fix.
        for problem in exc.problems:
            print(printable(problem.render(exc.source)), file=err)
        print(f"fsmflow import: {written} does not pass fsmflow check", file=err)
        return 1
    for warning in loaded.warnings:
        print(printable(warning.render(loaded.source)), file=err)
    definition = loaded.definition
    print(
        printable(
            f"{path}: imported as agent {definition.name!r}: {len(definition.states)} states, "
            f"{len(definition.context)} context keys, {len(result.report)} report lines"
            + (f"; written to {target}" if target is not None else "")
        ),
        file=err,
    )
    return 0


def cmd_worker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run a worker until SIGTERM/SIGINT."""
    import asyncio

    from workers.logging import configure_logging
    from workers.settings import Settings
    from workers.worker import WorkerConfigError, run_worker

    try:
        settings = Settings.load()
    except ValueError as exc:
        print(f"fsmflow worker: invalid settings: {exc}", file=err)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    try:
        asyncio.run(run_worker(settings))
    except (WorkerConfigError, RuntimeError) as exc:
        print(f"fsmflow worker: {exc}", file=err)
        return 1
    return 0


def _settings(err: TextIO) -> Settings | None:
    from workers.settings import Settings

    try:
        return Settings.load()
    except ValueError as exc:
        print(f"fsmflow: invalid settings: {exc}", file=err)
        return None


def cmd_client(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Commands that talk to Temporal (run, chat, send, approve, reject, status, wait, ...)."""
    from workers import commands

    settings = _settings(err)
    if settings is None:
        return 2
    name = args.command
    coroutine: Any
    if name == "run":
        coroutine = commands.run(
            settings, args.agent, args.input, wait=args.wait, workflow_id=args.id, out=out
        )
    elif name == "chat":
        coroutine = commands.chat(settings, args.target, args.input, sys.stdin, out)
    elif name == "send":
        coroutine = commands.send(settings, args.workflow_id, args.text, out, update_id=args.id)
    elif name in ("approve", "reject"):
        coroutine = commands.decide(settings, args.workflow_id, name, args.by, args.comment, out)
    elif name == "status":
        coroutine = commands.status(settings, args.workflow_id, out)
    elif name == "wait":
        coroutine = commands.wait(settings, args.workflow_id, args.until, out, timeout=args.timeout)
    elif name == "trace":
        coroutine = commands.trace(settings, args.workflow_id, out)
    else:
        coroutine = commands.ls(
            settings, args.state, args.awaiting_approval, args.limit, out, status=args.status
        )
    return commands.run_command(coroutine, err)


def _wait_statuses(text: str) -> list[str]:
    """``--until``: comma-separated statuses, each one ``wait`` knows."""
    from workers.client import RUN_OUTCOMES

    known = list(dict.fromkeys([*FSM_STATUSES, *RUN_OUTCOMES, "ended"]))
    statuses = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [status for status in statuses if status not in known]
    if unknown or not statuses:
        raise argparse.ArgumentTypeError(
            f"{printable(repr(unknown[0] if unknown else text))} is not a status: "
            f"one of {', '.join(known)}"
        )
    return statuses


def _seconds(text: str) -> float:
    """``--timeout``: a number of seconds, not negative."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{printable(repr(text))} is not a number of seconds")
    return value


def cmd_dev(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Manage the local stack."""
    from workers import dev

    ports = dev.Ports.from_env()
    for name in ("temporal", "ui", "llm", "api"):
        value = getattr(args, f"{name}_port", None)
        if value is not None:
            setattr(ports, name, value)
    try:
        if args.action == "up":
            dev.up(ports, out=out)
        elif args.action == "down":
            dev.down(ports, out=out)
        else:
            return 0 if dev.status(ports, out=out) else 1
    except (dev.DevError, FileNotFoundError) as exc:
        print(f"fsmflow dev {args.action}: {exc}", file=err)
        return 1
    return 0


def cmd_demo(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Run the examples end to end against the running stack."""
    from workers import commands, demo

    settings = _settings(err)
    if settings is None:
        return 2
    return commands.run_command(demo.run_demo(settings, out=out), err, prefix="fsmflow demo")


async def _store(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from workers.client import connect
    from workers.stores import cleanup, parse_age, stores_of

    if args.action == "cleanup":
        try:
            age = parse_age(args.ended_before)
        except ValueError as exc:
            print(f"fsmflow store cleanup: --ended-before: {exc}", file=err)
            return 2
        client = await connect(settings)
        async with stores_of(settings) as stores:
            print(f"store: {stores.backend} at {stores.location}", file=out)
            report = await cleanup(stores, client, ended_before=age, dry_run=args.dry_run)
        verb = "would delete" if args.dry_run else "deleted"
        for scope, (artifacts, records) in report.deleted.items():
            counts = "" if args.dry_run else f" ({artifacts} artifacts, {records} ledger records)"
            print(printable(f"{verb} {scope}{counts}"), file=out)
        for scope, why in report.kept.items():
            print(printable(f"kept {scope}: {why}"), file=out)
        print(f"{len(report.deleted)} run scopes {verb}, {len(report.kept)} kept", file=out)
        return 0

    from activities.postgres import StoreSchemaError, migrate, schema_status

    async with stores_of(settings, check_schema=False) as stores:
        print(f"store: {stores.backend} at {stores.location}", file=out)
        if stores.pool is None:
            print("schema: made and upgraded by the worker itself; nothing to migrate", file=out)
            return 0
        try:
            if args.action == "migrate":
                applied = await migrate(stores.pool)
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
                print(f"applied: {names or 'nothing (up to date)'}", file=out)
            status = await schema_status(stores.pool)
            print(status.describe(), file=out)
            status.check()
        except StoreSchemaError as exc:
            print(f"fsmflow store {args.action}: {exc}", file=err)
            return 1
    return 0


def cmd_store(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Migrate, inspect or clean up the effect ledger and artifact store."""
    import asyncio

    from workers.stores import StoreError

    settings = _settings(err)
    if settings is None:
        return 2
    try:
        return asyncio.run(_store(args, settings, out, err))
    except (StoreError, RuntimeError) as exc:
        print(f"fsmflow store {args.action}: {exc}", file=err)
        return 1


def cmd_api(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Serve the HTTP API until SIGTERM/SIGINT."""
    import asyncio
    import signal

    import structlog

    from workers.api import TokenError, server, tokens_of
    from workers.logging import configure_logging
    from workers.settings import Settings

    overrides = {
        name: value
        for name, value in (("api_host", args.host), ("api_port", args.port))
        if value is not None
    }
    try:
        settings = Settings.load(**overrides)
    except ValueError as exc:
        print(f"fsmflow api: invalid settings: {exc}", file=err)
        return 2
    try:
        tokens = tokens_of(settings)
    except TokenError as exc:
        print(f"fsmflow api: {exc}", file=err)
        return 2
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    summary = settings.safe_summary()
    structlog.get_logger("fsmflow.api").info(
        "api.starting",
        url=f"http://{settings.api_host}:{settings.api_port}",
        max_body=settings.api_max_body,
        rate=settings.api_rate,
        **tokens.summary(),
        **{
            key: summary[key]
            for key in ("temporal_address", "namespace", "task_queue", "tls", "payload_key")
        },
    )
    uvicorn_server = server(settings, tokens)
    # uvicorn handles SIGTERM (a graceful stop), then raises it again once stopped:
    # that second one is ignored, so a stop asked for is exit 0, like the worker's.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        asyncio.run(uvicorn_server.serve())
    except (KeyboardInterrupt, SystemExit):
        pass
    if not uvicorn_server.started:
        print(
            f"fsmflow api: cannot listen on {settings.api_host}:{settings.api_port} "
            "(see the log above)",
            file=err,
        )
        return 1
    return 0


def cmd_codec_server(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Serve Temporal's codec protocol with the payload keys, until interrupted."""
    from workers.codec import EncryptionCodec
    from workers.codec_server import CodecServer, describe, origin_of

    settings = _settings(err)
    if settings is None:
        return 2
    keys = settings.payload_keys()
    if not keys:
        print(
            "fsmflow codec-server: neither FSMFLOW_PAYLOAD_KEY nor FSMFLOW_PAYLOAD_DECRYPT_KEYS "
            "is set: nothing to decode",
            file=err,
        )
        return 2
    try:
        origins = tuple(origin_of(o) for o in (args.origin or [settings.ui_url]))
    except ValueError as exc:
        print(f"fsmflow codec-server: --origin: {exc}", file=err)
        return 2
    codec = EncryptionCodec(keys)
    token = settings.codec_server_token.get_secret_value() if settings.codec_server_token else None
    try:
        server = CodecServer(codec, host=args.host, port=args.port, origins=origins, token=token)
    except OSError as exc:
        print(f"fsmflow codec-server: cannot listen on {args.host}:{args.port}: {exc}", file=err)
        return 1
    out.write(describe(server, codec, origins))
    out.flush()
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``fsmflow`` command."""
    parser = argparse.ArgumentParser(
        prog="fsmflow",
        description="Run LLM agents as finite state machines on Temporal.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser(
        "check",
        help="check agent definition files",
        description="Check agent definition "
        "files (YAML or JSON): exit 0 with a summary per valid file, 1 with one line per problem. "
        "With tool modules, every tool a state names must be registered.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    tools_help = (
        "tool module (dotted name or .py path; repeat or comma-separate); "
        "default: FSMFLOW_TOOL_MODULES"
    )
    check.add_argument("--tools", action="append", metavar="MODULE", help=tools_help)
    check.set_defaults(handler=cmd_check)

    tools = commands.add_parser(
        "tools",
        help="list tools, or export their schemas (OpenAI, Anthropic, Google)",
        description="Load tool modules and list their tools, or print their JSON "
        "Schemas in the OpenAI, Anthropic or Google GenAI tools format.",
    )
    tools.add_argument("--tools", action="append", metavar="MODULE", help=tools_help)
    tools.add_argument(
        "--format", choices=["list", "openai", "anthropic", "google"], default="list"
    )
    tools.set_defaults(handler=cmd_tools)

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the definition format",
        description="Print the JSON Schema of agent definition files, for editors.",
    )
    schema.set_defaults(handler=cmd_schema)

    diagram = commands.add_parser(
        "diagram",
        help="print a Mermaid state diagram of a definition",
        description="Print a Mermaid stateDiagram-v2 of a definition file.",
    )
    diagram.add_argument("file", metavar="FILE")
    diagram.set_defaults(handler=cmd_diagram)

    importing = commands.add_parser(
        "import",
        help="convert another framework's definition to fsmflow YAML",
        description="Convert an agent definition written for another framework to an fsmflow "
        "definition. Prints the YAML (or writes it with -o); each thing that could not be "
        "mapped is one line on stderr, and in the YAML's header. Exit 0 when the result passes "
        "fsmflow check, 1 when the input is invalid or the result needs fixing.",
    )
    formats = importing.add_subparsers(dest="source_format", required=True, metavar="FORMAT")
    llm_fsm = formats.add_parser(
        "llm-fsm",
        help="an llm-fsm / fsm_llm JSON definition",
        description="Convert an llm-fsm / fsm_llm JSON definition (states with purpose, "
        "required_context_keys and transitions with JsonLogic conditions) to fsmflow YAML. "
        "See docs/import.md for the mapping and what is not mapped.",
    )
    llm_fsm.add_argument("file", metavar="FILE.json")
    llm_fsm.add_argument("-o", "--output", metavar="OUT.yaml", help="write here, not to stdout")
    llm_fsm.add_argument("--force", action="store_true", help="overwrite OUT.yaml if it exists")
    llm_fsm.set_defaults(handler=cmd_import)

    worker = commands.add_parser(
        "worker",
        help="run a worker (settings from the environment)",
        description="Run an fsmflow worker: registers AgentWorkflow and the activities on "
        "FSMFLOW_TASK_QUEUE at TEMPORAL_ADDRESS; SIGTERM drains it. See the README for "
        "every environment variable.",
    )
    worker.set_defaults(handler=cmd_worker)

    run = commands.add_parser(
        "run",
        help="start a run of an agent",
        description="Start a run of AGENT (a name in FSMFLOW_AGENTS_DIR, resolved by the "
        "worker). When FSMFLOW_AGENTS_DIR is readable here, an unknown agent or an --input "
        "context that does not fit its declaration is refused before anything starts.",
        epilog="With --wait, exit codes: 0 the run completed (reached a terminal state); "
        "1 it failed (by its rules, or refused at its start), or the command did; "
        "3 it ended another way: max_steps, terminated, cancelled or timed out (the end "
        "reason is printed).",
    )
    run.add_argument("agent", metavar="AGENT")
    run.add_argument("--input", help='JSON like {"context": {...}, "task": "..."}')
    run.add_argument("--id", help="workflow id (default: AGENT-<random>)")
    run.add_argument(
        "--wait", action="store_true", help="wait for the result, print it, exit by how it ended"
    )
    run.set_defaults(handler=cmd_client)

    chat = commands.add_parser(
        "chat",
        help="talk to a run in the terminal",
        description="Start a conversation with AGENT, or continue WORKFLOW_ID; each reply "
        "shows the state it left the run in.",
    )
    chat.add_argument("target", metavar="AGENT|WORKFLOW_ID")
    chat.add_argument("--input", help="initial JSON input when starting an agent")
    chat.set_defaults(handler=cmd_client)

    send = commands.add_parser(
        "send",
        help="send one message to a run",
        description="Send one message and print the reply.",
    )
    send.add_argument("workflow_id", metavar="WORKFLOW_ID")
    send.add_argument("text", metavar="TEXT")
    send.add_argument(
        "--id",
        help="the message's update id (default: a new one); sending again with the same id "
        "returns the same reply and runs no second turn",
    )
    send.set_defaults(handler=cmd_client)

    for decision in ("approve", "reject"):
        sub = commands.add_parser(
            decision,
            help=f"{decision} at a run's open approval gate",
            description=f"{decision.capitalize()} at WORKFLOW_ID's open approval gate.",
        )
        sub.add_argument("workflow_id", metavar="WORKFLOW_ID")
        sub.add_argument("--by", default=os.environ.get("USER", ""), help="who decides")
        sub.add_argument("--comment", default="", help="why")
        sub.set_defaults(handler=cmd_client)

    status = commands.add_parser(
        "status",
        help="show where a run is",
        description="Show a run's state, status, step and tokens.",
    )
    status.add_argument("workflow_id", metavar="WORKFLOW_ID")
    status.set_defaults(handler=cmd_client)

    wait = commands.add_parser(
        "wait",
        help="wait until a run reaches a status",
        description="Wait until WORKFLOW_ID's status (FsmStatus) is one of --until, e.g. "
        "awaiting_approval; a closed run is judged by how it ended (its history). Polls the "
        "run's status query, or its search attributes when no worker answers.",
        epilog="Exit codes: 0 the run reached one of the statuses; 1 it failed instead, or "
        "the command did (unknown run, server unreachable); 2 invalid arguments or settings; "
        "3 it ended another way (completed, max_steps, terminated, ...) than waited for; "
        "4 the timeout passed (where the run is is printed).",
    )
    wait.add_argument("workflow_id", metavar="WORKFLOW_ID")
    wait.add_argument(
        "--until",
        type=_wait_statuses,
        required=True,
        metavar="STATUS[,STATUS]",
        help="FsmStatus values (active, awaiting_approval, waiting_for_model, "
        "waiting_for_store, completed, failed, max_steps), terminated, canceled, "
        "timed_out, or ended (any end)",
    )
    wait.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="give up after this long (default: never)",
    )
    wait.set_defaults(handler=cmd_client)

    trace = commands.add_parser(
        "trace",
        help="print a run's transition trace",
        description="Print every judged turn and decision of a run, rebuilt from its "
        "history (works with no worker running).",
    )
    trace.add_argument("workflow_id", metavar="WORKFLOW_ID")
    trace.set_defaults(handler=cmd_client)

    ls = commands.add_parser(
        "ls",
        help="list runs",
        description="List runs from the visibility store, newest first. OUTCOME is the run's "
        "FsmStatus (active, awaiting_approval, ..., completed, max_steps, failed), or how its "
        "workflow was closed from outside (terminated, canceled, timed_out); WORKFLOW is "
        "Temporal's status of the workflow (a run that ended on max_steps is a completed "
        "workflow).",
    )
    ls.add_argument("--state", help="only runs in this state")
    ls.add_argument("--awaiting-approval", action="store_true", help="only runs at a gate")
    ls.add_argument(
        "--status",
        choices=list(FSM_STATUSES),
        help="only runs with this FsmStatus (e.g. failed, waiting_for_model)",
    )
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(handler=cmd_client)

    dev = commands.add_parser(
        "dev",
        help="manage the local stack (Temporal, embedded model, worker)",
        description="Manage the local stack under .fsmflow/: the Temporal dev server, the "
        "embedded model (unless OPENAI_BASE_URL points elsewhere), a worker and the HTTP "
        "API (its token for you in .fsmflow/api-tokens, mode 0600).",
    )
    dev.add_argument("action", choices=["up", "down", "status"])
    dev.add_argument("--temporal-port", type=int, help="default 7233 (FSMFLOW_DEV_TEMPORAL_PORT)")
    dev.add_argument("--ui-port", type=int, help="default 8233 (FSMFLOW_DEV_UI_PORT)")
    dev.add_argument("--llm-port", type=int, help="default 8088 (FSMFLOW_DEV_LLM_PORT)")
    dev.add_argument("--api-port", type=int, help="default 8000 (FSMFLOW_DEV_API_PORT)")
    dev.set_defaults(handler=cmd_dev)

    demo = commands.add_parser(
        "demo",
        help="run the examples end to end on the running stack",
        description="Start the research agent from the Temporal CLI, approve its gate, and "
        "drive a short conversation with the form agent, printing every turn.",
    )
    demo.set_defaults(handler=cmd_demo)

    store = commands.add_parser(
        "store",
        help="migrate, inspect or clean up the effect ledger and artifact store",
        description="The stores the tools share: PostgreSQL when FSMFLOW_STORE_URL is set "
        "(shared by every worker), else SQLite and files on this machine. migrate: apply "
        "the schema's pending migrations (safe to run from several pods at once). status: "
        "the schema's version (exit 1 if a migration is pending). cleanup: remove the "
        "artifacts and ledger records of runs that ended before --ended-before (asks "
        "Temporal which runs have ended; a running workflow's are kept).",
    )
    store.add_argument("action", choices=["migrate", "status", "cleanup"])
    store.add_argument(
        "--ended-before",
        default="7d",
        metavar="AGE",
        help="cleanup: runs that ended at least this long ago (default 7d; e.g. 12h, 30d)",
    )
    store.add_argument(
        "--dry-run", action="store_true", help="cleanup: list what would go, remove nothing"
    )
    store.set_defaults(handler=cmd_store)

    api = commands.add_parser(
        "api",
        help="serve the HTTP API (start, message, decide, list, follow runs)",
        description="Serve fsmflow's HTTP API under /v1 (OpenAPI at /openapi.json; "
        "docs/api.md) and its web console under /console (docs/console.md) on "
        "FSMFLOW_API_HOST:FSMFLOW_API_PORT (127.0.0.1:8000). Callers send "
        "a bearer token of FSMFLOW_API_TOKENS or FSMFLOW_API_TOKENS_FILE "
        "(identity:token[:agent1|agent2]); it refuses to start without one.",
    )
    api.add_argument("--host", help="default FSMFLOW_API_HOST (127.0.0.1)")
    api.add_argument("--port", type=int, help="default FSMFLOW_API_PORT (8000)")
    api.set_defaults(handler=cmd_api)

    codec = commands.add_parser(
        "codec-server",
        help="decrypt payloads for the Temporal Web UI and CLI (remote codec)",
        description="Serve Temporal's remote codec protocol (POST /encode, /decode) with "
        "FSMFLOW_PAYLOAD_KEY and FSMFLOW_PAYLOAD_DECRYPT_KEYS, so the Web UI "
        "(--ui-codec-endpoint, or its Data Encoder setting) and the temporal CLI "
        "(--codec-endpoint) show encrypted payloads. Whoever reaches it reads them: keep "
        "it on loopback or behind access control (FSMFLOW_CODEC_SERVER_TOKEN requires a "
        "bearer token).",
    )
    codec.add_argument("--port", type=int, default=8081, help="default 8081")
    codec.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    codec.add_argument(
        "--origin",
        action="append",
        metavar="URL",
        help="Web UI origin allowed by CORS (repeatable; default: FSMFLOW_UI_URL, "
        "http://127.0.0.1:8233)",
    )
    codec.set_defaults(handler=cmd_codec_server)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args, out or sys.stdout, err or sys.stderr))


def entry() -> None:
    """Console-script entry point.

    Leaves with ``os._exit`` after flushing: temporalio's Rust core can abort the
    process during interpreter teardown (sdk-python#300), which would turn a
    finished command into a crash.
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
