"""How large a definition may be: every bound in one place (docs/format.md, "Limits").

A definition comes from a file anyone with access to the agents directory can
write, or inline from anyone who can start a run. It is parsed by ``fsmflow
check``, by every worker at start and at every run start, recorded in the run's
history, carried across continue-as-new, and shown to the model. So everything it
holds is bounded, and each bound is refused with one line naming the limit before
the work it protects is done. Definitions recorded by a run are exempt (see
``schemas.definition.RECORDED``): raising a limit is always safe, lowering one
never stops a running run.
"""

from __future__ import annotations

KIB = 1024

# The document, before it is validated.
MAX_SOURCE_BYTES = 512 * KIB
"""A definition file (YAML or JSON) or text; read no further than this."""
MAX_NESTING = 64
"""Levels of mappings and lists in a document (the format itself uses 5)."""
MAX_VALUES = 50_000
"""Keys, values and items in a document: bounds parsing time and memory."""

# The validated definition.
MAX_DEFINITION_BYTES = 256 * KIB
"""The definition as a run records it (compact JSON, defaults filled in): it is in
a payload of its own several times per run, and Temporal refuses payloads over
2 MB, so this leaves room for the run's state next to it in a snapshot."""
MAX_STATES = 500
MAX_TRANSITIONS = 100
"""Transitions of one state."""
MAX_CONTEXT_KEYS = 200
"""Declared context keys; also bounds the name lists (collects, sees, requires, writes)."""
MAX_TOOLS = 100
"""Tools a state lists, and entries in the ``tools`` section."""
MAX_ENUM_VALUES = 500
MAX_APPROVERS = 100
MAX_TEXT_LENGTH = 16_000
"""Characters of prose: description, persona, purpose, instructions, fallback message."""
MAX_NAME_LENGTH = 100
"""Characters of a name: state ids, context keys, tools, tiers, targets, durations, version."""
MAX_VALUE_LENGTH = 1_000
"""Characters of a value: an enum value, a pattern, an approver."""
MAX_GUARD_DEPTH = 32
"""Levels of objects and lists in a ``when`` (``{">=": [{"var": "age"}, 18]}`` is 3):
guards are evaluated recursively, so a deeper one is refused before anything runs it."""
MAX_DURATION_SECONDS = 3650 * 24 * 3600
"""Ten years: a timeout, heartbeat or approval timeout longer than Python's and
Temporal's durations can hold would fail the run that reaches it."""

# Reporting.
MAX_PROBLEMS = 100
"""Problems listed in one refusal; the rest are counted. A refusal is printed and
recorded in the run's history as a failure message, so it is bounded too."""
MAX_SUGGESTION_CHOICES = 1_000
"""Names "did you mean" compares against (it costs time per name and problem)."""
