"""An operator's day in one story, in a real browser: a draft whose graph
marks the step Publish would refuse; the step fixed in admin; Publish on
the console's workflow page; a run started from the generated form; the
run's page lighting up the path on the graph as the run advances; and the
run found again by searching for the account."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from knowledge import services
from runs import engine
from runs.models import Run
from tests.conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)
POLL_MS = 10_000  # the run page polls every 2 s: a few polls on a busy machine

SCHEMA = {
    "type": "object",
    "required": ["domain"],
    "properties": {"domain": {"type": "string", "title": "Domain"}},
}
STEPS = [
    {
        "key": "classify",
        "kind": "llm",
        "config": {
            "provider": "scripted",
            "prompt": "Is {{ input.domain }} a good fit?",
            "output_schema": {"type": "object"},
            "scripted": {"reply": {"fit": True}},
        },
        "edges": {"next": "route", "escape": "manual"},
    },
    {
        "key": "route",
        "kind": "branch",
        "config": {
            "rules": [{"when": {"path": "steps.classify.fit", "op": "==", "value": True},
                       "edge": "fit"}],
            "default": "other",
        },
        "edges": {"fit": "review", "other": "skipped"},
    },
    {
        "key": "review",
        "kind": "approval",
        "config": {"title": "Reach out to {{ input.domain }}?", "draft": "Hello {{ input.domain }}"},
        "edges": {"approved": "send", "rejected": "manual"},
    },
    {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "echo", "args": {"value": "{{ input.domain }}"}},
        "edges": {"next": "finish"},  # a typo: no step is called finish
    },
    {"key": "manual", "kind": "end", "config": {"outcome": "manual"}},
    {"key": "skipped", "kind": "end", "config": {"outcome": "skipped"}},
    {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
]  # fmt: skip


def visited(page, step: str):
    return page.locator(f"#run-graph g.node.visited[data-step='{step}']")


def taken(page, edge: str):
    return page.locator(f"#run-graph g.edge.taken[data-edge='{edge}']")


def test_an_operator_fixes_a_draft_publishes_it_runs_it_watches_its_path_and_finds_it(
    live_server, page, make_workflow, doc_screenshot
):
    user = User.objects.create_user(username="olga", password="correct horse 42", is_staff=True)
    user.groups.add(Group.objects.get(name="operator"))
    workflow = make_workflow(STEPS, publish=False, slug="qualify-lead", input_schema=SCHEMA)
    services.upsert_entity(type="account", key="acme.com", name="Acme Inc")
    page.set_viewport_size({"width": 1366, "height": 900})

    # The draft in admin: its graph marks the step Publish would refuse.
    page.goto(f"{live_server.url}/admin/login/?next=/admin/runs/workflow/{workflow.pk}/change/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "correct horse 42")
    page.click("input[type=submit]")
    marked = page.locator("#draft-graph-svg g.node.problem")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("data-step", "send")
    expect(page.locator("#draft-graph-problems")).to_contain_text("edge 'next' leads to 'finish'")
    doc_screenshot("operator-draft-error", locator=page.locator("#workflow-graph-module"))

    # The fix: `send` leads to `done`; the graph is redrawn clean before saving.
    send_row = page.locator("input[name$='-key'][value='send']").evaluate(
        "input => input.name.replace(/-key$/, '')"
    )
    edges = page.locator(f"textarea[name='{send_row}-edges']")
    edges.fill('{"next": "done"}')
    edges.dispatch_event("change")
    expect(page.locator("#draft-graph-clean")).to_be_visible()
    page.click("input[name=_continue]")
    expect(page.locator("ul.messagelist")).to_contain_text("was changed successfully")

    # Publish from the console's workflow page.
    page.goto(f"{live_server.url}/console/workflows/qualify-lead/")
    expect(page.locator("#version-table")).to_contain_text("Not published yet.")
    page.click("#publish")
    expect(page.locator("#version-table a", has_text="v1")).to_be_visible()

    # Start a run from the form the input schema generates.
    page.wait_for_load_state()  # htmx (a deferred script) has wired the form
    page.fill("input[name=domain]", "acme.com")
    page.click("#start-run")
    page.wait_for_selector("#timeline")
    run = Run.objects.get()
    assert run.input == {"domain": "acme.com"} and run.version.number == 1
    expect(page.locator("#run-graph g.node.visited")).to_have_count(0)

    # The run advances (as a worker would) to the review: the page's
    # polling lights up the path so far and outlines the step it waits at.
    assert drive(run.pk).wait_reason == "approval"
    expect(visited(page, "classify")).to_have_count(1, timeout=POLL_MS)
    expect(visited(page, "route")).to_have_count(1)
    expect(taken(page, "classify:next")).to_have_count(1)
    expect(taken(page, "route:fit")).to_have_count(1)
    expect(page.locator("#run-graph g.node.current")).to_have_attribute("data-step", "review")
    expect(taken(page, "review:approved")).to_have_count(0)

    # A reviewer approves; the run goes on to its end, the whole path lit.
    request = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=request.pk, approve=True, actor_label="rita")
    assert drive(run.pk).status == "succeeded"
    expect(page.locator("#timeline h1 .status")).to_have_text("Succeeded", timeout=POLL_MS)
    for step in ("classify", "route", "review", "send", "done"):
        expect(visited(page, step)).to_have_count(1)
    for edge in ("classify:next", "route:fit", "review:approved", "send:next"):
        expect(taken(page, edge)).to_have_count(1)
    for step in ("manual", "skipped"):
        expect(visited(page, step)).to_have_count(0)
    expect(taken(page, "classify:escape")).to_have_count(0)
    expect(page.locator("#time-axis g.axis-row")).to_have_count(5)
    expect(page.locator("#timeline .live")).to_have_count(0)  # polling has stopped
    page.locator("#run-graph-section").scroll_into_view_if_needed()
    doc_screenshot("operator-run-path", locator=page.locator("#run-graph-section"))

    # Later: the run is found by the account it was about.
    page.click("header.top a[href='/console/search/']")
    page.wait_for_selector("#search-form")
    page.wait_for_load_state()
    page.fill("input[name=q]", "acme.com")
    page.click("#search-form button[type=submit]")
    expect(page.locator(f"#search-runs a[href='/console/runs/{run.pk}/']")).to_be_visible()
    expect(page.locator("#search-entities")).to_contain_text("account:acme.com")
