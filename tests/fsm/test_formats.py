"""The four declarable formats, judged the same on every worker."""

from __future__ import annotations

import typing

import pytest

from fsm.formats import FORMATS, is_date, is_date_time, is_email, is_uri
from schemas.definition import ContextKey

VALID: dict[str, list[str]] = {
    "email": [
        "ada@example.com",
        "ada.lovelace+notes@mail.example.co.uk",
        "o'brien@example.ie",
        "x@a-b.example",
        "A1!#$%&'*+-/=?^_`{|}~@example.com",
        "a" * 64 + "@example.com",
        "ada@" + ".".join(["a" * 63] * 3) + "." + "b" * 61,
    ],
    "date": ["2024-02-29", "2000-02-29", "2023-12-31", "0001-01-01", "2024-04-30"],
    "date-time": [
        "2024-05-01T09:30:00Z",
        "2024-05-01t09:30:00z",
        "2024-05-01T09:30:00+02:00",
        "2024-05-01T09:30:00-00:00",
        "2024-05-01T09:30:00.5Z",
        "2024-05-01T09:30:00.123456789+05:45",
        "2024-02-29T23:59:59-23:59",
        "1998-12-31T23:59:60Z",
        "1998-12-31T15:59:60.123-08:00",
    ],
    "uri": [
        "http://example.com",
        "https://example.com/a/b?c=d&e=f#g",
        "HTTPS://EXAMPLE.COM:8443/",
        "http://user:secret@example.com/%7Eada",
        "http://[::1]:8080/",
        "http://192.0.2.1/",
        "mailto:ada@example.com",
        "urn:isbn:0451450523",
        "file:///etc/hosts",
        "tag:example.com,2024:notes",
        "git+ssh://git@example.com/repo.git",
    ],
}

INVALID: dict[str, list[str]] = {
    "email": [
        "a@",
        "a@b",
        "@example.com",
        "ada",
        "ada@@example.com",
        "a@b@example.com",
        "ada lovelace@example.com",
        "ada@exa mple.com",
        ".ada@example.com",
        "ada.@example.com",
        "ada..lovelace@example.com",
        "ada@example..com",
        "ada@example.com.",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exam_ple.com",
        "ada@1.2.3.4",
        "ada@[192.0.2.1]",
        '"ada"@example.com',
        "adé@example.com",
        "ada@exämple.com",
        "ada@example.com\n",
        "a" * 65 + "@example.com",
        "ada@" + "a" * 64 + ".com",
        "ada@" + ".".join(["a" * 63] * 4),
        "",
    ],
    "date": [
        "2023-02-29",
        "1900-02-29",
        "2024-13-01",
        "2024-00-10",
        "2024-04-31",
        "2024-01-00",
        "2024-01-32",
        "20240101",
        "2024-1-01",
        "24-01-01",
        "2024/01/01",
        "2024-01-01T00:00:00Z",
        " 2024-01-01",
        "2024-01-01\n",
        "２０２４-01-01",
        "",
    ],
    "date-time": [
        "2024-05-01T09:30:00",
        "2024-05-01 09:30:00Z",
        "2024-05-01T09:30Z",
        "2024-05-01T9:30:00Z",
        "2024-05-01T09:30:00+0200",
        "2024-05-01T09:30:00+02",
        "2024-05-01T24:00:00Z",
        "2024-05-01T09:60:00Z",
        "2024-05-01T09:30:61Z",
        "2024-05-01T09:30:00+24:00",
        "2024-05-01T09:30:00+02:60",
        "2024-05-01T09:30:00.Z",
        "2023-02-29T09:30:00Z",
        "1998-12-31T23:58:60Z",
        "1998-12-31T23:59:60+01:00",
        "2024-05-01",
        "2024-05-01T09:30:00Z\n",
        "",
    ],
    "uri": [
        "http://",
        "https://",
        "http:///path",
        "http:/path",
        "http:path",
        "//example.com/path",
        "example.com",
        "/relative/path",
        "http://exa mple.com",
        "http://example.com/a b",
        " http://example.com",
        "http://example.com/\n",
        "a b:c",
        "1http://example.com",
        "http://example.com:80a/",
        "http://[::1/",
        "http://[fe80::1%eth0]/",
        "http://example.com/[x]",
        "http://example.com/#a#b",
        "http://example.com/%zz",
        "http://example.com/é",
        "http://example.com/<script>",
        "http://example.com/a\\b",
        "",
    ],
}

CHECKS = {"email": is_email, "date": is_date, "date-time": is_date_time, "uri": is_uri}


def cases(table: dict[str, list[str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, values in table.items() for value in values]


@pytest.mark.parametrize(("name", "value"), cases(VALID))
def test_valid_values(name: str, value: str) -> None:
    assert FORMATS[name](value)


@pytest.mark.parametrize(("name", "value"), cases(INVALID))
def test_invalid_values(name: str, value: str) -> None:
    assert not FORMATS[name](value)


def test_the_table_holds_exactly_the_declarable_formats() -> None:
    declarable = typing.get_args(typing.get_args(ContextKey.model_fields["format"].annotation)[0])
    assert set(FORMATS) == set(declarable) == set(CHECKS)
    assert all(FORMATS[name] is check for name, check in CHECKS.items())


def test_a_date_time_holds_a_valid_date() -> None:
    # Every invalid date stays invalid with a valid time after it.
    for date in INVALID["date"]:
        if len(date) == 10 and date.isascii():
            assert not is_date_time(f"{date}T12:00:00Z")
    for date in VALID["date"]:
        assert is_date_time(f"{date}T12:00:00Z")


def test_leap_second_only_at_the_last_minute_of_the_utc_day() -> None:
    ends_of_day = [
        f"2016-12-31T{(23 + offset) % 24:02d}:59:60{sign}{abs(offset):02d}:00"
        for offset, sign in ((0, "+"), (1, "+"), (-1, "-"), (5, "+"), (-8, "-"))
    ]
    assert all(is_date_time(value) for value in ends_of_day), ends_of_day
    assert not is_date_time("2016-12-31T23:59:60+01:00")
