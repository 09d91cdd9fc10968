"""What finding a run's definition costs with 50 definitions in the agents directory:
parsing and checking every file for each run (``load_agents``, what the resolve
activity did before) against the cached directory, which lists and stats the
files and parses only those that changed.

    .venv/bin/python -m bench.definitions [--files 50] [--repeat 30]

Prints milliseconds per lookup; the machine is shared and noisy, so compare
within one run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from activities.definitions import AgentsDirectory, load_agents
from tests.conftest import EXAMPLES


def fill(directory: Path, count: int) -> None:
    """``count`` definitions: the form and support examples under new names."""
    sources = [(EXAMPLES / name).read_text() for name in ("form.yaml", "support.yaml")]
    originals = ["name: contact_form", "name: support"]
    for i in range(count):
        text = sources[i % 2].replace(originals[i % 2], f"name: agent_{i:02d}", 1)
        (directory / f"agent_{i:02d}.yaml").write_text(text)


def milliseconds(lookup: Callable[[], object], repeat: int) -> float:
    """The median of ``repeat`` timed lookups, in milliseconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        lookup()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        fill(directory, args.files)
        agent = f"agent_{args.files // 2:02d}"
        cached = AgentsDirectory(directory)
        started = time.perf_counter()
        cached.load()
        first = (time.perf_counter() - started) * 1000
        every = milliseconds(lambda: load_agents(directory)[agent], args.repeat)
        warm = milliseconds(lambda: cached.load()[agent], args.repeat)
    print(f"resolving one agent among {args.files} definitions (median of {args.repeat}):")
    print(f"  parse every file each time (before)  {every:8.2f} ms")
    print(f"  cached, no file changed (after)      {warm:8.2f} ms   ({every / warm:.0f}x faster)")
    print(f"  cached, first lookup                 {first:8.2f} ms")


if __name__ == "__main__":
    main()
