"""Problems found in a definition, and the one exception that carries them."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from schemas.limits import MAX_NAME_LENGTH, MAX_PROBLEMS, MAX_SUGGESTION_CHOICES

Path = tuple[str | int, ...]

_MESSAGE_LENGTH = 1_000
"""A rendered problem's message is cut here: a last guard for values quoted in it."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ``"; did you mean 'x'?"`` suffix when a close match exists, else ``""``.

    Names longer than a name may be, and lists longer than ``MAX_SUGGESTION_CHOICES``,
    get no suggestion: comparing costs time per name, and a definition with many
    problems asks once per problem.
    """
    names = list(choices)
    if len(word) > MAX_NAME_LENGTH or len(names) > MAX_SUGGESTION_CHOICES:
        return ""
    match = difflib.get_close_matches(word, names, n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


def quote(name: object) -> str:
    """``repr`` of a name from a document, cut to the longest name a definition may use."""
    return repr(clip(name, MAX_NAME_LENGTH) if isinstance(name, str) else name)


def describe_path(path: Path) -> str:
    """Render a document path as people read it: ``state 'a': transition 2: when``."""
    parts: list[str] = []
    i = 0
    while i < len(path):
        item = path[i]
        following = path[i + 1] if i + 1 < len(path) else None
        if item == "states" and following is not None:
            parts.append(f"state {quote(following)}")
            i += 2
        elif item == "context" and following is not None and i == 0:
            parts.append(f"context key {quote(following)}")
            i += 2
        elif item == "transitions" and isinstance(following, int):
            parts.append(f"transition {following + 1}")
            i += 2
        elif isinstance(item, int):
            parts[-1:] = [f"{parts[-1] if parts else ''}[{item + 1}]"]
            i += 1
        else:
            parts.append(clip(str(item), MAX_NAME_LENGTH))
            i += 1
    return ": ".join(parts)


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a definition.

    Attributes:
        message: What is wrong, in words a user can act on.
        path: Where in the document (``("states", "a", "transitions", 1)``).
        severity: ``error`` refuses the definition; ``warning`` is only printed.
        line: The 1-based line in the source file, when known.
        anchor: Where to look up the line when it is not ``path`` (a problem
            about a key's name is worded without a path but sits on its line).
    """

    message: str
    path: Path = ()
    severity: Literal["error", "warning"] = "error"
    line: int | None = None
    anchor: Path | None = None

    def render(self, source: str | None = None) -> str:
        """One line: ``file: [warning: ]state 'x': transition 2: message (line N)``."""
        pieces = [source] if source else []
        if self.severity == "warning":
            pieces.append("warning")
        where = describe_path(self.path)
        if where:
            pieces.append(where)
        pieces.append(clip(self.message, _MESSAGE_LENGTH))
        text = ": ".join(pieces)
        return f"{text} (line {self.line})" if self.line else text


def locate(problems: Iterable[Problem], lines: Mapping[Path, int]) -> list[Problem]:
    """Attach line numbers from a loader's path->line map (deepest known prefix)."""
    located = []
    for problem in problems:
        line = problem.line
        path = problem.anchor if problem.anchor is not None else problem.path
        while line is None and path:
            line = lines.get(path)
            path = path[:-1]
        located.append(dataclasses.replace(problem, line=line))
    return located


class DefinitionError(ValueError):
    """A definition was refused; the message lists every problem, one per line.

    Attributes:
        source: The file (or label) the definition came from.
        problems: Every error found (warnings are not raised), at most
            ``MAX_PROBLEMS`` of them and then one that counts the rest.
    """

    def __init__(self, source: str, problems: Sequence[Problem]) -> None:
        """Build the error from its problems (at least one)."""
        self.source = source
        self.problems = list(problems[:MAX_PROBLEMS])
        if len(problems) > MAX_PROBLEMS:
            rest = len(problems) - MAX_PROBLEMS
            self.problems.append(
                Problem(f"{rest:,} more problem{'s' if rest != 1 else ''} not listed")
            )
        count = len(problems)
        header = f"{source}: definition refused, {count:,} problem{'s' if count != 1 else ''}"
        body = "\n".join("  " + problem.render(source) for problem in self.problems)
        super().__init__(f"{header}\n{body}")


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, an ellipsis marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def validation_problem(error: ValidationError, whole: str) -> str:
    """The first problem of a pydantic error as ``where: what`` (``whole`` when at the top)."""
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or whole
    return f"{where}: {first['msg']}"
