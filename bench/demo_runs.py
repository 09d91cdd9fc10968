"""How dependable ``make demo`` is: the demo run N times on the local stack.

    .venv/bin/python -m bench.demo_runs [--runs 5] [--tasks] [--keep-up]

Starts the local stack the way ``make demo`` does (``fsmflow dev up``: the
Temporal dev server, the embedded SmolLM2-135M, a worker, the HTTP API) unless
one is already up, then runs ``fsmflow demo`` N times in a row and reads what
each printed: where the research run ended (``published`` is the goal: it
reached its gate, was approved and published), the call-back form's path, the
model turns, the re-asks and the illegal moves (always 0: the demo exits 1
otherwise), and how long each demo took. Issue #18's goal: the research run
publishes in every one of 5 consecutive runs. With ``--tasks`` the research agent
also runs on the other tasks of ``TASKS`` (``fsmflow run``, ``fsmflow wait`` for
its gate, ``fsmflow approve``), the way the README's commands do. Timings are the
shared machine's; nothing here asserts on them.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FSMFLOW = Path(sys.executable).parent / "fsmflow"

ENDED = re.compile(r"^    ended: (\w+) in (\w+) \((.*)\); (\d+) tokens$", re.M)
PATH = re.compile(r"^    path: (.*); the run is (\w+) in (\w+)$", re.M)
SUMMARY = re.compile(
    r"^(\d+) model turns, (\d+) rejected and re-asked, (\d+) tool calls executed, "
    r"(\d+) illegal moves applied\.$",
    re.M,
)


TASKS = [
    "Write about FSMs",
    "Durable execution",
    "Explain retries and idempotency for tool calls",
    "Write about human approval gates",
    "Temporal workflows for AI agents",
    "Write about 1.0.0.RELEASE",
    "qwerty zxcv",
]
"""Research tasks besides the demo's: plain ones, and ones the corpus knows nothing of."""


@dataclass
class Demo:
    seconds: float
    exit_code: int
    research: str
    research_reason: str
    callback_path: str
    callback_state: str
    turns: int
    rejected: int
    tools: int
    illegal: int


def fsmflow(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FSMFLOW), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def one_demo() -> Demo:
    started = time.monotonic()
    done = fsmflow("demo", timeout=1200)
    seconds = time.monotonic() - started
    ended = ENDED.search(done.stdout)
    path = PATH.search(done.stdout)
    summary = SUMMARY.search(done.stdout)
    numbers = [int(n) for n in summary.groups()] if summary else [-1] * 4
    return Demo(
        seconds=seconds,
        exit_code=done.returncode,
        research=ended[2] if ended else "?",
        research_reason=ended[3] if ended else (done.stderr.strip().splitlines() or ["?"])[-1],
        callback_path=path[1] if path else "?",
        callback_state=path[3] if path else "?",
        turns=numbers[0],
        rejected=numbers[1],
        tools=numbers[2],
        illegal=numbers[3],
    )


def research_on(task: str, index: int) -> str:
    """One research run on ``task`` through the CLI; how it ended (``fsmflow status``)."""
    workflow_id = f"bench-research-{index}-{int(time.time())}"
    started = fsmflow(
        "run", "research", "--id", workflow_id, "--input", json.dumps({"task": task}), timeout=60
    )
    if started.returncode != 0:
        return f"not started: {started.stderr.strip()}"
    gate = fsmflow(
        "wait", workflow_id, "--until", "awaiting_approval", "--timeout", "600", timeout=700
    )
    if gate.returncode == 0:
        fsmflow("approve", workflow_id, "--by", "bench", timeout=60)
    fsmflow("wait", workflow_id, "--until", "ended", "--timeout", "300", timeout=400)
    return fsmflow("status", workflow_id, timeout=60).stdout.strip().splitlines()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", action="store_true", help="also research the TASKS")
    parser.add_argument("--keep-up", action="store_true", help="leave the stack running")
    args = parser.parse_args()
    up = fsmflow("dev", "up", timeout=600)
    if up.returncode != 0:
        raise SystemExit(f"fsmflow dev up failed:\n{up.stdout}{up.stderr}")
    started_here = "already running" not in up.stdout
    demos: list[Demo] = []
    ended: list[str] = []
    try:
        for i in range(args.runs):
            demo = one_demo()
            demos.append(demo)
            sys.stdout.write(
                f"run {i + 1}: exit {demo.exit_code}, {demo.seconds:.0f} s; research ended in "
                f"{demo.research} ({demo.research_reason}); call-back form: "
                f"{demo.callback_path}; {demo.turns} turns, {demo.rejected} re-asked, "
                f"{demo.tools} tool calls, {demo.illegal} illegal moves\n"
            )
            sys.stdout.flush()
        for i, task in enumerate(TASKS if args.tasks else []):
            ended.append(research_on(task, i))
            sys.stdout.write(f"task {task!r}: {ended[-1]}\n")
            sys.stdout.flush()
    finally:
        if started_here and not args.keep_up:
            fsmflow("dev", "down", timeout=120)
    published = sum(d.research == "published" for d in demos)
    submitted = sum(d.callback_state == "submitted" for d in demos)
    if demos:
        sys.stdout.write(
            f"\nresearch published in {published}/{len(demos)} demos; call-back form submitted "
            f"in {submitted}/{len(demos)}; illegal moves {sum(d.illegal for d in demos)}; "
            f"demo seconds median {statistics.median(d.seconds for d in demos):.0f}, "
            f"max {max(d.seconds for d in demos):.0f}\n"
        )
    if ended:
        published = sum("state published" in line for line in ended)
        sys.stdout.write(f"research on other tasks: published {published}/{len(ended)}\n")


if __name__ == "__main__":
    main()
