"""The API's tokens and rate limits, without a server: parsing, refusals that never
quote a token, rotation through the tokens file, and the token bucket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.api.auth import Identity, RateLimiter, TokenError, Tokens
from workers.settings import Settings, parse_rate

ALICE = "alice-secret-token-0123456789"
BOB = "bob-secret-token-0123456789ab"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_inline_tokens_and_restricted_identities() -> None:
    tokens = Tokens(inline=f" alice:{ALICE} , bob:{BOB}:research|support ,")
    assert tokens.identify(ALICE) == Identity("alice")
    bob = tokens.identify(BOB)
    assert bob == Identity("bob", frozenset({"research", "support"}))
    assert bob is not None and bob.may_use("research") and not bob.may_use("contact_form")
    assert not bob.may_use(None) and Identity("alice").may_use(None)
    assert tokens.identify("alice") is None and tokens.identify(ALICE + "x") is None
    assert tokens.identify("") is None
    assert tokens.summary() == {
        "tokens": 2,
        "identities": ["alice", "bob (agents: research, support)"],
    }


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("", "no API tokens: set FSMFLOW_API_TOKENS"),
        (ALICE, "FSMFLOW_API_TOKENS entry 1: expected identity:token"),
        (f"alice:{ALICE}:research:x", "entry 1: expected identity:token"),
        (f"al ice:{ALICE}", "entry 1: the identity must be letters, digits"),
        (f"alice:{ALICE},bob:short", "entry 2 (identity 'bob'): the token is shorter than 16"),
        (f"alice:{ALICE[:-1]}\u00e9", "(identity 'alice'): the token may hold only"),
        (f"alice:{ALICE}:", "(identity 'alice'): no agent after the second ':'"),
        (f"alice:{ALICE}:re search", "(identity 'alice'): 're search' is not an agent name"),
        (f"alice:{ALICE},bob:{ALICE}", "entry 1 and FSMFLOW_API_TOKENS entry 2 have the same"),
    ],
)
def test_malformed_tokens_are_refused_without_quoting_them(spec: str, problem: str) -> None:
    with pytest.raises(TokenError) as refused:
        Tokens(inline=spec)
    assert problem in str(refused.value)
    assert ALICE not in str(refused.value) and ALICE[:-1] not in str(refused.value)


def test_the_file_is_read_again_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"# who may call the API\n\nalice:{ALICE}\n")
    clock = Clock()
    tokens = Tokens(path=path, clock=clock)
    assert tokens.identify(ALICE) == Identity("alice")
    # Rotation: a second token for alice, then the first one removed.
    path.write_text(f"alice:{ALICE}\nalice:{BOB}\n")
    clock.now += 2
    assert tokens.identify(BOB) == Identity("alice")
    path.write_text(f"alice:{BOB}\n")
    os.utime(path, ns=(1, 1))  # a change is seen whatever the clock's resolution
    clock.now += 2
    assert tokens.identify(ALICE) is None and tokens.identify(BOB) == Identity("alice")


def test_a_broken_file_authenticates_nobody_until_fixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice:{ALICE}\n")
    clock = Clock()
    tokens = Tokens(inline=f"bob:{BOB}", path=path, clock=clock)
    path.write_text(f"alice:{ALICE}\nmallory {ALICE}\n")
    clock.now += 2
    assert tokens.identify(ALICE) is None  # fail closed
    assert tokens.identify(BOB) == Identity("bob")  # the environment's tokens still work
    path.write_text(f"alice:{ALICE}\n")
    os.utime(path, ns=(2, 2))
    clock.now += 2
    assert tokens.identify(ALICE) == Identity("alice")
    logged = capsys.readouterr()
    assert ALICE not in logged.out + logged.err


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="FSMFLOW_API_TOKENS_FILE: cannot read .*nope"):
        Tokens(path=tmp_path / "nope")


def test_the_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(*_rate("2/s"), clock=clock)
    assert [limiter.take("alice") for _ in range(2)] == [0.0, 0.0]
    assert limiter.take("alice") == pytest.approx(0.5)
    assert limiter.take("bob") == 0.0
    clock.now += 0.5
    assert limiter.take("alice") == 0.0 and limiter.take("alice") > 0
    clock.now += 60
    assert [limiter.take("alice") for _ in range(3)][:2] == [0.0, 0.0]  # no more than a burst


def _rate(spec: str) -> tuple[float, float]:
    parsed = parse_rate(spec)
    assert parsed is not None
    return parsed


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [("20/s", (20.0, 20.0)), ("600/m", (600.0, 10.0)), ("36/h", (36.0, 0.01)), ("off", None)],
)
def test_rates(spec: str, parsed: tuple[float, float] | None) -> None:
    assert parse_rate(spec) == parsed


@pytest.mark.parametrize("spec", ["fast", "10", "-1/s", "1/d", "1.5/s", "/s"])
def test_a_bad_rate_names_the_variable(spec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMFLOW_API_RATE", spec)
    with pytest.raises(ValueError, match="FSMFLOW_API_RATE") as refused:
        Settings.load(environ={})
    assert "like 20/s, 600/m or 10000/h, or off" in str(refused.value)


def test_the_api_settings_keep_their_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMFLOW_API_TOKENS", f"alice:{ALICE}")
    monkeypatch.setenv("FSMFLOW_API_PORT", "9000")
    settings = Settings.load(environ={})
    assert settings.api_port == 9000 and settings.api_host == "127.0.0.1"
    assert settings.api_max_body == 128 * 1024 and settings.api_rate == "20/s"
    assert ALICE not in repr(settings) and ALICE not in str(settings.safe_summary())
    assert settings.safe_summary()["api_tokens"] == "set"
