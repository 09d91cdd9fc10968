"""The string formats a definition may declare, checked without optional packages.

jsonschema's own ``FormatChecker`` checks ``date-time`` and ``uri`` only when
optional packages happen to be installed, and its ``email`` check is a search
for ``@``. A format is judged inside workflow code, so two workers with
different packages would judge one model turn differently: a non-determinism
error waiting to happen. These checks use nothing but the standard library's
string handling and fixed, linear-time expressions, so every worker gives the
same answer for the same value.

Each check takes a string and says whether it has the format; ``FORMATS`` maps
the names a definition may use (``ContextKey.format``) to them.
"""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Callable, Mapping
from types import MappingProxyType

EMAIL_LOCAL_BOUND = 64
"""Longest local part (before the ``@``) of an email address (RFC 5321 4.5.3.1.1)."""

EMAIL_DOMAIN_BOUND = 253
"""Longest domain of an email address: the longest DNS name in text form."""

_LABEL_BOUND = 63

# Every expression below is fixed and has no nested or overlapping repetition, so
# Python's backtracking engine runs it in linear time whatever the value. re.ASCII:
# \d-like classes are spelt out, but the flag keeps case-insensitivity ASCII too.
_ATEXT = re.escape(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_LOCAL_PART = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*", re.ASCII)
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?", re.ASCII)

_FULL_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})", re.ASCII)
_DATE_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))",
    re.ASCII,
)

_UNRESERVED = string.ascii_letters + string.digits + "-._~"
_SUB_DELIMS = "!$&'()*+,;="
_PCT_ENCODED = "%[0-9A-Fa-f]{2}"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*", re.ASCII)
# Path, query and fragment: pchar, "/" and "?" (RFC 3986 3.3-3.5). No "#" (it
# starts the fragment, once), no "[" or "]" (they belong to a host literal).
_TAIL = re.compile(rf"(?:[{re.escape(_UNRESERVED + _SUB_DELIMS + ':@/?')}]|{_PCT_ENCODED})*")
_USERINFO = re.compile(rf"(?:[{re.escape(_UNRESERVED + _SUB_DELIMS + ':')}]|{_PCT_ENCODED})*")
_REG_NAME = re.compile(rf"(?:[{re.escape(_UNRESERVED + _SUB_DELIMS)}]|{_PCT_ENCODED})*")
_IP_FUTURE = re.compile(rf"[vV][0-9A-Fa-f]+\.[{re.escape(_UNRESERVED + _SUB_DELIMS + ':')}]+")
_PORT = re.compile(r"[0-9]*", re.ASCII)

_HOST_REQUIRED = frozenset({"http", "https"})
"""Schemes whose URIs must name a host (RFC 9110 4.2: an empty host is invalid)."""


def is_email(value: str) -> bool:
    """Whether ``value`` is an email address, in a practical subset of RFC 5322.

    Accepted: a dot-atom local part (letters, digits and ``!#$%&'*+-/=?^_`{|}~``,
    dots only between them; at most 64 characters), one ``@``, and a domain of at
    least two dot-separated labels (letters, digits and inner hyphens, at most 63
    characters each, 253 in all) whose last label is not all digits. Refused,
    although RFC 5322 has them: quoted local parts, comments, address literals
    (``a@[127.0.0.1]``), dotless domains (``a@b``) and non-ASCII addresses.
    """
    local, at, domain = value.rpartition("@")
    if not at or not 0 < len(local) <= EMAIL_LOCAL_BOUND or len(domain) > EMAIL_DOMAIN_BOUND:
        return False
    if _LOCAL_PART.fullmatch(local) is None:
        return False
    labels = domain.split(".")
    return (
        len(labels) >= 2
        and all(len(label) <= _LABEL_BOUND and _LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdecimal()
    )


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def is_date(value: str) -> bool:
    """Whether ``value`` is an RFC 3339 ``full-date``: ``YYYY-MM-DD`` that exists.

    Four-digit year (0000-9999, proleptic Gregorian), two-digit month and day;
    the day must exist in that month (``2024-02-29`` yes, ``2023-02-29`` no).
    Other ISO 8601 forms (``20240101``, ``2024-W01-1``) are refused.
    """
    match = _FULL_DATE.fullmatch(value)
    if match is None:
        return False
    year, month, day = (int(part) for part in match.groups())
    return 1 <= month <= 12 and 1 <= day <= _days_in_month(year, month)


def is_date_time(value: str) -> bool:
    """Whether ``value`` is an RFC 3339 ``date-time``, e.g. ``2024-05-01T09:30:00Z``.

    A ``full-date`` (see ``is_date``), ``T`` (or ``t``), ``hh:mm:ss`` with seconds
    required and an optional fraction (``.5``, ``.123456``), then ``Z`` (or
    ``z``) or an offset ``+hh:mm``/``-hh:mm`` (hours 00-23, minutes 00-59). Hours
    run 00-23, minutes 00-59, seconds 00-59; second 60 (a leap second) only at
    23:59 UTC once the offset is applied (which dates had one is not checked).
    Refused: a space instead of ``T``, a missing offset, ``+hhmm`` offsets.
    """
    match = _DATE_TIME.fullmatch(value)
    if match is None or not is_date(match.group(1)):
        return False
    hour, minute, second = (int(part) for part in match.group(2, 3, 4))
    sign, offset_hour, offset_minute = match.group(5, 6, 7)
    offset = 0
    if sign is not None:
        if int(offset_hour) > 23 or int(offset_minute) > 59:
            return False
        offset = (int(offset_hour) * 60 + int(offset_minute)) * (1 if sign == "+" else -1)
    if hour > 23 or minute > 59 or second > 60:
        return False
    if second == 60:
        return (hour * 60 + minute - offset) % (24 * 60) == 23 * 60 + 59
    return True


def _is_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        literal = host[1:-1]
        if _IP_FUTURE.fullmatch(literal):
            return True
        # A zone ("%eth0") is not RFC 3986 syntax; ipaddress would accept it.
        if "%" in literal or not literal.isascii():
            return False
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            return False
        return True
    return _REG_NAME.fullmatch(host) is not None


def _is_authority(authority: str) -> tuple[bool, str]:
    """Whether ``authority`` is RFC 3986 ``authority`` syntax, and its host."""
    userinfo, at, host_port = authority.rpartition("@")
    if at and _USERINFO.fullmatch(userinfo) is None:
        return False, ""
    if host_port.startswith("["):
        end = host_port.find("]")
        host, port = host_port[: end + 1], host_port[end + 1 :]
        if end < 0 or (port and not port.startswith(":")):
            return False, ""
    else:
        host, colon, port = host_port.partition(":")
        port = colon + port
    if port and _PORT.fullmatch(port[1:]) is None:
        return False, ""
    return _is_host(host), host


def is_uri(value: str) -> bool:
    r"""Whether ``value`` is a URI in RFC 3986's sense (with a scheme, not relative).

    ``scheme ":" hier-part ["?" query] ["#" fragment]``: a scheme (a letter, then
    letters, digits, ``+``, ``-``, ``.``); an optional ``//authority`` (userinfo,
    a host that is a name, an IPv4 address or a bracketed IPv6/IPvFuture literal,
    and a numeric port); a path, query and fragment of RFC 3986's characters,
    ``%`` only as ``%XX``. Whitespace, control characters, non-ASCII characters
    (IRIs), ``"<>\^`{|}`` and a second ``#`` are refused. ``http`` and ``https``
    URIs must have a non-empty host (``http://`` and ``http:/path`` are refused);
    other schemes follow their own rules (``mailto:ada@example.com``,
    ``urn:isbn:0451450523`` and ``file:///etc/hosts`` are URIs).
    """
    scheme, colon, rest = value.partition(":")
    if not colon or _SCHEME.fullmatch(scheme) is None:
        return False
    rest, hash_sign, fragment = rest.partition("#")
    if hash_sign and _TAIL.fullmatch(fragment) is None:
        return False
    host = None
    if rest.startswith("//"):
        end = min((i for i in (rest.find(c, 2) for c in "/?") if i >= 0), default=len(rest))
        valid, host = _is_authority(rest[2:end])
        if not valid:
            return False
        rest = rest[end:]
    if _TAIL.fullmatch(rest) is None:
        return False
    return scheme.lower() not in _HOST_REQUIRED or bool(host)


FORMATS: Mapping[str, Callable[[str], bool]] = MappingProxyType(
    {
        "email": is_email,
        "date": is_date,
        "date-time": is_date_time,
        "uri": is_uri,
    }
)
"""The check of each format a definition may declare, by its JSON Schema name."""
