"""An agent's state diagram as inline SVG, laid out here: no graphviz, no JavaScript.

States are placed in layers by breadth-first search from the initial state (a
run reads top to bottom); states nothing reaches go in a last layer. Forward
moves are curves down to the next layers; moves back up (retries, corrections)
and self-moves loop round the right side, so they never cross the states.

Everything a page script needs to draw a run live is in the markup: a state is
``<g class="node" data-state="...">`` (``current`` while the run is there,
``visited`` once it was), a move is ``<g class="edge" data-from data-to
data-count>`` with a ``<text class="count">``; the style sheet does the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from html import escape

from schemas.definition import AgentDefinition, InvalidGoto

NODE_HEIGHT = 38
ROW_GAP = 96
"""Vertical distance between two layers' centres."""
COLUMN_GAP = 28
CHAR_WIDTH = 7.6
"""Width of a character of the diagram's font (13 px sans-serif), a little generous."""
MIN_NODE_WIDTH = 90
MARGIN = 24
LOOP_SPACE = 36
"""Room on the right of the widest layer for moves back up, per level of nesting."""

Point = tuple[float, float]


@dataclass
class Edge:
    """A move of the diagram: every transition and gate outcome from one state to another."""

    source: str
    target: str
    labels: list[str] = field(default_factory=list)
    kinds: set[str] = field(default_factory=set)
    """``transition``, ``always``, ``approve``, ``reject``, ``timeout``, ``on_invalid``,
    ``on_dead_end``."""


def edges_of(definition: AgentDefinition) -> list[Edge]:
    """Every move of the definition, one ``Edge`` per (source, target) pair, in order."""
    found: dict[tuple[str, str], Edge] = {}

    def add(source: str, target: str, kind: str, label: str) -> None:
        edge = found.setdefault((source, target), Edge(source, target))
        edge.kinds.add(kind)
        if label and label not in edge.labels:
            edge.labels.append(label)

    for state_id, state in definition.states.items():
        for transition in state.transitions:
            add(state_id, transition.target, "transition", transition.description)
        for transition in state.always:
            add(state_id, transition.target, "always", transition.description or "always")
        if isinstance(state.on_invalid, InvalidGoto):
            add(state_id, state.on_invalid.goto, "on_invalid", "no valid turn")
        if isinstance(state.on_dead_end, InvalidGoto):
            add(state_id, state.on_dead_end.goto, "on_dead_end", "dead end")
        if state.approval is not None:
            add(state_id, state.approval.on_approve, "approve", "approve")
            add(state_id, state.approval.on_reject, "reject", "reject")
            if state.approval.on_timeout is not None:
                add(state_id, state.approval.on_timeout, "timeout", "timeout")
    return list(found.values())


def layers_of(definition: AgentDefinition, edges: Iterable[Edge]) -> list[list[str]]:
    """States by breadth-first distance from the initial state; unreached ones last."""
    following: dict[str, list[str]] = {state: [] for state in definition.states}
    for edge in edges:
        if edge.target in following and edge.target not in following[edge.source]:
            following[edge.source].append(edge.target)
    depth = {definition.initial_state: 0}
    queue = deque([definition.initial_state])
    while queue:
        state = queue.popleft()
        for target in following.get(state, []):
            if target not in depth:
                depth[target] = depth[state] + 1
                queue.append(target)
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=0) + 1)]
    for state in definition.states:
        if state in depth:
            layers[depth[state]].append(state)
    unreached = [state for state in definition.states if state not in depth]
    if unreached:
        layers.append(unreached)
    return layers


@dataclass(frozen=True)
class _Box:
    x: float
    y: float
    width: float
    layer: int

    @property
    def right(self) -> float:
        return self.x + self.width / 2


def _width(name: str) -> float:
    return max(MIN_NODE_WIDTH, len(name) * CHAR_WIDTH + 28)


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def svg(
    definition: AgentDefinition,
    *,
    current: str | None = None,
    counts: Mapping[tuple[str, str], int] | None = None,
    visited: Iterable[str] = (),
    link: Callable[[str], str] | None = None,
    dom_id: str = "state-diagram",
) -> str:
    """The definition's state diagram as an ``<svg>`` element.

    Args:
        definition: The agent.
        current: The state a run is in (class ``current``).
        counts: How often a run took each move, by (source, target).
        visited: States a run has been in (class ``visited``).
        link: A state's link target (e.g. its section on the page), if any.
        dom_id: The element's id; ids inside it derive from it.
    """
    counts = counts or {}
    seen = set(visited)
    edges = edges_of(definition)
    layers = layers_of(definition, edges)
    widths = [
        sum(_width(s) for s in layer) + COLUMN_GAP * (len(layer) - 1) for layer in layers if layer
    ]
    inner = max(widths, default=MIN_NODE_WIDTH)
    boxes: dict[str, _Box] = {}
    for number, layer in enumerate(layers):
        total = sum(_width(s) for s in layer) + COLUMN_GAP * (len(layer) - 1)
        x = MARGIN + (inner - total) / 2
        for name in layer:
            width = _width(name)
            middle = MARGIN + NODE_HEIGHT / 2 + number * ROW_GAP
            boxes[name] = _Box(x + width / 2, middle, width, number)
            x += width + COLUMN_GAP
    backs = [
        e for e in edges if e.target in boxes and boxes[e.target].layer <= boxes[e.source].layer
    ]
    width = MARGIN * 2 + inner + LOOP_SPACE * (1 + min(len(backs), 4))
    height = MARGIN * 2 + NODE_HEIGHT + (len(layers) - 1) * ROW_GAP
    marker = f"{dom_id}-arrow"
    title = f"State diagram of {definition.name}"
    states_text = "; ".join(_describe_state(definition, s, current) for s in definition.states)
    out = [
        f'<svg id="{escape(dom_id)}" class="diagram" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {_fmt(width)} {_fmt(height)}" width="{_fmt(width)}" '
        f'role="img" aria-labelledby="{escape(dom_id)}-title {escape(dom_id)}-desc">',
        f'<title id="{escape(dom_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(dom_id)}-desc">{escape(states_text)}</desc>',
        f'<defs><marker id="{escape(marker)}" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerUnits="userSpaceOnUse" markerWidth="9" markerHeight="9" '
        'orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>',
    ]
    back_number = 0
    for edge in edges:
        if edge.target not in boxes:
            continue
        source, target = boxes[edge.source], boxes[edge.target]
        if edge.source == edge.target:
            path, label_at = _self_loop(source)
        elif target.layer > source.layer:
            path, label_at = _forward(source, target)
        elif target.layer == source.layer:
            path, label_at = _beside(source, target)
        else:
            back_number += 1
            reach = MARGIN + inner + LOOP_SPACE * min(back_number, 4)
            path, label_at = _backward(source, target, reach)
        count = counts.get((edge.source, edge.target), 0)
        classes = ["edge", *sorted(f"edge-{kind}" for kind in edge.kinds)]
        if count:
            classes.append("taken")
        description = f"{edge.source} to {edge.target}"
        if edge.labels:
            description += ": " + "; ".join(edge.labels)
        gate_label = next((k for k in ("approve", "reject", "timeout") if k in edge.kinds), "")
        out.append(
            f'<g class="{" ".join(classes)}" data-from="{escape(edge.source)}" '
            f'data-to="{escape(edge.target)}" data-count="{count}">'
            f"<title>{escape(description)}</title>"
            f'<path d="{path}" marker-end="url(#{escape(marker)})"/>'
        )
        lx, ly = label_at
        text = gate_label + (" " if gate_label else "")
        # Labels sit beside the curve, on the side it bends to, so that two moves
        # leaving one state (approve and reject) keep their labels apart.
        leftwards = target.layer > source.layer and target.x < source.x
        anchor = "end" if leftwards else "start"
        lx += -6 if leftwards else 6
        out.append(
            f'<text class="edge-label" x="{_fmt(lx)}" y="{_fmt(ly - 4)}" '
            f'text-anchor="{anchor}">{escape(text)}'
            f'<tspan class="count">{f"×{count}" if count else ""}</tspan></text></g>'
        )
    for state_id, state in definition.states.items():
        box = boxes[state_id]
        classes = ["node"]
        if state_id == definition.initial_state:
            classes.append("initial")
        if state.terminal:
            classes.append("terminal")
        if state.approval is not None:
            classes.append("gate")
        if state_id in seen:
            classes.append("visited")
        if state_id == current:
            classes.append("current")
        x, y = box.x - box.width / 2, box.y - NODE_HEIGHT / 2
        tip = state.purpose or state.description or state_id
        node = (
            f'<g class="{" ".join(classes)}" data-state="{escape(state_id)}">'
            f"<title>{escape(_describe_state(definition, state_id, None))}: {escape(tip)}</title>"
            f'<rect x="{_fmt(x)}" y="{_fmt(y)}" width="{_fmt(box.width)}" '
            f'height="{NODE_HEIGHT}" rx="{12 if not state.terminal else NODE_HEIGHT / 2}"/>'
            f'<text x="{_fmt(box.x)}" y="{_fmt(box.y + 4.5)}" text-anchor="middle">'
            f"{escape(state_id)}</text></g>"
        )
        if link is not None:
            node = f'<a href="{escape(link(state_id))}">{node}</a>'
        out.append(node)
    out.append("</svg>")
    return "\n".join(out)


def _describe_state(definition: AgentDefinition, state_id: str, current: str | None) -> str:
    state = definition.states[state_id]
    marks = []
    if state_id == definition.initial_state:
        marks.append("initial")
    if state.approval is not None:
        marks.append("approval gate")
    if state.terminal:
        marks.append("terminal")
    if state_id == current:
        marks.append("current")
    return state_id + (f" ({', '.join(marks)})" if marks else "")


def _bezier_middle(p0: Point, p1: Point, p2: Point, p3: Point) -> tuple[float, float]:
    return (
        (p0[0] + 3 * p1[0] + 3 * p2[0] + p3[0]) / 8,
        (p0[1] + 3 * p1[1] + 3 * p2[1] + p3[1]) / 8,
    )


def _curve(p0: Point, p1: Point, p2: Point, p3: Point) -> tuple[str, tuple[float, float]]:
    path = (
        f"M{_fmt(p0[0])},{_fmt(p0[1])} C{_fmt(p1[0])},{_fmt(p1[1])} "
        f"{_fmt(p2[0])},{_fmt(p2[1])} {_fmt(p3[0])},{_fmt(p3[1])}"
    )
    return path, _bezier_middle(p0, p1, p2, p3)


def _forward(source: _Box, target: _Box) -> tuple[str, tuple[float, float]]:
    start = (source.x, source.y + NODE_HEIGHT / 2)
    end = (target.x, target.y - NODE_HEIGHT / 2)
    bend = (end[1] - start[1]) / 2
    return _curve(start, (start[0], start[1] + bend), (end[0], end[1] - bend), end)


def _backward(source: _Box, target: _Box, reach: float) -> tuple[str, tuple[float, float]]:
    start = (source.right, source.y)
    end = (target.right, target.y)
    return _curve(start, (reach, start[1]), (reach, end[1]), end)


def _beside(source: _Box, target: _Box) -> tuple[str, tuple[float, float]]:
    """A move within a layer: from the facing side, bowed below the states between."""
    step = 1 if target.x > source.x else -1
    start = (source.x + step * source.width / 2, source.y + 6)
    end = (target.x - step * target.width / 2, target.y + 6)
    between = abs(end[0] - start[0]) > 2 * COLUMN_GAP
    sag = NODE_HEIGHT if between else 8
    return _curve(
        start, (start[0] + step * 12, start[1] + sag), (end[0] - step * 12, end[1] + sag), end
    )


def _self_loop(box: _Box) -> tuple[str, tuple[float, float]]:
    start = (box.right, box.y - 8)
    end = (box.right, box.y + 8)
    return _curve(start, (box.right + 34, box.y - 30), (box.right + 34, box.y + 30), end)
