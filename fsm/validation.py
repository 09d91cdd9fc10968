"""The one JSON Schema validator fsmflow checks every schema with.

Values are judged inside workflow code (a model's context update, a tool call's
arguments), so the judgement must be the same on every worker and must finish
quickly whatever the value. jsonschema's Draft 2020-12 validator is extended in
two ways to make it so:

- ``pattern`` (and ``patternProperties``) run on RE2 (``google-re2``), in time
  linear in the value; Python's backtracking ``re`` needs seconds to minutes for
  ``^(a+)+$`` against a few dozen characters. JSON Schema's meaning is kept: a
  pattern matches when it is found anywhere in the string (a search).
- ``format`` is asserted with a checker holding only ``fsm.formats``' checks, so
  no optional package changes the answer. A format it does not know (``uuid``
  in a tool's schema, say) is an annotation, as JSON Schema has it.

Compiled validators and patterns are cached: building a validator for every call
was a measured hot spot.

``unevaluatedProperties`` next to ``patternProperties`` still matches with
Python's ``re`` inside jsonschema; no schema fsmflow builds (context keys, turn
schemas, tool schemas from pydantic) uses ``unevaluatedProperties``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from fsm.formats import FORMATS
from schemas.definition import compile_pattern

VALIDATOR_CACHE_SIZE = 512
"""Compiled validators kept: context keys, tool schemas and turn schemas of the
definitions a worker runs."""

PATTERN_CACHE_SIZE = 512


def _strings_only(check: Callable[[str], bool]) -> Callable[[object], bool]:
    def checked(instance: object) -> bool:
        # A format constrains strings; a value of another type passes (its type
        # is the "type" keyword's business).
        return not isinstance(instance, str) or check(instance)

    return checked


FORMAT_CHECKER = FormatChecker(formats=())
"""Knows exactly the formats of ``fsm.formats.FORMATS``, none of jsonschema's."""
for _name, _check in FORMATS.items():
    FORMAT_CHECKER.checks(_name)(_strings_only(_check))


@functools.lru_cache(maxsize=PATTERN_CACHE_SIZE)
def _regex(pattern: str) -> Any:
    """The compiled pattern, or why it cannot run (a schema fsmflow did not check)."""
    try:
        return compile_pattern(pattern)
    except ValueError as exc:
        return str(exc)


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    regex = _regex(pattern)
    if isinstance(regex, str):
        yield ValidationError(regex)
    elif regex.search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any,
    pattern_properties: Mapping[str, Any],
    instance: Any,
    schema: Mapping[str, Any],
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_properties.items():
        regex = _regex(pattern)
        if isinstance(regex, str):
            yield ValidationError(regex)
            continue
        for name, value in instance.items():
            if regex.search(name) is not None:
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    patterns = schema.get("patternProperties")
    if not patterns or not validator.is_type(instance, "object"):
        yield from Draft202012Validator.VALIDATORS["additionalProperties"](
            validator, additional, instance, schema
        )
        return
    # jsonschema matches patternProperties here with Python's re: do it with RE2.
    regexes = [_regex(p) for p in patterns]
    if any(isinstance(regex, str) for regex in regexes):
        return  # patternProperties reports the pattern that cannot run.
    properties = schema.get("properties", {})
    # Sorted, where jsonschema walks a set: string hashes, and so a set's order,
    # differ between worker processes, and the first error must not.
    extras = sorted(
        name
        for name in instance
        if name not in properties and all(r.search(name) is None for r in regexes)
    )
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        names = ", ".join(repr(extra) for extra in extras)
        verb = "does" if len(extras) == 1 else "do"
        listing = ", ".join(repr(p) for p in sorted(patterns))
        yield ValidationError(f"{names} {verb} not match any of the regexes: {listing}")


# The keyword functions above receive an instance of this class. extend() has no
# type hints, and the protocol ``Validator`` lacks ``descend``: hence the Any.
_FsmflowValidator: Any = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
    format_checker=FORMAT_CHECKER,
)


@functools.lru_cache(maxsize=VALIDATOR_CACHE_SIZE)
def _compiled(schema_json: str) -> Validator:
    validator: Validator = _FsmflowValidator(json.loads(schema_json), format_checker=FORMAT_CHECKER)
    return validator


def validator_for(schema: Mapping[str, Any]) -> Validator:
    """The validator of ``schema``: RE2 patterns, fsmflow's formats, cached.

    Args:
        schema: A JSON Schema (Draft 2020-12). Changing it afterwards does not
            change the validator: it is built from a copy.

    Returns:
        A jsonschema validator (``iter_errors``, ``is_valid``, ``validate``).
    """
    # The key keeps the schema's key order (no sort_keys): errors come in the
    # order of the schema's keywords, and a "first error" must not depend on
    # which of two equal but differently ordered schemas a worker saw first.
    return _compiled(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def first_error(schema: Mapping[str, Any], value: Any) -> ValidationError | None:
    """The first way ``value`` breaks ``schema`` (in the schema's order), or None.

    Args:
        schema: A JSON Schema (Draft 2020-12).
        value: The instance to check.
    """
    return next(iter(validator_for(schema).iter_errors(value)), None)
