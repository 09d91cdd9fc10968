"""What a hostile definition costs ``fsmflow check`` (and a worker at start, and a
run at start, which read definitions the same way): each case runs in a fresh
process, timed and with its peak memory, under a time and memory cap.

    .venv/bin/python bench/definitions_hostile.py [--code DIR] [--timeout 60]

``--code`` runs the cases against another checkout (e.g. ``git archive HEAD``
unpacked somewhere) to compare before and after; the cases only use what both
have (``load_text``, ``check_definition``). Run it as a file, not with ``-m``, so
``--code`` decides which ``fsm`` is imported. The machine is shared and noisy:
compare within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MEMORY_CAP = 3 * 1024**3
"""Address space of one case: an alias bomb is stopped here rather than by the machine."""


def alias_bomb(levels: int) -> str:
    """The "billion laughs": ``levels`` lines of 10 aliases, 10**levels values in 300 bytes."""
    lines = [
        "name: bomb",
        "initial_state: a",
        "states: {a: {terminal: true}}",
        "x0: &x0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    ]
    lines += [f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * 10) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def chain(count: int) -> dict[str, Any]:
    """``count`` states in a line; the last one ends the run."""
    states: dict[str, Any] = {
        f"s{i}": {"transitions": [{"target": f"s{i + 1}"}]} for i in range(count - 1)
    }
    states[f"s{count - 1}"] = {"terminal": True}
    return {"name": "chain", "initial_state": "s0", "states": states}


def deep_guard(levels: int) -> str:
    """A definition (JSON text) whose only guard nests ``levels`` operations.

    ``{"and": [{"and": [... {"var": "ok"} ..., true]}, true]}``, written out as
    text: ``json.dumps`` itself stops at Python's recursion limit.
    """
    when = '{"and": [' * (levels - 1) + '{"var": "ok"}' + ", true]}" * (levels - 1)
    return (
        '{"name": "deep", "initial_state": "a", "context": {"ok": {"type": "boolean"}}, '
        f'"states": {{"a": {{"transitions": [{{"target": "b", "when": {when}}}]}}, '
        '"b": {"terminal": true}}}'
    )


def yaml_text(data: dict[str, Any]) -> str:
    """``data`` as a person would write it in YAML (block style)."""
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def check_text(text: str, source: str) -> str:
    """What ``fsmflow check FILE`` does with the file's text; returns the outcome."""
    from fsm.loader import load_text
    from fsm.problems import DefinitionError

    try:
        loaded = load_text(text, source=source)
    except DefinitionError as exc:
        return "refused: " + exc.problems[0].render()[:110]
    passed = f"passed ({len(loaded.definition.states)} states)"
    try:
        # What resolve_definition records, and every run then carries.
        recorded = loaded.definition.model_dump_json()
    except ValueError as exc:
        return f"{passed}, but a run cannot record it: {str(exc)[:60]}"
    if len(recorded) > 2 * 1024**2:
        return f"{passed}, but it exceeds Temporal's 2 MB payload limit"
    return passed


def recorded(data: dict[str, Any]) -> Any:
    """``data`` validated as a recorded definition, exempt from the limits.

    The limits would refuse it before the checks; this measures the checks themselves.
    """
    from schemas.definition import AgentDefinition

    try:
        from schemas.definition import RECORDED
    except ImportError:  # code from before definition limits: nothing to skip
        RECORDED = {}  # noqa: N806

    return AgentDefinition.model_validate(data, context=RECORDED)


def check_graph(definition: Any) -> str:
    """The static checks alone (``check_definition``)."""
    from fsm.checks import check_definition

    return f"{len(check_definition(definition))} problems"


Case = tuple[str, Callable[[], Any], Callable[[Any], str]]
"""A label, what builds the input (not timed), and what is timed."""

CASES: dict[str, Case] = {
    "alias_bomb_7": (
        "YAML alias bomb, 7 levels (10**7 values)",
        lambda: alias_bomb(7),
        lambda text: check_text(text, "bomb.yaml"),
    ),
    "alias_bomb_9": (
        "YAML alias bomb, 9 levels (10**9 values)",
        lambda: alias_bomb(9),
        lambda text: check_text(text, "bomb.yaml"),
    ),
    "chain_check_yaml": (
        "fsmflow check: 10,000-state chain (YAML)",
        lambda: yaml_text(chain(10_000)),
        lambda text: check_text(text, "chain.yaml"),
    ),
    "chain_check_json": (
        "fsmflow check: 10,000-state chain (JSON)",
        lambda: json.dumps(chain(10_000)),
        lambda text: check_text(text, "chain.json"),
    ),
    "chain_graph_2000": (
        "checks alone: 2,000-state chain",
        lambda: recorded(chain(2_000)),
        check_graph,
    ),
    "chain_graph_10000": (
        "checks alone: 10,000-state chain",
        lambda: recorded(chain(10_000)),
        check_graph,
    ),
    "guard_400": (
        "fsmflow check: 400-level guard (JSON)",
        lambda: deep_guard(400),
        lambda text: check_text(text, "deep.json"),
    ),
    "guard_600": (
        "fsmflow check: 600-level guard (JSON)",
        lambda: deep_guard(600),
        lambda text: check_text(text, "deep.json"),
    ),
    "description_3mb": (
        "fsmflow check: 3 MB description (JSON)",
        lambda: json.dumps({**chain(2), "description": "x" * 3_000_000}),
        lambda text: check_text(text, "big.json"),
    ),
}


def run_case(name: str) -> None:
    """Run one case in this process; print its result as JSON."""
    import fsm.checks
    import fsm.loader  # noqa: F401 - imported before the clock starts, as in a worker

    _, prepare, timed = CASES[name]
    given = prepare()
    started = time.perf_counter()
    try:
        outcome = timed(given)
    except BaseException as exc:  # noqa: BLE001 - what the old code raised is the figure
        outcome = f"crashed: {type(exc).__name__}: {str(exc)[:80]}"
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_mb": peak, "outcome": outcome}))


def measure(name: str, code: Path, timeout: float) -> str:
    """One case in a fresh, capped process; a line for the table."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    env = {**os.environ, "PYTHONPATH": str(code)}
    try:
        done = subprocess.run(
            [sys.executable, __file__, "--case", name],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=code,
            preexec_fn=cap,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"> {timeout:5.0f} s   (stopped)      still running"
    if done.returncode != 0 or not done.stdout.strip():
        reason = (done.stderr.strip().splitlines() or ["?"])[-1][:60]
        return f"  exit {done.returncode}               {reason}"
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return f"{result['seconds']:7.3f} s {result['peak_mb']:7.0f} MB peak   {result['outcome']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", type=Path, default=Path(__file__).parents[1])
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--case", choices=sorted(CASES), help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), default=None)
    args = parser.parse_args()
    if args.case:
        run_case(args.case)
        return
    print(f"code: {args.code.resolve()} (cap {args.timeout:.0f} s, {MEMORY_CAP // 1024**3} GB)")
    for name in args.only or CASES:
        print(f"  {CASES[name][0]:42} {measure(name, args.code, args.timeout)}", flush=True)


if __name__ == "__main__":
    main()
