"""A small, total JSON Logic evaluator for transition guards.

Only the operators a guard needs are supported; anything else is refused when the
definition is checked, never at run time. Evaluation never raises: a comparison
between values of incompatible types (or with a missing value) is false, so a
guard over a key the model has not filled in yet simply does not hold.

The functions here recurse once per level of the expression: ``fsm.checks``
refuses guards deeper than ``MAX_GUARD_DEPTH`` before any of them sees one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from fsm.problems import quote

OPERATORS = frozenset(
    {"var", "==", "!=", "===", "!==", "<", "<=", ">", ">=", "in", "and", "or", "!", "!!"}
)


class GuardError(ValueError):
    """A guard expression is not well formed."""


def _args(expr: Mapping[str, Any]) -> tuple[str, list[Any]]:
    ((op, raw),) = expr.items()
    return op, raw if isinstance(raw, list) else [raw]


def _is_op(expr: Any) -> bool:
    return isinstance(expr, dict) and len(expr) == 1


def validate(expr: Any) -> list[str]:
    """Return the problems of a guard expression (empty when it is well formed)."""
    problems: list[str] = []

    def walk(node: Any, where: str) -> None:
        path = where or "expression"
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{where}[{i}]")
            return
        if not isinstance(node, dict):
            return
        if len(node) != 1:
            problems.append(f"{path}: an operation is an object with exactly one operator")
            return
        op, args = _args(node)
        if op not in OPERATORS:
            known = ", ".join(sorted(OPERATORS))
            at = f" at {where}" if where else ""
            problems.append(f"unknown operator {quote(op)}{at} (known: {known})")
            return
        if op == "var":
            if not args or not isinstance(args[0], str) or not args[0]:
                problems.append(f'{path}: var needs a key name, e.g. {{"var": "email"}}')
            return
        arity = {"!": (1, 1), "!!": (1, 1), "in": (2, 2), "<": (2, 3), "<=": (2, 3)}
        low, high = arity.get(
            op, (2, 2) if op in ("==", "!=", "===", "!==", ">", ">=") else (1, 99)
        )
        if not low <= len(args) <= high:
            problems.append(f"{path}: {op!r} takes {low}..{high} arguments, got {len(args)}")
        for i, arg in enumerate(args):
            walk(arg, f"{where}.{op}[{i}]" if where else f"{op}[{i}]")

    walk(expr, "")
    return problems


def variables(expr: Any) -> Iterator[str]:
    """Yield every key path the expression reads with ``var``."""
    if isinstance(expr, list):
        for item in expr:
            yield from variables(item)
    elif _is_op(expr):
        op, args = _args(expr)
        if op == "var":
            if args and isinstance(args[0], str):
                yield args[0]
        else:
            for arg in args:
                yield from variables(arg)


def _lookup(data: Mapping[str, Any], path: str, default: Any) -> Any:
    node: Any = data
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return default if node is None else node


def _compare(op: str, left: Any, right: Any) -> bool:
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    if not (
        (isinstance(left, numeric) and isinstance(right, numeric))
        or (isinstance(left, str) and isinstance(right, str))
    ):
        return False
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return comparisons[op](left, right)


def truthy(value: Any) -> bool:
    """JSON Logic truthiness: empty strings, lists, zero and null are false."""
    if isinstance(value, list | str | dict):
        return len(value) > 0
    return bool(value)


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, bool) != isinstance(right, bool):
        return False
    return bool(left == right)


def evaluate(expr: Any, data: Mapping[str, Any]) -> Any:
    """Evaluate a (validated) guard expression over ``data``.

    Args:
        expr: The JSON Logic expression.
        data: The context, with the framework's system keys merged in.

    Returns:
        The expression's value; guards use its truthiness.
    """
    if isinstance(expr, list):
        return [evaluate(item, data) for item in expr]
    if not _is_op(expr):
        return expr
    op, args = _args(expr)
    if op == "var":
        default = evaluate(args[1], data) if len(args) > 1 else None
        return _lookup(data, args[0], default)
    if op == "and":
        result: Any = True
        for arg in args:
            result = evaluate(arg, data)
            if not truthy(result):
                return result
        return result
    if op == "or":
        result = False
        for arg in args:
            result = evaluate(arg, data)
            if truthy(result):
                return result
        return result
    values = [evaluate(arg, data) for arg in args]
    if op == "!":
        return not truthy(values[0])
    if op == "!!":
        return truthy(values[0])
    if op in ("==", "==="):
        return _equal(values[0], values[1])
    if op in ("!=", "!=="):
        return not _equal(values[0], values[1])
    if op == "in":
        needle, haystack = values
        if isinstance(haystack, list):
            return any(_equal(needle, item) for item in haystack)
        if isinstance(haystack, str) and isinstance(needle, str):
            return needle in haystack
        return False
    if op in ("<", "<=") and len(values) == 3:
        return _compare(op, values[0], values[1]) and _compare(op, values[1], values[2])
    return _compare(op, values[0], values[1])


def describe(expr: Any) -> str:
    """Render an expression as short infix text for diagrams and messages."""
    if isinstance(expr, list):
        return "[" + ", ".join(describe(item) for item in expr) + "]"
    if not _is_op(expr):
        return (
            repr(expr)
            if isinstance(expr, str)
            else str(expr).lower()
            if isinstance(expr, bool)
            else str(expr)
        )
    op, args = _args(expr)
    if op == "var":
        return str(args[0]) if args else "?"
    if op in ("!", "!!"):
        return ("not " if op == "!" else "") + describe(args[0])
    if op in ("and", "or"):
        return "(" + f" {op} ".join(describe(arg) for arg in args) + ")"
    if op in ("<", "<=") and len(args) == 3:
        return f"{describe(args[0])} {op} {describe(args[1])} {op} {describe(args[2])}"
    return f"{describe(args[0])} {op} {describe(args[1])}" if len(args) == 2 else op


class _Unknown:
    """A value the current turn may still set: a guard over it may go either way."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


def may_hold(expr: Any, data: Mapping[str, Any], unknown: frozenset[str] | set[str]) -> bool:
    """Whether a guard can be true once the keys in ``unknown`` take any value.

    Three-valued evaluation: a ``var`` of an unknown key is UNKNOWN, operators over
    UNKNOWN give UNKNOWN, except that ``and`` with a definitely false operand is
    false and ``or`` with a definitely true one is true. So ``revise and
    _visits.write < 3`` is false once the rewrites are spent, whatever the turn
    writes, and the move is not offered.
    """
    result = _partial(expr, data, unknown)
    return result is UNKNOWN or truthy(result)


def _partial(expr: Any, data: Mapping[str, Any], unknown: frozenset[str] | set[str]) -> Any:
    if isinstance(expr, list):
        items = [_partial(item, data, unknown) for item in expr]
        return UNKNOWN if any(item is UNKNOWN for item in items) else items
    if not _is_op(expr):
        return expr
    op, args = _args(expr)
    if op == "var":
        if args and isinstance(args[0], str) and args[0].split(".")[0] in unknown:
            return UNKNOWN
        return evaluate(expr, data)
    values = [_partial(arg, data, unknown) for arg in args]
    if op == "and":
        if any(v is not UNKNOWN and not truthy(v) for v in values):
            return False
        return UNKNOWN if any(v is UNKNOWN for v in values) else values[-1]
    if op == "or":
        if any(v is not UNKNOWN and truthy(v) for v in values):
            return True
        return UNKNOWN if any(v is UNKNOWN for v in values) else values[-1]
    if any(v is UNKNOWN for v in values):
        return UNKNOWN
    return evaluate({op: values}, data)
