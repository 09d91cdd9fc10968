"""The console's SVG diagram and the views of a trace: pure, no server."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from fsm.loader import load_definition
from schemas.definition import AgentDefinition, InvalidGoto
from schemas.run import TraceEntry
from tests.conftest import EXAMPLES
from tests.console.helpers import secret_gated
from workers.api.console import diagram, views

SVG = "{http://www.w3.org/2000/svg}"


def nodes(svg: str) -> dict[str, set[str]]:
    root = ET.fromstring(svg)
    return {
        g.attrib["data-state"]: set(g.attrib["class"].split())
        for g in root.iter(f"{SVG}g")
        if "data-state" in g.attrib
    }


def test_every_state_is_drawn_with_its_kind_and_the_current_one_highlighted() -> None:
    definition = load_definition(EXAMPLES / "form.yaml")
    svg = diagram.svg(definition, current="ask_email", visited={"ask_name", "ask_email"})
    drawn = nodes(svg)
    assert set(drawn) == set(definition.states)
    assert drawn["ask_name"] >= {"node", "initial", "visited"}
    assert "current" in drawn["ask_email"] and "current" not in drawn["ask_name"]
    assert {"terminal"} <= drawn["submitted"] and {"terminal"} <= drawn["cancelled"]
    # Valid SVG with an accessible name and a description listing the states.
    root = ET.fromstring(svg)
    assert root.attrib["role"] == "img"
    assert "ask_email (current)" in root.find(f"{SVG}desc").text  # type: ignore[union-attr]


def test_gates_have_approve_and_reject_edges_and_counts_show_the_path() -> None:
    definition = AgentDefinition.model_validate(secret_gated("gate"))
    svg = diagram.svg(definition, current="done", counts={("review", "done"): 2})
    assert "gate" in nodes(svg)["review"]
    approve = re.search(
        r'<g class="([^"]+)" data-from="review" data-to="done" data-count="2">', svg
    )
    assert approve and set(approve.group(1).split()) == {"edge", "edge-approve", "taken"}
    assert '<tspan class="count">×2</tspan>' in svg
    assert 'class="edge edge-reject" data-from="review" data-to="rejected" data-count="0"' in svg


def test_layers_follow_the_distance_from_the_initial_state() -> None:
    definition = load_definition(EXAMPLES / "form.yaml")
    layers = diagram.layers_of(definition, diagram.edges_of(definition))
    assert layers[0] == ["ask_name"]
    assert layers[1] == ["ask_email", "cancelled"]
    assert [state for layer in layers for state in layer].count("confirm") == 1


def test_state_names_are_escaped() -> None:
    data = secret_gated("gate")
    data["states"]["review"]["purpose"] = "<script>alert(1)</script> & co"
    svg = diagram.svg(AgentDefinition.model_validate(data))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)


def test_the_path_counts_moves_that_were_applied() -> None:
    trace = [
        TraceEntry(step=0, from_state="a", to_state="b", accepted=True),
        TraceEntry(step=1, from_state="b", to_state="b", accepted=True),
        TraceEntry(step=1, from_state="b", to_state="c", accepted=False, reason="guard"),
        TraceEntry(step=1, kind="approve", from_state="b", to_state="a", accepted=True, by="al"),
        TraceEntry(step=2, from_state="a", to_state="b", accepted=True),
    ]
    assert views.path_counts(trace) == {("a", "b"): 2, ("b", "a"): 1}
    assert views.visited("a", trace) == {"a", "b"}
    items = views.timeline(trace)
    assert items[2].title == "turn rejected in b" and items[2].detail == "guard"
    assert items[3].title == "approved at b by al → a"


def test_eventless_and_dead_end_moves_are_drawn_as_edges_of_their_own() -> None:
    callback = load_definition(EXAMPLES / "callback.yaml")
    always = [e for e in diagram.edges_of(callback) if "always" in e.kinds]
    # Every eventless transition of the call-back form is an edge (it has no other).
    assert {(e.source, e.target) for e in always} == {
        (state_id, t.target) for state_id, s in callback.states.items() for t in s.always
    }
    assert 'class="edge edge-always' in diagram.svg(callback)
    research = load_definition(EXAMPLES / "research.yaml")
    states = dict(research.states)
    states["write"] = states["write"].model_copy(
        update={"on_dead_end": InvalidGoto(goto="abandoned")}
    )
    stuck = research.model_copy(update={"states": states})
    (edge,) = [e for e in diagram.edges_of(stuck) if "on_dead_end" in e.kinds]
    assert (edge.source, edge.target, edge.labels) == ("write", "abandoned", ["dead end"])
