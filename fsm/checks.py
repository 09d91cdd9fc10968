"""Static checks of a structurally valid definition: the graph and the key names.

Every check runs and every problem is returned, so a user fixes a file in one pass
(up to ``MAX_PROBLEMS`` errors). Each check costs time linear in the definition:
a hostile one is as cheap to check as it is to read.
"""

from __future__ import annotations

import itertools
import re
from collections import deque
from collections.abc import Collection, Iterable, Iterator
from typing import Any

from fsm import jsonlogic
from fsm.context import SYSTEM_KEYS
from fsm.problems import Problem, did_you_mean, quote
from schemas.definition import NAME_PATTERN, AgentDefinition, InvalidGoto, State, Transition
from schemas.limits import MAX_GUARD_DEPTH, MAX_PROBLEMS

_NAME_RE = re.compile(NAME_PATTERN)


def successors(state: State) -> list[str]:
    """Every state a state can move to: transitions, approval and goto targets.

    Eventless transitions (``always``), ``on_invalid`` and ``on_dead_end`` included.
    """
    targets = [t.target for t in (*state.transitions, *state.always)]
    for rule in (state.on_invalid, state.on_dead_end):
        if isinstance(rule, InvalidGoto):
            targets.append(rule.goto)
    if state.approval is not None:
        targets += [state.approval.on_approve, state.approval.on_reject]
        if state.approval.on_timeout is not None:
            targets.append(state.approval.on_timeout)
    return targets


def _check_goto(
    definition: AgentDefinition, state_id: str, rule: object, field: str, hint: str
) -> Iterator[Problem]:
    """An ``{goto: STATE}`` rule names another state."""
    if not isinstance(rule, InvalidGoto):
        return
    where = ("states", state_id, field)
    if rule.goto not in definition.states:
        yield Problem(
            f"goto {rule.goto!r} is not a state{did_you_mean(rule.goto, definition.states)}",
            where,
        )
    elif rule.goto == state_id:
        yield Problem(f"goto names the state itself; {hint}", where)


def _fragile_way_out(state_id: str, state: State) -> Iterator[Problem]:
    """Warn where every way out waits for a successful call of the state's tools.

    Tool calls can fail (a ``ToolError``, a bad argument); once the visit's
    ``max_tool_errors`` are spent the run is at a dead end and ends failed. Saying
    ``on_dead_end`` (``fail`` or ``{goto: STATE}``) in the state acknowledges it.
    """
    leaving = [t for t in (*state.transitions, *state.always) if t.target != state_id]
    if not state.tools or not leaving or "on_dead_end" in state.model_fields_set:
        return
    own = set(state.tools)

    def on_calls(transition: Transition) -> bool:
        return any(
            var.startswith("_calls.") and var.split(".", 1)[1] in own
            for var in jsonlogic.variables(transition.when)
        )

    if all(on_calls(t) for t in leaving):
        yield Problem(
            f"every way out waits for a successful call of {', '.join(state.tools)}; if "
            f"the calls keep failing ({state.max_tool_errors} per visit, max_tool_errors) "
            "the run ends failed here. Say on_dead_end: fail, or {goto: STATE} to send it "
            "elsewhere",
            ("states", state_id),
            severity="warning",
        )


def guard_keys(state: State) -> set[str]:
    """Declared context keys this state's guards read (system keys excluded)."""
    keys: set[str] = set()
    for transition in (*state.transitions, *state.always):
        keys.update(transition.requires)
        keys.update(
            var.split(".")[0]
            for var in jsonlogic.variables(transition.when)
            if not var.startswith("_")
        )
    return keys


def is_self_only(state_id: str, state: State) -> bool:
    """A non-terminal state whose only move (if any) is staying put."""
    return (
        not state.terminal
        and state.approval is None
        and all(t.target == state_id for t in (*state.transitions, *state.always))
    )


def guard_depth(expr: Any) -> int:
    """Levels of objects and lists in a guard (``{">=": [{"var": "age"}, 18]}`` is 3).

    Counted without recursing, so any guard can be measured; the recursive
    functions of ``fsm.jsonlogic`` only ever see guards within ``MAX_GUARD_DEPTH``.
    """
    deepest = 0
    stack = [(expr, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            deepest = max(deepest, depth)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_steps(definition: AgentDefinition) -> Iterator[Problem]:
    if definition.max_steps < 1:
        yield Problem(
            f"max_steps must be at least 1, got {definition.max_steps}", anchor=("max_steps",)
        )
    if definition.greeting and definition.mode == "autonomous":
        yield Problem(
            "greeting is a conversation's first message; an autonomous run has no one to greet",
            anchor=("greeting",),
            severity="warning",
        )


def _check_names(definition: AgentDefinition) -> Iterator[Problem]:
    for kind, names in (("context", definition.context), ("states", definition.states)):
        label = "context key" if kind == "context" else "state id"
        for name in names:
            if name.startswith("_"):
                yield Problem(
                    f"{label} {name!r} starts with '_', which is reserved for the framework",
                    anchor=(kind, name),
                )
            elif not _NAME_RE.match(name):
                yield Problem(
                    f"{label} {name!r} must be letters, digits and '_', starting with a letter",
                    anchor=(kind, name),
                )


def _check_key_list(
    definition: AgentDefinition, state_id: str, field: str, keys: list[str]
) -> Iterator[Problem]:
    for key in keys:
        if key.startswith("_"):
            yield Problem(
                f"{key!r} is a reserved key; the model can never read or write it this way",
                ("states", state_id, field),
            )
        elif key not in definition.context:
            yield Problem(
                f"{key!r} is not a declared context key{did_you_mean(key, definition.context)}",
                ("states", state_id, field),
            )


def _check_guard(
    definition: AgentDefinition,
    state_id: str,
    index: int,
    when: object,
    listed: set[str],
    field: str = "transitions",
) -> Iterator[Problem]:
    path = ("states", state_id, field, index, "when")
    depth = guard_depth(when)
    if depth > MAX_GUARD_DEPTH:
        yield Problem(f"nested {depth} levels deep; the limit is {MAX_GUARD_DEPTH}", path)
        return
    for message in jsonlogic.validate(when):
        yield Problem(message, path)
    for var in jsonlogic.variables(when):
        head = var.split(".")[0]
        if head.startswith("_"):
            if head not in SYSTEM_KEYS:
                yield Problem(
                    f"{quote(var)} is not a system key (guards may read {', '.join(SYSTEM_KEYS)})",
                    path,
                )
            elif head == "_visits" and var.count(".") == 1:
                visited = var.split(".")[1]
                if visited not in definition.states:
                    yield Problem(
                        f"{quote(var)} names no state{did_you_mean(visited, definition.states)}",
                        path,
                    )
            elif head == "_calls" and var.count(".") == 1:
                tool = var.split(".")[1]
                if tool not in listed:
                    yield Problem(
                        f"{quote(var)} names no tool a state lists{did_you_mean(tool, listed)}",
                        path,
                    )
        elif head not in definition.context:
            yield Problem(
                f"{quote(head)} is not a declared context key"
                + did_you_mean(head, definition.context),
                path,
            )


def _check_state(
    definition: AgentDefinition,
    state_id: str,
    state: State,
    tools: Collection[str] | None,
    tiers: Collection[str] | None,
    listed: set[str],
) -> Iterator[Problem]:
    where = ("states", state_id)
    if state.terminal and state.transitions:
        yield Problem(
            f"a terminal state cannot have transitions (found {len(state.transitions)})",
            (*where, "transitions"),
        )
    if state.terminal and state.approval is not None:
        yield Problem("a terminal state cannot be an approval gate", (*where, "approval"))
    if state.approval is not None and state.transitions and not state.terminal:
        yield Problem(
            "an approval gate moves only by a decision: remove its transitions "
            "and use on_approve / on_reject",
            (*where, "transitions"),
        )
    if state.always and (state.terminal or state.approval is not None):
        yield Problem(
            "a terminal state cannot have eventless transitions"
            if state.terminal
            else "an approval gate moves only by a decision: remove its 'always' transitions",
            (*where, "always"),
        )
    for field in ("transitions", "always"):
        for index, transition in enumerate(getattr(state, field)):
            if transition.target not in definition.states:
                yield Problem(
                    f"target {transition.target!r} is not a state"
                    + did_you_mean(transition.target, definition.states),
                    (*where, field, index),
                )
            elif field == "always" and transition.target == state_id:
                yield Problem(
                    "an eventless transition to the state itself would loop without a turn",
                    (*where, field, index),
                )
            for problem in _check_key_list(definition, state_id, "requires", transition.requires):
                yield Problem(problem.message, (*where, field, index, "requires"))
            if transition.when is not None:
                yield from _check_guard(definition, state_id, index, transition.when, listed, field)
    if state.approval is not None:
        for field in ("on_approve", "on_reject", "on_timeout"):
            target = getattr(state.approval, field)
            if target is not None and target not in definition.states:
                yield Problem(
                    f"{field} {target!r} is not a state{did_you_mean(target, definition.states)}",
                    (*where, "approval"),
                )
    yield from _check_goto(
        definition, state_id, state.on_invalid, "on_invalid", "use 'wait' to ask the model again"
    )
    yield from _check_goto(
        definition, state_id, state.on_dead_end, "on_dead_end", "use 'fail' to end the run"
    )
    if state.on_dead_end != "fail" and (state.terminal or state.approval is not None):
        yield Problem(
            "on_dead_end applies to states the run leaves by its own moves; "
            + ("a terminal state" if state.terminal else "an approval gate")
            + " has none",
            (*where, "on_dead_end"),
            severity="warning",
        )
    yield from _fragile_way_out(state_id, state)
    if state.on_invalid != "wait" and (state.terminal or state.approval is not None):
        yield Problem(
            "on_invalid applies to states where the model moves; "
            + ("a terminal state" if state.terminal else "an approval gate")
            + " takes no model turns",
            (*where, "on_invalid"),
            severity="warning",
        )
    yield from _check_key_list(definition, state_id, "collects", state.collects)
    yield from _check_key_list(definition, state_id, "sees", state.sees or [])
    if state.max_tool_calls is not None and not state.tools:
        yield Problem(
            "max_tool_calls bounds tool calls, but the state lists no tools",
            (*where, "max_tool_calls"),
            severity="warning",
        )
    if state.tools and definition.mode != "autonomous":
        yield Problem(
            "tools are called in autonomous runs only (mode: autonomous); "
            "a conversation turn is a reply",
            (*where, "tools"),
        )
    if tools is not None:
        for name in state.tools:
            if name not in tools:
                yield Problem(
                    f"tool {name!r} is not registered{did_you_mean(name, tools)} "
                    "(tool modules come from FSMFLOW_TOOL_MODULES)",
                    (*where, "tools"),
                )
    if tiers is not None and state.model not in tiers:
        yield Problem(
            f"model tier {state.model!r} is not configured (set "
            f"FSMFLOW_MODEL_{state.model.upper()}){did_you_mean(state.model, tiers)}",
            (*where, "model"),
        )
    yield from _check_duplicates(state_id, state)


def _check_tool_options(
    definition: AgentDefinition, tools: Collection[str] | None
) -> Iterator[Problem]:
    used = {name for state in definition.states.values() for name in state.tools}
    for name, options in definition.tools.items():
        for key in options.writes:
            if key.startswith("_") or key not in definition.context:
                yield Problem(
                    f"writes {key!r}, which is not a declared context key"
                    + did_you_mean(key, definition.context),
                    ("tools", name, "writes"),
                )
        if tools is not None and name not in tools:
            yield Problem(
                f"tool {name!r} is not registered{did_you_mean(name, tools)}", ("tools", name)
            )
        elif name not in used:
            yield Problem(
                f"options for tool {name!r}, which no state lists in its tools",
                ("tools", name),
                severity="warning",
            )


def _check_duplicates(state_id: str, state: State) -> Iterator[Problem]:
    seen: dict[tuple[str, frozenset[str], str], int] = {}
    for index, transition in enumerate(state.transitions):
        if guard_depth(transition.when) > MAX_GUARD_DEPTH:
            continue  # refused already; repr recurses
        signature = (transition.target, frozenset(transition.requires), repr(transition.when))
        if signature in seen:
            yield Problem(
                f"transitions {seen[signature] + 1} and {index + 1} both go to "
                f"{transition.target!r} with the same guard; one of them is redundant",
                ("states", state_id, "transitions", index),
                severity="warning",
            )
        else:
            seen[signature] = index


def _reachable(definition: AgentDefinition, start: str) -> set[str]:
    seen = {start}
    frontier = [start]
    while frontier:
        current = definition.states.get(frontier.pop())
        for target in successors(current) if current else []:
            if target in definition.states and target not in seen:
                seen.add(target)
                frontier.append(target)
    return seen


def _reaching(definition: AgentDefinition, ends: Iterable[str]) -> set[str]:
    """Every state from which one of ``ends`` can be reached (the ends included).

    One search backwards over the edges, each edge followed once.
    """
    predecessors: dict[str, list[str]] = {}
    for state_id, state in definition.states.items():
        for target in successors(state):
            predecessors.setdefault(target, []).append(state_id)
    seen = set(ends)
    queue = deque(seen)
    while queue:
        for source in predecessors.get(queue.popleft(), ()):
            if source not in seen:
                seen.add(source)
                queue.append(source)
    return seen


def _always_cycles(definition: AgentDefinition) -> Iterator[Problem]:
    """Eventless transitions that can form a loop: the FSM would move forever without a turn.

    Guards are not evaluated (they might all hold at once), so any cycle of
    ``always`` edges is refused; each is reported once, at its first state.
    """
    edges = {
        state_id: sorted(
            {
                t.target
                for t in state.always
                if t.target in definition.states and t.target != state_id
            }
        )
        for state_id, state in definition.states.items()
    }
    done: set[str] = set()
    reported: set[frozenset[str]] = set()
    for start in definition.states:
        if start in done:
            continue
        # Iterative depth-first search; ``path`` is the current chain of states.
        path: list[str] = [start]
        on_path = {start}
        iterators = [iter(edges[start])]
        while iterators:
            target = next(iterators[-1], None)
            if target is None:
                iterators.pop()
                finished = path.pop()
                done.add(finished)
                on_path.discard(finished)
                continue
            if target in on_path:
                loop = path[path.index(target) :]
                if frozenset(loop) not in reported:
                    reported.add(frozenset(loop))
                    chain = " -> ".join([*loop, target])
                    yield Problem(
                        f"eventless transitions form a loop ({chain}): the FSM could move "
                        "forever without a turn",
                        ("states", loop[0], "always"),
                    )
                continue
            if target in done:
                continue
            path.append(target)
            on_path.add(target)
            iterators.append(iter(edges[target]))


def _check_graph(definition: AgentDefinition) -> Iterator[Problem]:
    states = definition.states
    if not any(state.terminal for state in states.values()):
        yield Problem("no terminal state: mark at least one state with 'terminal: true'")
    if definition.initial_state not in states:
        yield Problem(
            f"initial_state {definition.initial_state!r} is not a state"
            + did_you_mean(definition.initial_state, states),
            anchor=("initial_state",),
        )
        return
    yield from _always_cycles(definition)
    reachable = _reachable(definition, definition.initial_state)
    for state_id in states:
        if state_id not in reachable:
            yield Problem(
                f"unreachable from the initial state {definition.initial_state!r}",
                ("states", state_id),
            )
    # A self-only state is a warning, not a trap: the run ends there by max_steps,
    # which is a defined end. So the backward search starts from those too.
    endings = [s for s, state in states.items() if state.terminal or is_self_only(s, state)]
    can_end = _reaching(definition, endings)
    for state_id, state in states.items():
        if is_self_only(state_id, state):
            yield Problem(
                "no transition leaves this state except to itself; a run that enters it "
                "stays until max_steps ends it",
                ("states", state_id),
                severity="warning",
            )
        elif state_id not in can_end:
            yield Problem(
                "no terminal state can be reached from here (a trap)", ("states", state_id)
            )


def check_definition(
    definition: AgentDefinition,
    *,
    tools: Collection[str] | None = None,
    tiers: Collection[str] | None = None,
) -> list[Problem]:
    """Run every static check.

    Args:
        definition: A definition that passed structural validation.
        tools: Names of the registered tools; when given, unknown tool names are errors.
        tiers: Names of the configured model tiers; when given, unknown tiers are errors.

    Returns:
        Every problem found, errors and warnings, in document order.
    """
    listed = {name for state in definition.states.values() for name in state.tools}
    found = itertools.chain(
        _check_steps(definition),
        _check_names(definition),
        _check_tool_options(definition, tools),
        *(
            _check_state(definition, state_id, state, tools, tiers, listed)
            for state_id, state in definition.states.items()
        ),
        _check_graph(definition),
    )
    problems: list[Problem] = []
    errors = 0
    for problem in found:
        if problem.severity == "error":
            errors += 1
            if errors > MAX_PROBLEMS:
                # The rest would be listed after fixes anyway; finding them all
                # costs time per problem ("did you mean" compares names).
                problems.append(
                    Problem(f"checks stopped after {MAX_PROBLEMS} problems; fix these first")
                )
                break
        problems.append(problem)
    return problems
