"""The README's walkthrough of the console, page by page, in a real browser:
each test checks what its page shows and leaves its picture in
docs/screenshots/ (regenerated whenever these tests run)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from knowledge import services
from knowledge.models import EventType
from runs import engine
from runs.models import Run, StepRun
from tests.conftest import drive
from tests.console import conftest as console
from tests.console.runs_fixtures import add_approval, add_run
from tests.evals.conftest import outreach_steps

review_workflow = console.review_workflow
pending_approval = console.pending_approval
pytestmark = [pytest.mark.django_db(transaction=True)]

SCREEN = {"width": 1366, "height": 860}


def log_in(page, url: str, username: str) -> None:
    page.set_viewport_size(SCREEN)
    page.goto(f"{url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_load_state()


def person(username: str, role: str) -> User:
    user = User.objects.create_user(username=username, password="correct horse 42")
    user.groups.add(Group.objects.get(name=role))
    return user


def test_a_reviewer_takes_one_item_at_a_time_and_another_sees_it_claimed(
    live_server, browser, review_workflow, pending_approval, doc_screenshot
):
    person("rhea", "reviewer")
    person("sol", "reviewer")
    version = review_workflow(sla_s=3600)
    first, second, _third = (pending_approval(version=version) for _ in range(3))
    rhea = browser.new_context(viewport=SCREEN).new_page()
    sol = browser.new_context(viewport=SCREEN).new_page()

    log_in(rhea, live_server.url, "rhea")
    rhea.goto(f"{live_server.url}/console/review/focus/")
    expect(rhea.locator(f"#approval-{first.pk}")).to_contain_text("Hello Dana,")
    doc_screenshot("review-flow", of=rhea)

    log_in(sol, live_server.url, "sol")
    sol.goto(f"{live_server.url}/console/review/focus/")
    expect(sol.locator(f"#approval-{second.pk}")).to_be_visible()  # the oldest is rhea's
    sol.goto(f"{live_server.url}/console/review/{first.pk}/")
    expect(sol.locator(f"#approval-{first.pk} .status.claimed")).to_contain_text("open by rhea")
    doc_screenshot("review-claimed", of=sol)
    rhea.context.close()
    sol.context.close()


def test_the_dashboard_puts_machine_time_beside_time_waiting_for_people(
    live_server, page, make_workflow, doc_screenshot
):
    person("otto", "operator")
    outreach = make_workflow(outreach_steps(), slug="outreach")
    intake = make_workflow(
        [{"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}],
        slug="lead-intake",
    )
    now = timezone.now()
    for index in range(12):
        created = now - timedelta(hours=2 + index * 3)
        waited_s = 240 + index * 170  # from 4 to 35 minutes
        machine_ms = 2600 + 180 * index
        run = add_run(
            outreach,
            success=index % 5 != 0,
            cost=f"0.00{2 + index % 3}",
            created_at=created,
            latency_ms=waited_s * 1000 + machine_ms,
            machine_ms=machine_ms,
            decisions=1,
            wait_ms=waited_s * 1000,
            breaches=int(index == 11),
        )
        approval = add_approval(run, seq=2, status="approved")
        ApprovalRequest.objects.filter(pk=approval.pk).update(
            created_at=created,
            decided_at=created + timedelta(seconds=waited_s),
            breached_at=created + timedelta(minutes=30) if index == 11 else None,
        )
    for _ in range(2):
        waiting = add_run(
            outreach, status="waiting", wait_reason="approval", created_at=now, machine_ms=2900
        )
        add_approval(waiting, seq=2, status="pending")
    for index in range(20):
        add_run(
            intake,
            success=True,
            cost="0.0004",
            created_at=now - timedelta(hours=index),
            latency_ms=700 + 20 * index,
            machine_ms=650 + 20 * index,
        )

    log_in(page, live_server.url, "otto")
    page.goto(f"{live_server.url}/console/dashboard/")
    split = page.locator("#time-split")
    expect(split.locator("tbody tr")).to_have_count(2)
    expect(split.locator("tbody tr", has_text="outreach")).to_contain_text("12")
    doc_screenshot("dashboard-time-split", locator=split)


def test_the_run_page_draws_the_path_on_the_graph_and_each_attempt_on_a_time_axis(
    live_server, page, make_workflow, doc_screenshot
):
    """A run whose model call timed out once (then a backoff and a retry),
    whose draft waited six minutes for a reviewer, then was sent."""
    person("otto", "operator")
    version = make_workflow(outreach_steps(), slug="outreach")
    c = timezone.now() - timedelta(minutes=20)

    def at(seconds: float):
        return c + timedelta(seconds=seconds)

    llm = {
        "step_key": "draft",
        "kind": "llm",
        "provider": "anthropic",
        "model_requested": "claude-haiku-4-5",
        "model_answered": "claude-haiku-4-5",
    }
    run = add_run(
        version,
        success=True,
        cost="0.0016",
        created_at=c,
        latency_ms=372_700,
        outcome="sent",
        current_step="done",
        seq=4,
        input={"company": "Acme"},
        llm_calls=2,
        tool_calls=1,
        steps=[
            {**llm, "seq": 1, "attempt": 1, "status": "failed", "error": "the model timed out",
             "error_type": "timeout", "retryable": True, "retry_delay_s": 8,
             "started_at": at(0.3), "finished_at": at(30.3), "duration_ms": 30_000},
            {**llm, "seq": 1, "attempt": 2, "edge": "next", "tokens_in": 812, "tokens_out": 164,
             "cost_usd": Decimal("0.0016"), "model_usd": Decimal("0.0016"),
             "started_at": at(38.4), "finished_at": at(41.2), "duration_ms": 2_800},
            {"seq": 2, "step_key": "review", "kind": "approval", "edge": "approved",
             "started_at": at(372.1), "finished_at": at(372.12), "duration_ms": 20},
            {"seq": 3, "step_key": "send", "kind": "tool", "edge": "next",
             "started_at": at(372.2), "finished_at": at(372.6), "duration_ms": 400},
            {"seq": 4, "step_key": "done", "kind": "end",
             "started_at": at(372.65), "finished_at": at(372.7), "duration_ms": 50},
        ],
    )  # fmt: skip
    approval = add_approval(run, seq=2, status="approved", decided_by_label="rhea", title="Send?")
    ApprovalRequest.objects.filter(pk=approval.pk).update(created_at=at(41.3), decided_at=at(372))
    assert StepRun.objects.filter(run=run).count() == 5

    log_in(page, live_server.url, "otto")
    page.set_viewport_size({"width": 1366, "height": 1000})
    page.goto(f"{live_server.url}/console/runs/{run.pk}/")
    graph = page.locator("#run-graph")
    for step in ("draft", "review", "send", "done"):
        expect(graph.locator(f"g.node.visited[data-step='{step}']")).to_have_count(1)
    expect(graph.locator("g.node.visited[data-step='dropped']")).to_have_count(0)
    expect(graph.locator("g.edge.taken[data-edge='review:approved']")).to_have_count(1)
    axis = page.locator("#time-axis")
    expect(axis.locator("g.axis-row")).to_have_count(4)
    expect(axis.locator("rect.seg-backoff")).to_have_count(1)
    expect(axis.locator("rect.seg-approval")).to_have_count(1)
    top = page.locator("#run-graph-section").bounding_box()
    bottom = page.locator("#time-axis-section").bounding_box()
    assert top is not None and bottom is not None
    doc_screenshot(
        "run-page",
        clip={
            "x": 0,
            "y": top["y"] - 8,
            "width": SCREEN["width"],
            "height": bottom["y"] + bottom["height"] - top["y"] + 16,
        },
    )


def test_an_entity_page_says_what_holds_now_and_where_each_fact_came_from(
    live_server, page, make_workflow, doc_screenshot
):
    person("otto", "operator")
    version = make_workflow(
        [
            {
                "key": "enrich",
                "kind": "tool",
                "config": {"tool": "echo"},
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
        ],
        slug="lead-intake",
    )
    now = timezone.now()
    runs = [
        add_run(
            version,
            success=True,
            cost=f"0.0{index + 1}2",
            created_at=now - timedelta(days=index * 4),
            latency_ms=900,
            input={"domain": "acme.com", "seats": 25 + index},
        )
        for index in range(3)
    ]
    acme = services.upsert_entity(type="account", key="acme.com", name="Acme Inc")
    services.record_event(
        entity=acme,
        type=EventType.objects.create(name="outreach.paused"),
        payload={"channel": "email"},
        reason="asked us to stop until the renewal",
        valid_until=now + timedelta(days=14),
        source_run_id=runs[0].pk,
        source_seq=1,
        source_step_key="enrich",
    )
    services.record_event(
        entity=acme,
        type=EventType.objects.create(name="account.noted"),
        payload={"note": "met at the Lisbon fair"},
        actor_label="user:rita",
        reason="first meeting",
        valid_from=now - timedelta(days=30),
        valid_until=now - timedelta(days=2),
    )

    log_in(page, live_server.url, "otto")
    page.goto(f"{live_server.url}/console/entities/{acme.pk}/")
    expect(page.locator("#entity-now")).to_contain_text("outreach.paused")
    expect(page.locator("#entity-run-count")).to_have_text("3")
    expect(page.locator("#entity-events")).to_contain_text("user:rita")
    doc_screenshot("entity")


def test_a_reviewer_decides_calls_of_one_shape_together(
    live_server, page, make_workflow, doc_screenshot
):
    person("rhea", "reviewer")
    body = "Hi {{ input.name }},\nyour trial ends on Friday. Reply to keep your seats.\nSam"
    send = {
        "key": "send",
        "kind": "tool",
        "config": {
            "tool": "email.send",
            "args": {"to": ["{{ input.email }}"], "subject": "{{ input.company }}: your trial ends Friday",
                     "body": body},
        },
        "edges": {"next": "done"},
    }  # fmt: skip
    version = make_workflow(
        [send, {"key": "done", "kind": "end", "config": {"outcome": "sent"}}],
        slug="trial-reminder",
        policy={
            "autonomy": [{"tool": "email.send", "mode": "approve"}],
            "destinations": {"email.send": ["*"]},
        },
    )
    held = []
    people = [("Dana", "Acme"), ("Ravi", "Bareco"), ("Mei", "Cobalt"), ("Jo", "Delta")]
    for name, company in people:
        email = f"{name.lower()}@{company.lower()}.example"
        start = {"name": name, "company": company, "email": email}
        run = engine.start_run(workflow=version.workflow, input=start).run
        assert drive(run.pk).wait_reason == "approval"
        held.append(ApprovalRequest.objects.get(run=run))

    log_in(page, live_server.url, "rhea")
    page.goto(f"{live_server.url}/console/review/bulk/")
    page.click("table.shapes a")
    expect(page.locator("table.bulk-calls tbody tr")).to_have_count(4)
    page.uncheck(f"#bulk-{held[3].pk}")
    doc_screenshot("bulk-review")
    page.click("button[value=approve]")
    expect(page.locator("#bulk-summary")).to_contain_text("3 approved")
    assert sorted(Run.objects.values_list("wait_reason", flat=True)) == ["", "", "", "approval"]
