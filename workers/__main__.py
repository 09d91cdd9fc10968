"""``python -m workers``: the fsmflow command line."""

from workers.cli import entry

entry()
