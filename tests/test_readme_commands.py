"""The README's "Runs from the Temporal CLI" block stays true to the CLIs: every
``fsmflow`` command in it parses, every ``temporal`` command and flag exists, and
the block, run as written on the dev server with the scripted model (its ids and
task queue made this test's own), succeeds command by command. (On the embedded
model it takes minutes: ``make demo`` runs the same flow.)"""

from __future__ import annotations

import asyncio
import re
import shlex
import subprocess
import uuid

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.conftest import ROOT, running_worker
from tests.llm_server import ScriptedLlm, say
from tests.test_cli_commands import fsmflow
from tests.workflows.helpers import research_publish, research_to_the_gate
from workers.binaries import temporal_cli
from workers.cli import build_parser
from workers.settings import Settings

HEADING = "## Runs from the Temporal CLI"
SEPARATORS = {"&&", "||", ";", "|"}


def readme_block(heading: str) -> str:
    """The first fenced block after ``heading`` in README.md."""
    text = (ROOT / "README.md").read_text()
    start = text.index(heading + "\n")
    match = re.search(r"^```\w*\n(.*?)^```$", text[start:], re.MULTILINE | re.DOTALL)
    assert match is not None, f"no fenced block after {heading!r}"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """The block's commands as argument lists: continuation lines joined, comments
    dropped, ``a && b`` split in two."""
    logical = re.sub(r"\\\n", " ", block)
    found: list[list[str]] = []
    for line in logical.splitlines():
        words = shlex.split(line, comments=True)
        current: list[str] = []
        for word in [*words, "&&"]:
            if word in SEPARATORS:
                if current:
                    found.append(current)
                current = []
            else:
                current.append(word)
    return found


BLOCK = commands(readme_block(HEADING))


def test_the_block_starts_waits_for_the_gate_and_approves() -> None:
    lines = [" ".join(argv) for argv in BLOCK]
    start = next(i for i, line in enumerate(lines) if "--workflow-id article-1" in line)
    wait = lines.index("fsmflow wait article-1 --until awaiting_approval --timeout 600")
    signal = next(i for i, line in enumerate(lines) if line.startswith("temporal workflow signal"))
    assert lines[start].startswith("temporal workflow start ") and start < wait < signal
    assert "--workflow-id article-1 --name approve" in lines[signal]
    assert {argv[0] for argv in BLOCK} == {"temporal", "fsmflow"}


@pytest.mark.parametrize("argv", [argv for argv in BLOCK if argv[0] == "fsmflow"], ids=" ".join)
def test_fsmflow_commands_parse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"the README's {' '.join(argv)!r} does not parse: {capsys.readouterr().err}")


@pytest.mark.parametrize("argv", [argv for argv in BLOCK if argv[0] == "temporal"], ids=" ".join)
def test_temporal_commands_and_flags_exist(argv: list[str]) -> None:
    words = argv[1:]
    path = []
    for word in words:
        if word.startswith("-"):
            break
        path.append(word)
    shown = subprocess.run(
        [str(temporal_cli()), *path, "--help"], capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    # An unknown subcommand prints its parent's help: the usage line names the command.
    assert f"temporal {' '.join(path)} [flags]" in shown.stdout, shown.stdout
    for flag in (word for word in words if word.startswith("-")):
        name = flag.split("=", 1)[0]
        assert re.search(rf"(?<![\w-]){re.escape(name)}\b", shown.stdout), (
            f"{' '.join(path)}: no flag {name}"
        )


async def test_the_block_runs_as_written_on_the_scripted_model(
    temporal_env: WorkflowEnvironment,
    client: Client,
    llm: ScriptedLlm,
    model_name: str,
    settings: Settings,
) -> None:
    llm.script(
        model_name,
        say("ask_email", "Hi Ada, your email?", name="Ada"),
        *research_to_the_gate(),
        *research_publish(),
    )
    own = uuid.uuid4().hex[:8]
    renames = {
        "fsmflow-agents": settings.task_queue,
        "ada-1": f"ada-{own}",
        "article-1": f"a-{own}",
    }
    address = temporal_env.client.service_client.config.target_host
    ran: list[tuple[str, int, str, str]] = []
    async with running_worker(client, settings):
        for argv in BLOCK:
            for old, new in renames.items():
                argv = [word.replace(old, new) for word in argv]
            if argv[0] == "fsmflow":
                code, out, err = await fsmflow(temporal_env, settings, *argv[1:])
            else:
                process = await asyncio.create_subprocess_exec(
                    str(temporal_cli()),
                    *argv[1:],
                    "--address",
                    address,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                stdout, stderr = await process.communicate()
                code, out, err = process.returncode or 0, stdout.decode(), stderr.decode()
            ran.append((" ".join(argv), code, out, err))
            assert code == 0, ran[-1]
    outputs = {line: out for line, _, out, _ in ran}
    assert outputs[f"fsmflow wait a-{own} --until awaiting_approval --timeout 600"] == (
        f"a-{own}: awaiting_approval in state publish_gate\n"
    )
    assert outputs[f"fsmflow wait a-{own} --until completed --timeout 600"].startswith(
        f"a-{own}: ended completed, agent research, state published"
    )
    assert outputs[f"fsmflow status ada-{own}"].startswith(
        f"ada-{own}: agent contact_form v1, state ask_email, active, step 1/30"
    )
    assert f"a-{own}" in outputs["temporal workflow list -q FsmAgent='research'"]
