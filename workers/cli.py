"""The ``fsmflow`` command line.

Commands print to stdout/stderr (this is the user interface, not library code)
and turn every expected failure into one clear line and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from fsm.diagram import mermaid
from fsm.loader import load_file
from fsm.problems import DefinitionError
from schemas.definition import definition_json_schema


def cmd_check(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Check definition files; exit 1 if any has an error."""
    failed = False
    for path in args.files:
        try:
            loaded = load_file(path)
        except DefinitionError as exc:
            failed = True
            for problem in exc.problems:
                print(problem.render(exc.source), file=err)
            continue
        for warning in loaded.warnings:
            print(warning.render(loaded.source), file=out)
        definition = loaded.definition
        transitions = sum(len(s.transitions) for s in definition.states.values())
        gates = sum(1 for s in definition.states.values() if s.approval is not None)
        print(
            f"{path}: ok: agent {definition.name!r} v{definition.version}, {definition.mode}, "
            f"{len(definition.states)} states, {transitions} transitions, {gates} approval gates",
            file=out,
        )
    return 1 if failed else 0


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
            print(problem.render(exc.source), file=err)
        return 1
    out.write(mermaid(loaded.definition))
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
        "files (YAML or JSON): exit 0 with a summary per valid file, 1 with one line per problem.",
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=cmd_check)

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

    worker = commands.add_parser(
        "worker",
        help="run a worker (settings from the environment)",
        description="Run an fsmflow worker: registers AgentWorkflow and the activities on "
        "FSMFLOW_TASK_QUEUE at TEMPORAL_ADDRESS; SIGTERM drains it. See the README for "
        "every environment variable.",
    )
    worker.set_defaults(handler=cmd_worker)
    return parser


def main(
    argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args, out or sys.stdout, err or sys.stderr))


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
