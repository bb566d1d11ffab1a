"""An operator in a real browser: publish the draft as a 10 % canary, read
live against candidate on the dashboard and the rollout page, promote,
then roll back."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from runs import engine
from runs.engine.rollout import canary_bucket
from runs.models import Rollout, Run
from tests.browser.conftest import DOCS
from tests.conftest import chain, drive

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


def test_an_operator_publishes_a_canary_compares_promotes_and_rolls_back(
    live_server, page, make_workflow
):
    user = User.objects.create_user(username="olga", password="correct horse 42")
    user.groups.add(Group.objects.get(name="operator"))
    v1 = make_workflow(
        chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END), slug="lead-intake"
    )
    workflow = v1.workflow
    for index in range(12):
        drive(engine.start_run(workflow=workflow, input={}, idempotency_key=f"old-{index}").run.pk)
    workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})

    page.goto(f"{live_server.url}/accounts/login/?next=/console/rollouts/lead-intake/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    expect(page.locator("#live-version")).to_have_text("v1")
    page.fill("#publish-canary input[name=share_pct]", "10")
    page.fill("#publish-canary input[name=reason]", "shorter prompt")
    page.click("#publish-canary button[type=submit]")
    expect(page.locator("#canary h2")).to_have_text("Canary: v2 on 10 % of new runs")

    # New runs: keys whose draw lands on the candidate, and others.
    active = Rollout.objects.get()
    keys = [f"new-{i}" for i in range(60)]
    to_candidate = [k for k in keys if canary_bucket(active.pk, k) < 10][:3]
    to_live = [k for k in keys if canary_bucket(active.pk, k) >= 10][:9]
    for key in to_candidate + to_live:
        drive(engine.start_run(workflow=workflow, input={}, idempotency_key=key).run.pk)
    # What the runs paid (echo is free): the candidate's prompt is shorter.
    Run.objects.filter(version__number=1).update(cost_usd=Decimal("0.0310"))
    Run.objects.filter(version__number=2).update(cost_usd=Decimal("0.0220"))

    page.goto(f"{live_server.url}/console/dashboard/")
    canaries = page.locator("#dashboard-canaries")  # loaded by htmx
    expect(canaries).to_contain_text("live v1 against candidate v2")
    expect(canaries.locator("tr.side-candidate td").first).to_have_text(str(len(to_candidate)))

    page.goto(f"{live_server.url}/console/rollouts/lead-intake/")
    expect(page.locator("#canary tr.side-live td").first).to_have_text(str(len(to_live)))
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "canary.png"), full_page=True)

    page.fill("#promote-reason", "same success, cheaper")
    page.click("#promote")
    expect(page.locator("#live-version")).to_have_text("v2")
    assert engine.start_run(workflow=workflow, input={}).run.version.number == 2

    page.fill("#rollback-reason", "refund drafts too terse")
    page.click("#rollback")
    expect(page.locator("#live-version")).to_have_text("v1")
    expect(page.locator("#rollout-history")).to_contain_text("refund drafts too terse")
    assert engine.start_run(workflow=workflow, input={}).run.version.number == 1
