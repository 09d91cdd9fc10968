"""Who calls the API: bearer tokens, the identities they stand for, rate limits.

Tokens come from ``FSMFLOW_API_TOKENS`` (comma-separated entries) and
``FSMFLOW_API_TOKENS_FILE`` (an entry a line; ``#`` starts a comment). An entry
is ``identity:token``, or ``identity:token:agent1|agent2`` for an identity that
may use only those agents (by their definitions' names, as ``FsmAgent`` shows
them). An identity may have several tokens (to rotate one: add the new token,
move the clients, remove the old one); the file is read again when it changes.

Tokens are secrets: only their SHA-256 digests are kept, a presented token is
hashed and compared with every digest in constant time (``hmac.compare_digest``),
and no message, log line or error ever quotes one.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog
from starlette.requests import Request

from schemas.definition import AGENT_NAME_PATTERN
from schemas.workflow import MAX_BY_CHARS
from workers.api.errors import ApiError

log = structlog.get_logger("fsmflow.api")

IDENTITY = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._@-]{{0,{MAX_BY_CHARS - 1}}}")
"""An identity is what a decision records as ``by``, so it fits there."""
MIN_TOKEN_CHARS = 16
TOKEN = re.compile(rf"[A-Za-z0-9._~+/=-]{{{MIN_TOKEN_CHARS},512}}")
"""Base64, base64url or hex: what ``openssl rand`` and ``secrets`` produce."""
_AGENT = re.compile(AGENT_NAME_PATTERN)
RELOAD_EVERY = 1.0
"""Seconds between two looks at the tokens file."""


class TokenError(ValueError):
    """The tokens are misconfigured; the message says where, never what a token is."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    name: str
    agents: frozenset[str] | None = None
    """The agents it may use; None: every agent."""

    def may_use(self, agent: str | None) -> bool:
        """Whether the identity may use ``agent`` (an unknown agent only if unrestricted)."""
        return self.agents is None or (agent is not None and agent in self.agents)

    def describe(self) -> str:
        """The identity and its agents, for messages and logs (no secret in it)."""
        if self.agents is None:
            return self.name
        return f"{self.name} (agents: {', '.join(sorted(self.agents))})"


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    identity: Identity
    where: str


def digest(token: str) -> bytes:
    """The SHA-256 of a token: what the table keeps and compares."""
    return hashlib.sha256(token.encode()).digest()


def parse_entry(where: str, text: str) -> _Entry:
    """One ``identity:token[:agent1|agent2]`` entry.

    Raises:
        TokenError: If it is malformed; the message names ``where`` and, once it
            is known to be one, the identity.
    """
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise TokenError(f"{where}: expected identity:token or identity:token:agent1|agent2")
    name, token = parts[0].strip(), parts[1].strip()
    if not IDENTITY.fullmatch(name):
        raise TokenError(
            f"{where}: the identity must be letters, digits and . _ @ - (at most "
            f"{MAX_BY_CHARS} characters, the first a letter or digit)"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(
            f"{where} (identity {name!r}): the token is shorter than {MIN_TOKEN_CHARS} "
            "characters; make one with `openssl rand -base64 32`"
        )
    if not TOKEN.fullmatch(token):
        raise TokenError(
            f"{where} (identity {name!r}): the token may hold only letters, digits and "
            ". _ ~ + / = - (at most 512 characters)"
        )
    agents: frozenset[str] | None = None
    if len(parts) == 3:
        names = [agent.strip() for agent in parts[2].split("|") if agent.strip()]
        if not names:
            raise TokenError(f"{where} (identity {name!r}): no agent after the second ':'")
        for agent in names:
            if not _AGENT.fullmatch(agent):
                raise TokenError(f"{where} (identity {name!r}): {agent!r} is not an agent name")
        agents = frozenset(names)
    return _Entry(digest(token), Identity(name, agents), where)


def parse_inline(spec: str) -> list[_Entry]:
    """The entries of ``FSMFLOW_API_TOKENS`` (comma-separated)."""
    entries = [part for part in spec.split(",") if part.strip()]
    return [
        parse_entry(f"FSMFLOW_API_TOKENS entry {number}", text)
        for number, text in enumerate(entries, start=1)
    ]


def parse_file(path: Path) -> list[_Entry]:
    """The entries of a tokens file (one a line; blank lines and ``#`` comments skipped).

    Raises:
        TokenError: If the file cannot be read or an entry is malformed.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise TokenError(f"FSMFLOW_API_TOKENS_FILE: cannot read {path}: {reason}") from None
    return [
        parse_entry(f"{path} line {number}", line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _check_unique(entries: Iterable[_Entry]) -> None:
    seen: dict[bytes, _Entry] = {}
    for entry in entries:
        other = seen.get(entry.digest)
        if other is not None:
            raise TokenError(f"{other.where} and {entry.where} have the same token")
        seen[entry.digest] = entry


class Tokens:
    """The token table: inline entries, and a file's, read again when it changes.

    A file that becomes unreadable or malformed after the start authenticates
    nobody until it is fixed (fail closed: a token removed by an edit with a typo
    must not stay valid); the error is logged, without any token in it.
    """

    def __init__(
        self,
        *,
        inline: str | None = None,
        path: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read the tokens.

        Raises:
            TokenError: If there is none, or one is malformed or given twice.
        """
        self._inline = parse_inline(inline) if inline else []
        self._path = path
        self._clock = clock
        self._file: list[_Entry] = []
        self._stamp: tuple[int, int, int] | None = None
        self._checked = clock()
        if path is not None:
            self._stamp = self._stat()
            self._file = parse_file(path)
        _check_unique([*self._inline, *self._file])
        if not self._inline and not self._file:
            raise TokenError(
                "no API tokens: set FSMFLOW_API_TOKENS (identity:token,...) or "
                "FSMFLOW_API_TOKENS_FILE (a file of identity:token lines)"
            )

    def _stat(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            # Through symlinks: a Kubernetes Secret volume swaps a link on update.
            found = os.stat(self._path)
        except OSError:
            return None
        return (found.st_ino, found.st_mtime_ns, found.st_size)

    def _refresh(self) -> None:
        if self._path is None or self._clock() - self._checked < RELOAD_EVERY:
            return
        self._checked = self._clock()
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            entries = parse_file(self._path)
            _check_unique([*self._inline, *entries])
        except TokenError as exc:
            self._file = []
            log.error("api.tokens_refused", problem=str(exc), path=str(self._path))
            return
        self._file = entries
        log.info("api.tokens_reloaded", path=str(self._path), **self.summary())

    def identify(self, token: str) -> Identity | None:
        """The identity a presented token stands for, or None.

        Every known digest is compared (no early exit), each in constant time.
        """
        self._refresh()
        presented = digest(token)
        found: Identity | None = None
        for entry in [*self._inline, *self._file]:
            if hmac.compare_digest(presented, entry.digest):
                found = entry.identity
        return found

    def summary(self) -> dict[str, object]:
        """What the table holds, fit for logs: identities, never tokens."""
        identities = {e.identity.name: e.identity for e in [*self._inline, *self._file]}
        return {
            "tokens": len(self._inline) + len(self._file),
            "identities": sorted(identity.describe() for identity in identities.values()),
        }


class RateLimiter:
    """A token bucket per identity: ``capacity`` requests at once, refilled at ``rate``/s.

    Per process: each replica of the API keeps its own buckets.
    """

    def __init__(
        self, capacity: float, rate: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """A limiter; ``rate`` is in requests per second."""
        self.capacity = capacity
        self.rate = rate
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> float:
        """Take one request from ``key``'s bucket: 0 if allowed, else seconds to wait."""
        now = self._clock()
        level, last = self._buckets.get(key, (self.capacity, now))
        level = min(self.capacity, level + (now - last) * self.rate)
        if level >= 1:
            self._buckets[key] = (level - 1, now)
            return 0.0
        self._buckets[key] = (level, now)
        return (1 - level) / self.rate


def authenticate(request: Request, token: str | None) -> Identity:
    """The identity a request's token stands for, which takes one from its rate bucket.

    The bearer header (``/v1``) and the console's cookie both end here, so both
    are checked by the same table and limited by the same buckets.

    Raises:
        ApiError: 401 without a valid token, 429 over the identity's rate.
    """
    state = request.app.state
    if token is None:
        raise ApiError(
            401,
            "no token: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    identity = state.tokens.identify(token)
    if identity is None:
        raise ApiError(
            401,
            "the token is not valid",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.identity = identity.name
    if state.limiter is not None:
        wait = state.limiter.take(identity.name)
        if wait > 0:
            raise ApiError(
                429,
                f"too many requests from {identity.name!r} (FSMFLOW_API_RATE "
                f"{state.settings.api_rate}); retry in {wait:.1f} s",
                headers={"Retry-After": str(math.ceil(wait))},
            )
    assert isinstance(identity, Identity)
    return identity
