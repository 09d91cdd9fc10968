"""Convert llm-fsm / fsm_llm JSON definitions to fsmflow definitions.

llm-fsm describes an agent as ``{name, description, initial_state, persona,
version, states: {id: {purpose, instructions, required_context_keys,
transitions: [{target_state, description, priority, conditions: [{description,
requires_context_keys, logic}]}]}}}``; the newer fsm_llm adds per-state
``extraction_instructions``, ``response_instructions``, ``context_scope`` and
extraction settings. Most of it has a direct fsmflow counterpart (docs/import.md
has the table). What has none is listed in the result's report, one line per
field, so nothing is dropped silently.

Two differences in meaning shape the mapping:

- llm-fsm writes the reply after the move, in the state the turn moved to (its
  ``response_instructions``); fsmflow's model writes the reply with the move, in
  the state the turn started in. So each move's description names the purpose of
  the state it leads to, and the reply can lead into it.
- llm-fsm keeps context keys untyped; fsmflow declares every key with a type. A
  key is a bounded string unless a guard compares it with numbers or booleans
  (or a ``field_extractions`` entry gives its type).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from fsm import jsonlogic
from fsm.checks import guard_depth
from fsm.loader import Loaded, load_text
from fsm.problems import clip, did_you_mean, quote
from schemas.definition import DEFAULT_STRING_BOUND, compile_pattern
from schemas.limits import MAX_GUARD_DEPTH, MAX_NAME_LENGTH

DEFAULT_MAX_STEPS = 50
"""llm-fsm has no step bound; fsmflow needs one."""

_MOVE_NEXT_LENGTH = 200
"""How much of the next state's purpose a move's description quotes."""

_TOP_FIELDS = {"name", "description", "initial_state", "persona", "version", "states"}
_STATE_FIELDS = {
    "id",
    "description",
    "purpose",
    "instructions",
    "extraction_instructions",
    "response_instructions",
    "required_context_keys",
    "transitions",
    "context_scope",
    "field_extractions",
    "classification_extractions",
}
_TRANSITION_FIELDS = {"target_state", "description", "llm_description", "priority", "conditions"}
_CONDITION_FIELDS = {"description", "requires_context_keys", "logic", "evaluation_priority"}

_NOT_MAPPED = {
    "transition_classification": "fsmflow lets the model choose among the allowed moves",
    "extraction_retries": "fsmflow re-asks the model when a turn is invalid, not when a key "
    "is missing (a transition's requires holds the move until the key is set)",
    "extraction_confidence_threshold": "fsmflow has no extraction confidence",
    "function_handlers": "handlers are Python code; in fsmflow side effects are tools, "
    "called in autonomous runs",
    "handlers": "handlers are Python code; in fsmflow side effects are tools, "
    "called in autonomous runs",
}
"""Known llm-fsm fields with no fsmflow counterpart, and why."""

_FIELD_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_COMPARISONS = {"==", "!=", "===", "!==", "<", "<=", ">", ">="}


class LlmFsmError(ValueError):
    """The document is not an llm-fsm definition this importer can convert.

    Attributes:
        source: The file (or label) the document came from.
        problems: One line per problem, each naming the field.
    """

    def __init__(self, source: str, problems: list[str]) -> None:
        """Build the error from its problems (at least one)."""
        self.source = source
        self.problems = problems
        count = len(problems)
        header = f"{source}: not an llm-fsm definition, {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([header, *(f"  {source}: {p}" for p in problems)]))


@dataclass(frozen=True)
class ImportResult:
    """A converted definition and what could not be carried over.

    Attributes:
        definition: The fsmflow definition, as a document (what the YAML holds).
        report: One line per thing not mapped, renamed or changed in meaning,
            each naming the state or field.
        source: The file (or label) the llm-fsm definition came from.
    """

    definition: dict[str, Any]
    report: list[str]
    source: str

    @property
    def definition_yaml(self) -> str:
        """The definition as YAML, headed by comments naming its source and the report."""
        header = [f"# Converted from {_one_line(self.source)} by `fsmflow import llm-fsm`."]
        if self.report:
            header.append("# Not mapped or changed (see docs/import.md):")
            header += [f"#   - {_one_line(line)}" for line in self.report]
        body = yaml.dump(
            _styled(self.definition),
            Dumper=_Dumper,
            sort_keys=False,
            allow_unicode=True,
            width=96,
        )
        return "\n".join(header) + "\n" + body

    def load(self) -> Loaded:
        """Load the YAML with fsmflow's loader and checks, as ``fsmflow check`` would.

        Raises:
            DefinitionError: If the converted definition does not pass the checks.
        """
        return load_text(self.definition_yaml, source=self.source, fmt="yaml")


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- YAML output ---------------------------------------------------------------------


class _Flow(dict[str, Any]):
    """A mapping written on one line (a guard)."""


class _FlowList(list[Any]):
    """A list written on one line (key names)."""


class _Dumper(yaml.SafeDumper):
    """Readable YAML that fsmflow's loader accepts: no aliases (it refuses them)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(
    _Flow,
    lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True),
)
_Dumper.add_representer(
    _FlowList,
    lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=True),
)


def _styled(node: Any, key: str = "") -> Any:
    """``node`` with guards and name lists marked to be written on one line."""
    if key == "when" and isinstance(node, dict):
        return _Flow(node)
    if key in ("collects", "sees", "requires", "enum") and isinstance(node, list):
        return _FlowList(node)
    if isinstance(node, dict):
        return {k: _styled(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_styled(item) for item in node]
    return node


# --- names ---------------------------------------------------------------------------


class _Names:
    """Original names -> fsmflow names, unique, in order of first use."""

    def __init__(self, kind: str, pattern: str, fallback: str) -> None:
        self.kind = kind
        self._unsafe = re.compile(pattern)
        self._fallback = fallback
        self.mapping: dict[str, str] = {}
        self._used: set[str] = set()

    def __call__(self, original: str) -> str:
        if original in self.mapping:
            return self.mapping[original]
        name = self._unsafe.sub("_", original).strip("_")
        if not name[:1].isalpha():
            name = f"{self._fallback}_{name}" if name else self._fallback
        name = name[:MAX_NAME_LENGTH]
        unique, n = name, 1
        while unique in self._used:
            n += 1
            suffix = f"_{n}"
            unique = name[: MAX_NAME_LENGTH - len(suffix)] + suffix
        self._used.add(unique)
        self.mapping[original] = unique
        return unique

    def renames(self, *, only: Collection[str] | None = None) -> Iterator[str]:
        for original, name in self.mapping.items():
            if original != name and (only is None or name in only):
                yield (
                    f"{self.kind} {quote(original)} renamed {quote(name)} (fsmflow names are "
                    "letters, digits and '_', starting with a letter)"
                )


# --- the document --------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _structure_problems(data: Any) -> list[str]:
    """What makes the document unconvertible, one line per field."""
    if not isinstance(data, dict):
        return [f"an llm-fsm definition is a JSON object, got {type(data).__name__}"]
    problems: list[str] = []
    states = data.get("states")
    if not isinstance(states, dict) or not states:
        problems.append("states: missing or empty (an object of state id -> state)")
        states = {}
    initial = data.get("initial_state")
    if not isinstance(initial, str) or not initial:
        problems.append("initial_state: missing (the id of the first state)")
    elif states and initial not in states:
        problems.append(
            f"initial_state: {quote(initial)} is not a state{did_you_mean(initial, states)}"
        )
    for key in ("name", "description", "persona", "version"):
        if data.get(key) is not None and not isinstance(data[key], str | int | float):
            problems.append(f"{key}: must be text")
    for state_id, state in states.items():
        where = f"states.{state_id}"
        if not isinstance(state, dict):
            problems.append(f"{where}: must be an object")
            continue
        problems += _key_list_problems(state, "required_context_keys", where)
        transitions = state.get("transitions") or []
        if not isinstance(transitions, list):
            problems.append(f"{where}.transitions: must be a list")
            continue
        for i, transition in enumerate(transitions):
            at = f"{where}.transitions[{i}]"
            if not isinstance(transition, dict):
                problems.append(f"{at}: must be an object")
                continue
            target = transition.get("target_state")
            if not isinstance(target, str) or not target:
                problems.append(f"{at}.target_state: missing")
            elif target not in states:
                problems.append(
                    f"{at}.target_state: {quote(target)} is not a state"
                    + did_you_mean(target, states)
                )
            priority = transition.get("priority")
            if priority is not None and (
                isinstance(priority, bool) or not isinstance(priority, int)
            ):
                problems.append(f"{at}.priority: must be an integer")
            conditions = transition.get("conditions") or []
            if not isinstance(conditions, list):
                problems.append(f"{at}.conditions: must be a list")
                continue
            for j, condition in enumerate(conditions):
                cat = f"{at}.conditions[{j}]"
                if not isinstance(condition, dict):
                    problems.append(f"{cat}: must be an object")
                    continue
                problems += _key_list_problems(condition, "requires_context_keys", cat)
                logic = condition.get("logic")
                if logic is not None and not isinstance(logic, dict):
                    problems.append(f"{cat}.logic: must be a JsonLogic object")
    return problems


def _key_list_problems(holder: dict[str, Any], field: str, where: str) -> list[str]:
    """A problem when ``holder[field]`` is set and is not a list of key names."""
    keys = holder.get(field)
    if keys is None or (isinstance(keys, list) and all(isinstance(k, str) and k for k in keys)):
        return []
    return [f"{where}.{field}: must be a list of key names"]


# --- guards --------------------------------------------------------------------------


def _not_missing(logic: Any) -> list[str] | None:
    """The keys of ``{"!": {"missing": [...]}}`` (all present): fsmflow's ``requires``."""
    if not (isinstance(logic, dict) and set(logic) == {"!"}):
        return None
    inner = logic["!"]
    if isinstance(inner, list) and len(inner) == 1:
        inner = inner[0]
    if not (isinstance(inner, dict) and set(inner) == {"missing"}):
        return None
    keys = inner["missing"]
    keys = keys if isinstance(keys, list) else [keys]
    return keys if keys and all(isinstance(k, str) and k for k in keys) else None


def _translate(logic: Any, keys: _Names) -> tuple[Any, list[str]]:
    """``logic`` with its ``var`` names renamed, and what fsmflow's guards lack."""
    lacking: list[str] = []

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            lacking.append("an object with several keys")
            return node
        ((op, raw),) = node.items()
        if op not in jsonlogic.OPERATORS:
            lacking.append(f"operator {quote(op)}")
            return node
        if op == "var":
            args = raw if isinstance(raw, list) else [raw]
            if not args or not isinstance(args[0], str) or not args[0]:
                lacking.append("a var without a key name")
                return node
            name = keys(args[0])
            return {"var": [name, *args[1:]] if isinstance(raw, list) else name}
        return {op: walk(raw)}

    translated = walk(logic)
    if not lacking:
        if guard_depth(translated) > MAX_GUARD_DEPTH:
            lacking.append(f"nesting deeper than {MAX_GUARD_DEPTH} levels")
        else:
            lacking += jsonlogic.validate(translated)
    return translated, list(dict.fromkeys(lacking))


def _literal_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _var_name(node: Any) -> str | None:
    if isinstance(node, dict) and set(node) == {"var"}:
        raw = node["var"]
        name = raw[0] if isinstance(raw, list) and raw else raw
        return name if isinstance(name, str) else None
    return None


def _infer_types(expr: Any, found: dict[str, set[str]]) -> None:
    """Record the type of every key a guard compares with a literal."""
    if isinstance(expr, list):
        for item in expr:
            _infer_types(item, found)
        return
    if not (isinstance(expr, dict) and len(expr) == 1):
        return
    ((op, raw),) = expr.items()
    args = raw if isinstance(raw, list) else [raw]
    if op in _COMPARISONS and len(args) == 2:
        for this, other in ((args[0], args[1]), (args[1], args[0])):
            name, kind = _var_name(this), _literal_type(other)
            if name and kind:
                found.setdefault(name.split(".")[0], set()).add(kind)
    elif op == "in" and len(args) == 2:
        name = _var_name(args[0])
        if name and isinstance(args[1], list):
            kinds = {_literal_type(item) for item in args[1]} - {None}
            found.setdefault(name.split(".")[0], set()).update(k for k in kinds if k)
        elif _var_name(args[1]) and isinstance(args[0], str):
            found.setdefault(str(_var_name(args[1])).split(".")[0], set()).add("string")
    for arg in args:
        _infer_types(arg, found)


# --- context keys --------------------------------------------------------------------


@dataclass
class _Key:
    """What the document says about one context key."""

    collected_in: list[str] = field(default_factory=list)
    seen_in: list[str] = field(default_factory=list)
    declared: dict[str, Any] = field(default_factory=dict)
    """Type and constraints from a field or classification extraction."""
    description: str = ""


def _extraction_key(
    config: dict[str, Any], where: str, report: list[str]
) -> tuple[str, dict[str, Any], str] | None:
    """(field name, declaration, description) of one ``field_extractions`` entry."""
    name = config.get("field_name")
    if not isinstance(name, str) or not name:
        report.append(f"{where}: no field_name; not mapped")
        return None
    kind = config.get("field_type", "str")
    declared: dict[str, Any] = {"type": _FIELD_TYPES.get(kind, "string")}
    if kind == "list":
        declared = {"type": "array", "items": {"type": "string", "maxLength": DEFAULT_STRING_BOUND}}
    elif kind not in _FIELD_TYPES:
        report.append(
            f"{where}: field_type {quote(kind)} has no fsmflow type; {quote(name)} is a string"
        )
    rules = config.get("validation_rules") or {}
    lost = []
    for rule, value in rules.items() if isinstance(rules, dict) else []:
        if rule == "allowed_values" and isinstance(value, list) and value:
            declared["enum"] = value
        elif rule == "max_length" and declared["type"] == "string" and isinstance(value, int):
            declared["maxLength"] = value
        elif rule in ("min_value", "max_value") and declared["type"] in ("integer", "number"):
            declared["minimum" if rule == "min_value" else "maximum"] = value
        elif rule == "pattern" and declared["type"] == "string" and isinstance(value, str):
            try:
                compile_pattern(value)
            except ValueError as exc:
                report.append(f"{where}: validation_rules.pattern not mapped: {exc}")
                continue
            declared["pattern"] = value
        else:
            lost.append(rule)
    if lost:
        report.append(
            f"{where}: validation_rules {', '.join(sorted(lost))} not mapped "
            "(no fsmflow key constraint for them)"
        )
    for extra in ("required", "confidence_threshold", "context_keys"):
        if config.get(extra) is not None:
            report.append(f"{where}: {extra} not mapped (no per-key extraction pass in fsmflow)")
    return name, declared, _text(config.get("extraction_instructions"))


def _classification_key(
    config: dict[str, Any], where: str, report: list[str]
) -> tuple[str, dict[str, Any], str] | None:
    """(field name, declaration, description) of one ``classification_extractions`` entry."""
    name = config.get("field_name")
    intents = config.get("intents")
    names = [
        i["name"] for i in intents or [] if isinstance(i, dict) and isinstance(i.get("name"), str)
    ]
    if not isinstance(name, str) or not name or not names:
        report.append(f"{where}: needs field_name and named intents; not mapped")
        return None
    described = [
        f"{i['name']}: {_text(i.get('description'))}"
        for i in intents or []
        if isinstance(i, dict) and isinstance(i.get("name"), str) and _text(i.get("description"))
    ]
    lost = [k for k in ("fallback_intent", "confidence_threshold", "model") if config.get(k)]
    if lost:
        report.append(
            f"{where}: {', '.join(lost)} not mapped (the model picks one of the intents itself)"
        )
    return name, {"type": "string", "enum": names}, "; ".join(described)


# --- conversion ----------------------------------------------------------------------


def convert(data: Any, *, source: str) -> ImportResult:
    """Convert a parsed llm-fsm / fsm_llm definition to an fsmflow definition.

    Args:
        data: The JSON document, parsed.
        source: A label for messages (the file name).

    Returns:
        The fsmflow definition and the report of what could not be mapped.

    Raises:
        LlmFsmError: If the document is not an llm-fsm definition (not an object,
            no states or initial_state, a transition to no state...); every
            problem is listed, each naming its field.
    """
    problems = _structure_problems(data)
    if problems:
        raise LlmFsmError(source, problems)
    report: list[str] = []
    state_names = _Names("state", r"[^A-Za-z0-9_]+", "state")
    key_names = _Names("context key", r"[^A-Za-z0-9_]+", "key")
    states: dict[str, dict[str, Any]] = data["states"]
    for state_id in states:
        state_names(state_id)

    for unknown in sorted(set(data) - _TOP_FIELDS):
        why = _NOT_MAPPED.get(unknown, "unknown to this importer")
        report.append(f"{unknown}: not mapped ({why})")

    keys: dict[str, _Key] = {}
    inferred: dict[str, set[str]] = {}
    out_states: dict[str, dict[str, Any]] = {}
    dropped_guards = False
    for state_id, state in states.items():
        name = state_names(state_id)
        where = f"state {quote(state_id)}"
        out: dict[str, Any] = {}
        if isinstance(state.get("id"), str) and state["id"] != state_id:
            report.append(f"{where}: id {quote(state['id'])} differs from its key; the key is used")
        for key in ("description", "purpose"):
            if _text(state.get(key)):
                out[key] = _text(state[key])
        instructions = [
            _text(state.get("instructions")),
            f"What to extract: {_text(state.get('extraction_instructions'))}"
            if _text(state.get("extraction_instructions"))
            else "",
            f"How to reply: {_text(state.get('response_instructions'))}"
            if _text(state.get("response_instructions"))
            else "",
        ]
        if any(instructions):
            out["instructions"] = "\n\n".join(part for part in instructions if part)

        collects = [key_names(k) for k in state.get("required_context_keys") or []]
        for label, entries, read in (
            ("field_extractions", state.get("field_extractions"), _extraction_key),
            (
                "classification_extractions",
                state.get("classification_extractions"),
                _classification_key,
            ),
        ):
            if entries is None:
                continue
            if not isinstance(entries, list):
                report.append(f"{where}: {label} is not a list; not mapped")
                continue
            for i, entry in enumerate(entries):
                got = (
                    read(entry, f"{where}: {label}[{i}]", report)
                    if isinstance(entry, dict)
                    else None
                )
                if got is None:
                    continue
                key, declared, description = got
                mapped = key_names(key)
                info = keys.setdefault(mapped, _Key())
                info.declared, info.description = declared, description or info.description
                collects.append(mapped)

        sees: list[str] | None = None
        scope = state.get("context_scope")
        if isinstance(scope, dict):
            writes = scope.get("write_keys") or []
            reads = scope.get("read_keys") or []
            collects += [key_names(k) for k in writes if isinstance(k, str) and k]
            sees = [key_names(k) for k in reads if isinstance(k, str) and k]
            for extra in sorted(set(scope) - {"read_keys", "write_keys"}):
                report.append(
                    f"{where}: context_scope.{extra} not mapped (unknown to this importer)"
                )
        elif scope is not None:
            report.append(f"{where}: context_scope is not an object; not mapped")

        transitions = []
        guard_keys: list[str] = []
        for i, transition in enumerate(state.get("transitions") or []):
            moved, dropped = _transition(
                transition, f"{where}: transition {i + 1}", states, state_names, key_names, report
            )
            dropped_guards = dropped_guards or dropped
            _infer_types(moved.get("when"), inferred)
            guard_keys += moved.get("requires", [])
            guard_keys += [v.split(".")[0] for v in jsonlogic.variables(moved.get("when"))]
            transitions.append(moved)

        collects = list(dict.fromkeys(collects))
        if transitions:
            if collects:
                out["collects"] = collects
            if sees is not None:
                # An explicit sees replaces the default (the keys the guards read):
                # the guards' keys stay visible, or their moves could never hold.
                seen = [k for k in dict.fromkeys([*sees, *guard_keys]) if k not in collects]
                if seen:
                    out["sees"] = seen
            out["transitions"] = transitions
        else:
            out["terminal"] = True
            if collects:
                report.append(
                    f"{where}: final state (no transitions): required_context_keys not "
                    "collected, fsmflow takes no model turn in a terminal state"
                )
            if _text(state.get("response_instructions")):
                report.append(
                    f"{where}: final state: response_instructions not shown to the model (the "
                    "reply that enters it is written in the state before, with the move)"
                )
        for key in collects if transitions else []:
            keys.setdefault(key, _Key()).collected_in.append(name)
        for key in dict.fromkeys(guard_keys):
            keys.setdefault(key, _Key())
        for key in out.get("sees", []):
            keys.setdefault(key, _Key()).seen_in.append(name)

        for unknown in sorted(set(state) - _STATE_FIELDS):
            why = _NOT_MAPPED.get(unknown, "unknown to this importer")
            report.append(f"{where}: {unknown} not mapped ({why})")
        out_states[name] = out

    _describe_next_states(out_states)
    if dropped_guards:
        report.append(
            "guards were dropped (listed above): those moves are now less guarded than in "
            "llm-fsm; review them"
        )
    report.append(
        "llm-fsm writes the reply in the state a turn moves to; fsmflow writes it with the "
        "move, so each move's description names the next state's purpose"
    )
    report.append(
        f"max_steps: llm-fsm has no step bound; set to {DEFAULT_MAX_STEPS}, raise it for "
        "longer conversations"
    )

    context = {
        key: _declare(key, info, inferred.get(key, set()), report) for key, info in keys.items()
    }
    # Renames first: a reader maps the names before reading the rest.
    report[:0] = [*state_names.renames(), *key_names.renames(only=context)]

    definition: dict[str, Any] = {
        "name": _agent_name(data.get("name"), report),
        "version": str(data.get("version") or "1"),
    }
    for key in ("description", "persona"):
        if _text(data.get(key)):
            definition[key] = _text(data[key])
    definition |= {
        "mode": "conversation",
        "initial_state": state_names(data["initial_state"]),
        "max_steps": DEFAULT_MAX_STEPS,
        "context": context,
        "states": out_states,
    }
    return ImportResult(definition=definition, report=report, source=source)


def _agent_name(raw: Any, report: list[str]) -> str:
    original = str(raw).strip() if raw not in (None, "") else ""
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", original).strip("_-")
    if not name[:1].isalpha():
        name = f"agent_{name}" if name else "imported_agent"
    name = name[:MAX_NAME_LENGTH]
    if name != original:
        report.insert(
            0,
            f"name {quote(original)} became {quote(name)} (an agent name is letters, digits, "
            "'_' and '-', starting with a letter)",
        )
    return name


def _transition(
    transition: dict[str, Any],
    where: str,
    states: dict[str, Any],
    state_names: _Names,
    key_names: _Names,
    report: list[str],
) -> tuple[dict[str, Any], bool]:
    """One fsmflow transition, and whether a guard had to be dropped."""
    target = transition["target_state"]
    moved: dict[str, Any] = {"target": state_names(target)}
    description = _text(transition.get("llm_description")) or _text(transition.get("description"))
    requires: list[str] = []
    whens: list[Any] = []
    dropped = False
    conditions = transition.get("conditions") or []
    for j, condition in enumerate(conditions):
        said = _text(condition.get("description"))
        at = f"{where} (-> {quote(target)}): condition {j + 1}"
        for unknown in sorted(set(condition) - _CONDITION_FIELDS):
            report.append(f"{at}: {unknown} not mapped (unknown to this importer)")
        requires += [key_names(k) for k in condition.get("requires_context_keys") or []]
        logic = condition.get("logic")
        if logic is None:
            continue
        present = _not_missing(logic)
        if present is not None:
            requires += [key_names(k) for k in present]
            continue
        translated, lacking = _translate(logic, key_names)
        if lacking:
            dropped = True
            report.append(
                f"{at}{f' ({said!r})' if said else ''}: JsonLogic not supported by fsmflow "
                f"guards ({'; '.join(lacking)}); guard dropped"
            )
        else:
            whens.append(translated)
    phrases = [_text(c.get("description")) for c in conditions if _text(c.get("description"))]
    if phrases and " ".join(phrases) != description:
        when = "; ".join(phrases)
        description = f"{description} (when: {when})" if description else when
    if description:
        moved["description"] = description
    if transition.get("priority") is not None:
        # Both order moves by ascending priority (lower first), with the same default.
        moved["priority"] = transition["priority"]
    if requires:
        moved["requires"] = list(dict.fromkeys(requires))
    if whens:
        moved["when"] = whens[0] if len(whens) == 1 else {"and": whens}
    for unknown in sorted(set(transition) - _TRANSITION_FIELDS):
        report.append(f"{where}: {unknown} not mapped (unknown to this importer)")
    return moved, dropped


def _describe_next_states(out_states: dict[str, dict[str, Any]]) -> None:
    """Add the next state's purpose to each move that leaves its state."""
    for state_id, state in out_states.items():
        for transition in state.get("transitions", []):
            target = out_states[transition["target"]]
            purpose = target.get("purpose") or target.get("description")
            if transition["target"] == state_id or not purpose:
                continue
            ends = " (ends the conversation)" if target.get("terminal") else ""
            next_text = f"next: {clip(purpose, _MOVE_NEXT_LENGTH)}{ends}"
            said = transition.get("description")
            transition["description"] = f"{said}; {next_text}" if said else next_text


def _declare(key: str, info: _Key, kinds: set[str], report: list[str]) -> dict[str, Any]:
    """The fsmflow declaration of one context key."""
    where = (
        f"collected in {', '.join(info.collected_in)}"
        if info.collected_in
        else f"seen in {', '.join(info.seen_in)}"
        if info.seen_in
        else "read by guards"
    )
    description = info.description or f"{key.replace('_', ' ')}; {where}"
    if info.declared:
        declared = dict(info.declared)
        if declared["type"] == "string" and "enum" not in declared:
            declared.setdefault("maxLength", DEFAULT_STRING_BOUND)
        if kinds and kinds != {_json_kind(declared["type"])}:
            report.append(
                f"context key {quote(key)}: declared {declared['type']} by its extraction, "
                f"but guards compare it with {' and '.join(sorted(kinds))}; review those guards"
            )
        return {"type": declared.pop("type"), "description": description, **declared}
    if len(kinds) > 1:
        report.append(
            f"context key {quote(key)}: guards compare it with {' and '.join(sorted(kinds))}; "
            "declared a string, review those guards"
        )
    kind = next(iter(kinds)) if len(kinds) == 1 else "string"
    if kind == "string":
        return {"type": "string", "description": description, "maxLength": DEFAULT_STRING_BOUND}
    return {"type": kind, "description": description}


def _json_kind(declared: str) -> str:
    return "number" if declared == "integer" else declared
