"""Workflow graphs (layout, drawing, problems of a draft, a run's path), the
version diff, and the run's time axis."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from runs import engine
from runs.engine.definition import problems_by_step, snapshot, validate_draft
from runs.graph_svg import NODE_H, NODE_W, graph_of, layout, render
from runs.models import Step, Workflow
from runs.run_timeline import LEFT, Approval, Attempt, Current, time_axis
from tests.conftest import drive

pytestmark = pytest.mark.django_db

SVG = "{http://www.w3.org/2000/svg}"
END = {"kind": "end", "config": {"outcome": "done", "success": True}}


def llm(prompt: str, **edges: str) -> dict[str, Any]:
    return {
        "kind": "llm",
        "config": {
            "provider": "scripted",
            "prompt": prompt,
            "output_schema": {"type": "object"},
            "scripted": {"reply": {"ok": True}},
        },
        "edges": edges,
    }


# A loop with a bound (exhausted), an escape, a branch, an edge that skips
# layers, an approval and an edge to a step that does not exist.
SNAPSHOT: dict[str, Any] = {
    "entry": "start",
    "steps": {
        "start": {"kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "route"}},
        "route": {
            "kind": "branch",
            "config": {"rules": [{"when": {"path": "input.x", "op": "exists"}, "edge": "x"}]},
            "edges": {"x": "draft", "default": "done"},
        },
        "draft": {**llm("Write", next="review", escape="manual"), "max_visits": 3},
        "review": {
            "kind": "approval",
            "config": {},
            "edges": {"approved": "done", "rejected": "draft", "exhausted": "manual"},
        },
        "manual": {"kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "ghost"}},
        "done": END,
    },
}


def edges_of(snapshot: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (key, label, target)
        for key, step in snapshot["steps"].items()
        for label, target in step.get("edges", {}).items()
    }


def parse_svg(html: str, element_id: str) -> ET.Element:
    match = re.search(rf'<svg [^>]*id="{element_id}".*?</svg>', html, re.S)
    assert match, f"no svg #{element_id}"
    return ET.fromstring(match.group(0))


def nodes(svg: ET.Element) -> dict[str, ET.Element]:
    return {
        g.get("data-step"): g
        for g in svg.iter(f"{SVG}g")
        if "node" in (g.get("class") or "").split()
    }


def classes(element: ET.Element) -> set[str]:
    return set((element.get("class") or "").split())


# --- layout and drawing ------------------------------------------------------------


def test_the_layout_places_every_step_and_routes_every_edge():
    placed = layout(graph_of(SNAPSHOT))
    assert set(placed.nodes) == set(SNAPSHOT["steps"]) | {"ghost"}
    assert placed.nodes["ghost"].missing
    assert {(e.source, e.label, e.target) for e in placed.edges} == edges_of(SNAPSHOT)
    boxes = [(n.x, n.y) for n in placed.nodes.values()]
    for index, (x, y) in enumerate(boxes):  # no two steps overlap
        for other_x, other_y in boxes[index + 1 :]:
            assert abs(x - other_x) >= NODE_W or abs(y - other_y) >= NODE_H
    for edge in placed.edges:  # forward edges go down a layer or more; loops go back up
        down = placed.layers[edge.target] > placed.layers[edge.source]
        assert down != edge.back, edge
    assert {(e.source, e.label) for e in placed.edges if e.back} == {("review", "rejected")}


def test_escape_and_exhausted_edges_are_drawn_in_their_own_style():
    svg = ET.fromstring(render(layout(graph_of(SNAPSHOT)), title="t", description="d"))
    styled = {g.get("data-edge"): classes(g) for g in svg.iter(f"{SVG}g") if "edge" in classes(g)}
    assert "edge-escape" in styled["draft:escape"]
    assert "edge-exhausted" in styled["review:exhausted"]
    assert "edge-normal" in styled["draft:next"]
    labels = {t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "edge-label"}
    assert labels >= {"next", "escape", "exhausted", "approved", "rejected", "x", "default"}


def test_the_drawing_is_accessible_deterministic_and_escapes_every_text():
    hostile = {
        "entry": "<b>",
        "steps": {"<b>": {"kind": "tool", "config": {}, "edges": {'x"><script>': "<b>"}}},
    }
    first = render(layout(graph_of(hostile)), title="<t>", description="d&d")
    assert first == render(layout(graph_of(hostile)), title="<t>", description="d&d")
    assert "<script>" not in first and "<b>" not in first
    svg = ET.fromstring(first)  # well-formed: every text was escaped
    assert svg.get("role") == "img"
    assert svg.find(f"{SVG}title").text == "<t>"
    assert svg.find(f"{SVG}desc").text == "d&d"


def test_paid_steps_and_steps_that_wait_for_a_person_are_marked():
    snapshot = {
        "entry": "enrich",
        "steps": {
            "enrich": {"kind": "tool", "config": {"tool": "enrich.company"}, "edges": {}},
            "refund": {"kind": "tool", "config": {"tool": "refund.create_request"}},
            "ask": {"kind": "llm", "config": {}},
            "review": {"kind": "approval", "config": {}},
            "echo": {"kind": "tool", "config": {"tool": "echo"}},
        },
    }
    graph = graph_of(snapshot, approve_tools=["refund.create_request"])
    marks = {step.key: step.marks for step in graph.steps}
    assert marks == {
        "enrich": ("paid",),
        "refund": ("approval",),
        "ask": ("paid",),
        "review": ("approval",),
        "echo": (),
    }


# --- problems of a draft -----------------------------------------------------------


def draft(make_workflow) -> Workflow:
    return make_workflow(
        [
            {"key": "ask", **llm("Hello {{ input.name }}", next="nowhere")},
            {"key": "done", **END},
        ],
        publish=False,
    )


def test_problems_are_grouped_by_the_step_they_name_and_publish_still_reports_them(
    make_workflow,
):
    workflow = draft(make_workflow)
    problems = validate_draft(snapshot(workflow))
    grouped = problems_by_step(problems, ["ask", "done"])
    assert grouped["ask"] == [
        "step 'ask' (llm): edge 'next' leads to 'nowhere', which is not a step"
    ]
    with pytest.raises(engine.PublishError) as refused:
        engine.publish_workflow(workflow=workflow)
    assert refused.value.problems == problems
    loop = problems_by_step(["steps a -> b form a loop with no bound: …"], ["a", "b", "c"])
    assert set(loop) == {"a", "b"}


def test_the_draft_graph_marks_each_problem_on_its_step(make_workflow, admin_client):
    workflow = draft(make_workflow)
    page = admin_client.get(reverse("admin:runs_workflow_change", args=[workflow.pk]))
    assert page.status_code == 200
    svg = parse_svg(page.content.decode(), "draft-graph-svg")
    marked = nodes(svg)
    assert "problem" in classes(marked["ask"]) and "problem" not in classes(marked["done"])
    assert "leads to 'nowhere'" in marked["ask"].find(f"{SVG}title").text
    assert "nowhere" in marked and "missing" in classes(marked["nowhere"])
    assert "which is not a step</li>" in page.content.decode()


def form_data(workflow: Workflow, **step_changes: dict[str, str]) -> dict[str, str]:
    """The workflow's change form as a browser would post it."""
    steps = list(workflow.steps.order_by("position"))
    data = {
        "name": workflow.name,
        "slug": workflow.slug,
        "description": "",
        "entry_step": workflow.entry_step,
        "role": str(workflow.role_id or ""),
        "policy": "",
        "max_active_runs": "",
        "input_schema": "null",
        "sensitive_fields": "[]",
        "untrusted_fields": "[]",
        "steps-TOTAL_FORMS": str(len(steps)),
        "steps-INITIAL_FORMS": str(len(steps)),
        "steps-MIN_NUM_FORMS": "0",
        "steps-MAX_NUM_FORMS": "1000",
    }
    for index, step in enumerate(steps):
        row = {
            "id": str(step.pk),
            "workflow": str(workflow.pk),
            "key": step.key,
            "kind": step.kind,
            "position": str(step.position),
            "config": json.dumps(step.config),
            "edges": json.dumps(step.edges),
            "max_attempts": "3",
            "backoff_base_s": "0.01",
            "backoff_cap_s": "0.05",
            "timeout_s": "10",
            "max_visits": "1",
            "cache_ttl_s": "0",
            "output_checks": "[]",
            **step_changes.get(step.key, {}),
        }
        data.update({f"steps-{index}-{name}": value for name, value in row.items()})
    return data


def test_the_draft_graph_is_redrawn_from_the_form_without_saving(make_workflow, admin_client):
    workflow = draft(make_workflow)
    url = reverse("admin:runs-workflow-graph", args=[workflow.pk])
    fixed = admin_client.post(url, form_data(workflow, ask={"edges": '{"next": "done"}'}))
    assert fixed.status_code == 200
    svg = parse_svg(fixed.content.decode(), "draft-graph-svg")
    assert not any("problem" in classes(node) for node in nodes(svg).values())
    assert "draft-graph-clean" in fixed.content.decode()
    assert Step.objects.get(workflow=workflow, key="ask").edges == {"next": "nowhere"}
    broken = admin_client.post(url, form_data(workflow, ask={"config": "{not json"}))
    ask = nodes(parse_svg(broken.content.decode(), "draft-graph-svg"))["ask"]
    assert "problem" in classes(ask) and "config" in ask.find(f"{SVG}title").text


def test_a_field_the_form_refuses_is_a_problem_of_its_step_and_nothing_more(
    make_workflow, admin_client
):
    workflow = draft(make_workflow)
    url = reverse("admin:runs-workflow-graph", args=[workflow.pk])
    data = form_data(workflow, ask={"edges": '{"next": "done"}', "timeout_s": "soon"})
    page = admin_client.post(url, data, HTTP_HX_REQUEST="true")
    assert page.status_code == 200
    ask = nodes(parse_svg(page.content.decode(), "draft-graph-svg"))["ask"]
    assert ask.find(f"{SVG}title").text.splitlines()[-1] == "step 'ask': timeout_s: Enter a number."
    assert page.content.decode().count("<li>") == 1


def test_only_people_who_may_change_the_workflow_post_its_form(make_workflow, client_for):
    workflow = draft(make_workflow)
    url = reverse("admin:runs-workflow-graph", args=[workflow.pk])
    viewer = client_for("viewer")
    assert viewer.get(url).status_code == 200
    page = viewer.get(reverse("admin:runs_workflow_change", args=[workflow.pk])).content.decode()
    assert 'id="draft-graph-svg"' in page and "hx-post" not in page
    assert viewer.post(url, form_data(workflow)).status_code == 403


# --- a run's path --------------------------------------------------------------------


def branching(make_workflow):
    return make_workflow(
        [
            {"key": "start", "kind": "tool", "config": {"tool": "echo", "args": {"value": 1}},
             "edges": {"next": "route"}},
            {"key": "route", "kind": "branch",
             "config": {"rules": [{"when": {"path": "input.left", "op": "==", "value": True},
                                   "edge": "left"}], "default": "right"},
             "edges": {"left": "left", "right": "right"}},
            {"key": "left", "kind": "tool", "config": {"tool": "echo", "args": {"value": 2}},
             "edges": {"next": "done"}},
            {"key": "right", "kind": "tool", "config": {"tool": "echo", "args": {"value": 3}},
             "edges": {"next": "done"}},
            {"key": "done", **END},
        ]
    )  # fmt: skip


def test_the_run_page_highlights_exactly_the_steps_and_edges_the_run_took(
    make_workflow, client_for
):
    version = branching(make_workflow)
    run = drive(engine.start_run(workflow=version.workflow, input={"left": True}).run.pk)
    assert run.status == "succeeded"
    page = client_for("viewer").get(reverse("console-run-detail", args=[run.pk]))
    html = page.content.decode()
    svg = parse_svg(html, "run-graph")
    assert svg.get("role") == "img" and svg.find(f"{SVG}desc") is not None
    visited = {key for key, node in nodes(svg).items() if "visited" in classes(node)}
    assert visited == {"start", "route", "left", "done"}
    taken = {g.get("data-edge") for g in svg.iter(f"{SVG}g") if {"edge", "taken"} <= classes(g)}
    assert taken == {"start:next", "route:left", "left:next"}
    stats = nodes(svg)["left"].find(f"{SVG}text[@class='node-stats']").text
    assert stats.startswith("$0.0000 · ")
    assert 'id="run-path"' in html and html.count('<tr><td class="num">') >= 4


def test_the_polled_timeline_carries_the_graph_and_the_time_axis(make_workflow, client_for):
    version = branching(make_workflow)
    run = engine.start_run(workflow=version.workflow, input={}).run
    partial = client_for("viewer").get(
        reverse("console-run-detail", args=[run.pk]), HTTP_HX_REQUEST="true"
    )
    html = partial.content.decode()
    assert "<html" not in html
    assert "visited" not in classes(nodes(parse_svg(html, "run-graph"))["start"])
    assert "current" in classes(nodes(parse_svg(html, "run-graph"))["start"])
    assert parse_svg(html, "time-axis") is not None


def test_a_failed_run_marks_its_failed_step(make_workflow, client_for):
    version = make_workflow(
        [
            {"key": "call", "kind": "tool",
             "config": {"tool": "test.fail", "args": {"retryable": False}},
             "edges": {"next": "done"}},
            {"key": "done", **END},
        ]
    )  # fmt: skip
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    page = client_for("viewer").get(reverse("console-run-detail", args=[run.pk]))
    marked = nodes(parse_svg(page.content.decode(), "run-graph"))
    assert "failed" in classes(marked["call"]) and "visited" not in classes(marked["done"])


def test_a_step_left_by_its_visit_bound_shows_its_exhausted_edge_taken(make_workflow, client_for):
    version = make_workflow(
        [
            {"key": "ask", "kind": "tool", "config": {"tool": "echo", "args": {"value": 1}},
             "edges": {"next": "check", "exhausted": "done"}, "max_visits": 2},
            {"key": "check", "kind": "branch",
             "config": {"rules": [{"when": {"path": "input.stop", "op": "exists"}, "edge": "stop"}],
                        "default": "again"},
             "edges": {"again": "ask", "stop": "done"}, "max_visits": 3},
            {"key": "done", **END},
        ]
    )  # fmt: skip
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "succeeded"
    svg = parse_svg(
        client_for("viewer").get(reverse("console-run-detail", args=[run.pk])).content.decode(),
        "run-graph",
    )
    taken = {g.get("data-edge") for g in svg.iter(f"{SVG}g") if {"edge", "taken"} <= classes(g)}
    assert taken == {"ask:next", "check:again", "ask:exhausted"}
    assert nodes(svg)["ask"].find(f"{SVG}text[@class='node-stats']").text.startswith("×2 · ")


# --- versions and their diff --------------------------------------------------------


def test_the_diff_lists_a_changed_prompt_and_an_added_step(make_workflow, client_for):
    first = make_workflow([{"key": "ask", **llm("Hello {{ input.name }}\nBe brief.", next="done")},
                           {"key": "done", **END}])  # fmt: skip
    workflow = first.workflow
    Step.objects.filter(workflow=workflow, key="ask").update(
        config={**llm("Hello {{ input.name }}\nBe kind.")["config"]}, edges={"next": "log"}
    )
    Step.objects.create(
        workflow=workflow, key="log", kind="tool", position=1,
        config={"tool": "echo", "args": {"value": 1}}, edges={"next": "done"},
        max_attempts=3, backoff_base_s=0.01, backoff_cap_s=0.05, timeout_s=10, max_visits=1,
    )  # fmt: skip
    engine.publish_workflow(workflow=workflow)
    url = reverse("console-version-diff", args=[workflow.slug])
    page = client_for("viewer").get(url, {"a": 1, "b": 2})
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-step="log" data-status="added"' in html
    assert 'data-step="ask" data-status="changed"' in html
    assert '<span class="del">-Be brief.</span>' in html
    assert '<span class="add">+Be kind.</span>' in html
    assert 'data-field="edge next"' in html
    assert 'data-step="done"' not in html  # unchanged steps are not listed


def test_each_version_has_a_page_with_its_graph(make_workflow, client_for):
    version = branching(make_workflow)
    slug = version.workflow.slug
    page = client_for("viewer").get(reverse("console-version-detail", args=[slug, 1]))
    assert set(nodes(parse_svg(page.content.decode(), "workflow-graph"))) == {
        "start", "route", "left", "right", "done"
    }  # fmt: skip
    listing = client_for("manager").get(reverse("console-version-list", args=[slug]))
    assert listing.status_code == 200 and "v1" in listing.content.decode()
    assert (
        client_for("reviewer").get(reverse("console-version-list", args=[slug])).status_code == 403
    )
    bad = client_for("viewer").get(reverse("console-version-diff", args=[slug]), {"a": 1, "b": 9})
    assert bad.status_code == 400


def test_the_version_list_takes_the_same_queries_for_one_version_as_for_five(
    make_workflow, client_for, django_assert_num_queries
):
    client = client_for("viewer")
    few = branching(make_workflow).workflow
    many = branching(make_workflow).workflow
    for number in range(2, 6):
        Step.objects.filter(workflow=many, key="start").update(
            config={"tool": "echo", "args": {"value": number}}
        )
        engine.publish_workflow(workflow=many)
    client.get(reverse("console-version-list", args=[few.slug]))
    with django_assert_num_queries(7) as first:
        client.get(reverse("console-version-list", args=[few.slug]))
    with django_assert_num_queries(len(first)):
        page = client.get(reverse("console-version-list", args=[many.slug]))
    assert page.content.decode().count("changes from v") == 4


def test_the_version_admin_page_shows_its_graph(make_workflow, admin_client):
    version = branching(make_workflow)
    page = admin_client.get(reverse("admin:runs_workflowversion_change", args=[version.pk]))
    html = page.content.decode()
    assert len(nodes(parse_svg(html, f"version-graph-{version.pk}"))) == 5
    assert html.index(f"version-graph-{version.pk}") < html.index("&quot;entry&quot;")


# --- the time axis ---------------------------------------------------------------------


def test_the_time_axis_draws_attempts_backoffs_and_waits_to_scale():
    t0 = timezone.now()

    def at(seconds: float):
        return t0 + timedelta(seconds=seconds)

    attempts = [
        Attempt(1, "fetch", 1, "failed", at(0), at(1), retry_delay_s=2),
        Attempt(1, "fetch", 2, "succeeded", at(4), at(7)),
        Attempt(2, "review", 1, "succeeded", at(20), at(20.5)),
    ]
    axis = time_axis(
        created_at=t0,
        until=at(30),
        attempts=attempts,
        approvals=[Approval(2, at(8), at(20))],
    )
    assert axis.span_ms == 30_000
    fetch, review = axis.rows
    kinds = [(s.kind, s.start_ms, s.end_ms) for s in fetch.segments]
    assert kinds == [
        ("attempt", 0, 1000),
        ("backoff", 1000, 3000),
        ("wait", 3000, 4000),
        ("attempt", 4000, 7000),
    ]
    assert [(s.kind, s.start_ms, s.end_ms) for s in review.segments] == [
        ("approval", 8000, 20000),
        ("wait", 7000, 8000),
        ("attempt", 20000, 20500),
    ]
    segments = fetch.segments + review.segments
    for segment in segments:  # every bar is to scale on one shared axis
        assert segment.width == pytest.approx((segment.end_ms - segment.start_ms) * axis.scale)
        assert segment.x == pytest.approx(LEFT + segment.start_ms * axis.scale)
    assert fetch.segments[3].width == pytest.approx(3 * fetch.segments[0].width)
    assert [t.label for t in axis.ticks] == [
        "0",
        "5.0 s",
        "10.0 s",
        "15.0 s",
        "20.0 s",
        "25.0 s",
        "30.0 s",
    ]


def test_the_wait_in_progress_is_drawn_by_what_the_run_waits_for():
    t0 = timezone.now()
    axis = time_axis(
        created_at=t0,
        until=t0 + timedelta(minutes=10),
        attempts=[Attempt(1, "ask", 1, "succeeded", t0, t0 + timedelta(minutes=1))],
        current=Current(2, "enrich", "waiting", "breaker:vendor:enrichco"),
    )
    now = axis.rows[-1].segments[-1]
    assert (now.kind, now.open, now.start_ms, now.end_ms) == ("breaker", True, 60_000, 600_000)
    assert axis.ticks[1].label == "2.0 min"


def test_the_run_page_draws_the_time_axis(make_workflow, client_for):
    version = branching(make_workflow)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    html = client_for("viewer").get(reverse("console-run-detail", args=[run.pk])).content.decode()
    axis = parse_svg(html, "time-axis")
    rows = [g.get("data-seq") for g in axis.iter(f"{SVG}g") if g.get("class") == "axis-row"]
    assert rows == ["1", "2", "3", "4"]
    ticks = [t.text for g in axis.iter(f"{SVG}g") if g.get("class") == "tick" for t in g]
    ticks = [text for text in ticks if text]
    assert ticks and all(re.fullmatch(r"0|\d+(\.\d)? (ms|s|min|h|d)", text) for text in ticks)
