"""An operator fixes a draft by its graph: the step Publish would refuse is
outlined in red; editing it redraws the graph from the form; once saved and
published the graph is clean."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from runs.models import WorkflowVersion
from tests.browser.conftest import DOCS

pytestmark = pytest.mark.django_db(transaction=True)

SCREENSHOT = DOCS / "workflow-graph.png"

STEPS = [
    {
        "key": "classify",
        "kind": "llm",
        "config": {
            "provider": "scripted",
            "prompt": "Classify {{ input.message }}",
            "output_schema": {"type": "object"},
            "scripted": {"reply": {"urgent": True}},
        },
        "edges": {"next": "route", "escape": "manual"},
    },
    {
        "key": "route",
        "kind": "branch",
        "config": {
            "rules": [{"when": {"path": "steps.classify.urgent", "op": "==", "value": True},
                       "edge": "urgent"}],
            "default": "calm",
        },
        "edges": {"urgent": "review", "calm": "done"},
    },
    {
        "key": "review",
        "kind": "approval",
        "config": {"draft": "{{ input.message }}"},
        "edges": {"approved": "send", "rejected": "manual"},
    },
    {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "echo", "args": {"value": "{{ input.message }}"}},
        "edges": {"next": "finish"},  # a typo: no step is called finish
    },
    {"key": "manual", "kind": "end", "config": {"outcome": "manual"}},
    {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
]  # fmt: skip


def test_an_operator_fixes_the_marked_step_publishes_and_sees_a_clean_graph(
    live_server, page, make_workflow
):
    user = User.objects.create_user(username="olga", password="correct horse 42", is_staff=True)
    user.groups.add(Group.objects.get(name="operator"))
    workflow = make_workflow(STEPS, publish=False, slug="triage")
    violations: list[str] = []
    page.on(
        "console",
        lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
    )

    page.goto(f"{live_server.url}/admin/login/?next=/admin/runs/workflow/{workflow.pk}/change/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "correct horse 42")
    page.click("input[type=submit]")

    marked = page.locator("#draft-graph-svg g.node.problem")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("data-step", "send")
    expect(page.locator("#draft-graph-svg g.node.missing")).to_have_attribute("data-step", "finish")
    expect(page.locator("#draft-graph-problems")).to_contain_text("edge 'next' leads to 'finish'")
    page.locator("#workflow-graph-module").screenshot(path=str(_screenshot_path()))

    # Editing the step's edges redraws the graph from the form, before saving.
    send_row = page.locator("input[name$='-key'][value='send']").evaluate(
        "input => input.name.replace(/-key$/, '')"
    )
    page.fill(f"textarea[name='{send_row}-edges']", '{"next": "done"}')
    page.locator(f"textarea[name='{send_row}-edges']").dispatch_event("change")
    expect(page.locator("#draft-graph-clean")).to_be_visible()
    expect(page.locator("#draft-graph-svg g.node.problem")).to_have_count(0)
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was changed successfully")

    page.goto(f"{live_server.url}/admin/runs/workflow/")
    page.check(f"input[name=_selected_action][value='{workflow.pk}']")
    page.select_option("select[name=action]", "publish")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("Published triage v1")
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1

    page.goto(f"{live_server.url}/admin/runs/workflow/{workflow.pk}/change/")
    expect(page.locator("#draft-graph-clean")).to_be_visible()
    expect(page.locator("#draft-graph-svg g.node.problem")).to_have_count(0)
    expect(page.locator("#draft-graph-svg g.edge-escape")).to_have_count(1)
    expect(page.locator("#workflow-graph-module a", has_text="v1")).to_be_visible()
    assert violations == []


def _screenshot_path() -> Path:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    return SCREENSHOT
