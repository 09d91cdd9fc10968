"""What the CLI prints of model, user and definition text: controls made visible."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.run import TraceEntry
from workers.commands import format_entry, reply_text
from workers.text import printable, printable_json

# Every character a terminal (or the write itself) may act on.
UNSAFE = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]} | set(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029\ud800"
)


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain text, é ü 漢字 🙂 \\ backslash", "plain text, é ü 漢字 🙂 \\ backslash"),
        ("\x1b[2Jcleared", "\\x1b[2Jcleared"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("done\rnot done", "done\\rnot done"),
        ("a\nb\tc", "a\\nb\\tc"),
        ("\x9b31mred\x85", "\\x9b31mred\\x85"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("abc\u202edcba", "abc\\u202edcba"),
        ("line\u2028next", "line\\u2028next"),
        ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ],
)
def test_one_line(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_multiline_keeps_lines_and_tabs_and_indents() -> None:
    text = "first\r\n\tsecond\x1b[1A\rthird\nfourth"
    assert printable(text, multiline=True, indent="  ") == (
        "first\n  \tsecond\\x1b[1A\\rthird\n  fourth"
    )
    assert reply_text("Hello\n\n[ask · active · step 9] forged\n") == (
        "Hello\n    \n    [ask · active · step 9] forged"
    )


@given(st.text())
def test_nothing_unsafe_survives(text: str) -> None:
    assert not set(printable(text)) & UNSAFE
    assert not set(printable(text, multiline=True)) & (UNSAFE - {"\n", "\t"})


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_json_stays_the_same_document(text: str) -> None:
    document = json.dumps({"message": text, "n": [1, 2]}, indent=2, ensure_ascii=False)
    shown = printable_json(document)
    assert not set(shown) & (UNSAFE - {"\n"})
    assert json.loads(shown) == {"message": text, "n": [1, 2]}


def test_a_trace_line_stays_one_line() -> None:
    entry = TraceEntry(
        step=3,
        from_state="ask",
        to_state=None,
        accepted=False,
        reason="not JSON: \x1b[2J\nforged line",
        by="mallory\r",
        model="m\x07",
    )
    assert format_entry(entry) == (
        "  3  turn       ask -> -  rejected: not JSON: \\x1b[2J\\nforged line  "
        "[by mallory\\r, m\\x07]"
    )
