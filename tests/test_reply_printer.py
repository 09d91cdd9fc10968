"""The CLI's printing of a streamed reply: piece by piece exactly as the whole
reply prints, a reset withdrawing a line, and the update's reply always last."""

from __future__ import annotations

import io

import pytest

from fsm import events
from schemas.run import Reply
from workers.commands import ReplyPrinter, reply_text

HOSTILE = "Hi\x1b[2J Ada\r\nline two\rX\u202e\n\nlast\r\n\r\n"


def reply(message: str, **changes: object) -> Reply:
    values: dict[str, object] = {
        "message": message,
        "state": "ask_email",
        "status": "active",
        "accepted": True,
        "step": 1,
    }
    values.update(changes)
    return Reply.model_validate(values)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 100])
def test_pieces_print_as_the_whole_reply_does(size: int) -> None:
    out = io.StringIO()
    printer = ReplyPrinter(out)
    for i in range(0, len(HOSTILE), size):
        printer.event(events.delta("0.1", HOSTILE[i : i + size]))
    printer.finish(reply(HOSTILE))
    assert out.getvalue() == f"< {reply_text(HOSTILE)}\n[ask_email · active · step 1]\n"
    assert "\x1b" not in out.getvalue() and "\r" not in out.getvalue()


def test_a_reset_withdraws_the_line_and_the_reply_streams_again() -> None:
    out = io.StringIO()
    printer = ReplyPrinter(out)
    printer.event(events.delta("0.1", "Your ema"))
    printer.event(events.reset("0.1", "the model call is retried (attempt 2)"))
    printer.event(events.reset("0.1", "again: nothing printed since, nothing to withdraw"))
    printer.event(events.delta("0.1", "Your email?"))
    printer.finish(reply("Your email?"))
    assert out.getvalue().splitlines() == [
        "< Your ema",
        "! the model call is retried (attempt 2)",
        "< Your email?",
        "[ask_email · active · step 1]",
    ]


def test_the_reply_the_update_returned_is_always_the_last_one_printed() -> None:
    out = io.StringIO()
    printer = ReplyPrinter(out)
    printer.event(events.delta("0.1", "Half a rep"))
    fallback = reply("Sorry, could you say it again?", accepted=False, reason="no valid reply")
    printer.finish(fallback)
    assert out.getvalue().splitlines() == [
        "< Half a rep",
        "! the reply, as decided:",
        "< Sorry, could you say it again?",
        "[ask_email · active · step 1] (not answered; fallback reply)",
        "  why: no valid reply",
    ]
    # Nothing streamed (a resend, a worker without streams): the same format.
    out = io.StringIO()
    ReplyPrinter(out).finish(reply("Hello"))
    assert out.getvalue() == "< Hello\n[ask_email · active · step 1]\n"
