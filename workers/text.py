r"""Text from a model, a user or a definition, made safe to print on a terminal.

A model reply, a rejection reason or a workflow id can hold anything: ANSI escape
sequences that clear the screen or retitle the window (``\x1b[2J``,
``\x1b]0;title\x07``), a carriage return that overwrites what the line said, C1
controls that some terminals also obey, Unicode bidi overrides that reorder what
is shown, lone surrogates that make the write itself fail. Everything the CLI
prints that came from outside goes through ``printable`` (or ``printable_json``
for JSON documents).
"""

from __future__ import annotations

import re

_UNSAFE = re.compile(
    "["
    "\x00-\x1f\x7f-\x9f"  # C0, DEL and C1 controls (ESC, CR, BEL, CSI, NEL...)
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"  # bidi marks, embeddings, overrides
    "\u2028\u2029"  # line and paragraph separators
    "\ud800-\udfff"  # lone surrogates (not encodable as UTF-8)
    "]"
)
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _escape_json(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def printable(text: str, *, multiline: bool = False, indent: str = "") -> str:
    r"""``text`` with every control character replaced by a visible escape.

    Controls become the escapes Python would write for them: ``\x1b`` for ESC,
    ``\r`` for a carriage return, ``\u202e`` for a bidi override, so the reader
    sees that they were there and the terminal obeys none of them. Backslashes are
    left as they are: the result is for reading, not for parsing back.

    By default the result is one line (a newline becomes ``\n`` too): a trace
    line, a status field, an error message or a table cell cannot forge the line
    after it. With ``multiline`` (a reply's text, shown as written) newlines
    (and a CRLF, as one newline) and tabs are kept, and every line after the
    first starts with ``indent``, so a reply cannot pass for the CLI's own lines.

    Args:
        text: What a model, a user or a definition said.
        multiline: Keep line breaks and tabs.
        indent: Prefix of the second and later lines (with ``multiline``).
    """
    if not multiline:
        return _UNSAFE.sub(_escape, text)
    lines = text.replace("\r\n", "\n").split("\n")
    return ("\n" + indent).join(
        _UNSAFE.sub(lambda m: "\t" if m.group() == "\t" else _escape(m), line) for line in lines
    )


def printable_json(document: str) -> str:
    r"""A JSON document (from ``json.dumps`` or pydantic) safe to print, still valid JSON.

    JSON encoders escape C0 controls inside strings but not DEL, C1 controls, bidi
    overrides or lone surrogates; those become ``\uXXXX`` escapes, which mean the
    same character to a JSON parser (an encoder writes none of them outside
    strings, where it only puts its indentation). Newlines are kept.
    """
    return _UNSAFE.sub(lambda m: "\n" if m.group() == "\n" else _escape_json(m), document)
