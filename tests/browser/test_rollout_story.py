"""The rollout story in one browser session: a prompt change that flips
three known cases is refused at publish, listing them; the fix passes the
gate and goes out as a 10 % canary; the comparison shows; promote; roll
back; the baseline is live again."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from playwright.sync_api import expect

from evals.models import EvalCase, EvalSet, PublishGate
from runs import engine
from runs.engine.rollout import canary_bucket
from runs.models import Rollout, Run, Step, Workflow
from tests.browser.conftest import DOCS
from tests.conftest import drive
from tests.evals.conftest import outreach_steps, set_subject

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

FLIPPED = ("Acme", "Bareco", "Cobalt")


def greeting_cases(workflow: Workflow) -> EvalSet:
    """Eight cases that must be sent; three also expect the subject
    `Hello <company>` (Acme's is critical)."""
    eval_set = EvalSet.objects.create(workflow=workflow, name="greetings")
    for company in (*FLIPPED, "Delta", "Echo", "Fjord", "Gale", "Halo"):
        expectations = [{"check": "outcome", "equals": "sent"}]
        if company in FLIPPED:
            expectations.insert(
                0, {"check": "draft", "step": "review", "equals": {"subject": f"Hello {company}"}}
            )
        EvalCase.objects.create(
            eval_set=eval_set,
            name=f"{company} greeting",
            input={"company": company},
            critical=company == "Acme",
            expectations=expectations,
        )
    return eval_set


def set_body(workflow: Workflow, body: str) -> None:
    """Edit the draft's body rules, keeping its subject (a change that
    keeps the known cases)."""
    step = Step.objects.get(workflow=workflow, key="draft")
    reply = {**step.config["scripted"]["reply"], "body": body}
    step.config = {**step.config, "scripted": {"reply": reply}}
    step.save()


def sent(workflow: Workflow, key: str) -> Run:
    """A run of the workflow, its draft approved by a reviewer, to its end."""
    run = drive(
        engine.start_run(workflow=workflow, input={"company": key}, idempotency_key=key).run.pk
    )
    approval = run.approvals.get()
    engine.decide_approval(approval_id=approval.pk, approve=True, actor_label="ana")
    return drive(run.pk)


def test_a_refused_change_then_its_fix_as_a_canary_promoted_and_rolled_back(
    live_server, page, make_workflow
):
    v1 = make_workflow(outreach_steps(), slug="outreach")
    workflow = v1.workflow
    Workflow.objects.filter(pk=workflow.pk).update(name="Outreach emails")
    PublishGate.objects.create(
        workflow=workflow, eval_set=greeting_cases(workflow), min_pass_rate=Decimal("90")
    )
    user = User.objects.create_user(username="olga", password="correct horse 42")
    user.groups.add(Group.objects.get(name="operator"))

    # The prompt change: "Hi" for "Hello". CI runs the gate on the draft.
    set_subject(workflow, "Hi {{ input.company }}")
    with pytest.raises(CommandError):
        call_command("eval_gate", "outreach", "--draft", "--inline")
    page.goto(f"{live_server.url}/accounts/login/?next=/console/rollouts/outreach/")
    page.fill("input[name=username]", "olga")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    expect(page.locator("#live-version")).to_have_text("v1")
    page.fill("#publish-canary input[name=share_pct]", "10")
    page.fill("#publish-canary input[name=reason]", "friendlier greeting")
    page.click("#publish-canary button[type=submit]")
    refused = page.locator("ul.messages li.error")
    expect(refused.first).to_be_visible()
    text = "\n".join(refused.all_inner_texts())
    assert "critical case regressed: Acme greeting" in text
    failing = [line for line in text.splitlines() if "failing case:" in line]
    assert len(failing) == 3 and all(
        any(f"{company} greeting" in line for line in failing) for company in FLIPPED
    )
    expect(page.locator("#canary")).to_have_count(0)
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "rollout-refused.png"), full_page=True)

    # The fix keeps the greeting and changes the body: it passes the gate.
    set_subject(workflow, "Hello {{ input.company }}")
    set_body(workflow, "We help {{ input.company }} answer every lead the same day.")
    call_command("eval_gate", "outreach", "--draft", "--inline")
    page.goto(f"{live_server.url}/console/rollouts/outreach/")
    page.fill("#publish-canary input[name=share_pct]", "10")
    page.fill("#publish-canary input[name=reason]", "same-day promise in the body")
    page.click("#publish-canary button[type=submit]")
    expect(page.locator("#canary h2")).to_have_text("Canary: v2 on 10 % of new runs")

    # New leads: keys whose draw lands on the candidate, and others.
    canary = Rollout.objects.get()
    keys = [f"lead-{i}" for i in range(80)]
    to_candidate = [k for k in keys if canary_bucket(canary.pk, k) < 10][:2]
    to_live = [k for k in keys if canary_bucket(canary.pk, k) >= 10][:8]
    for key in to_candidate + to_live:
        sent(workflow, key)
    page.reload()
    expect(page.locator("#canary tr.side-live td").first).to_have_text(str(len(to_live)))
    expect(page.locator("#canary tr.side-candidate td").first).to_have_text(str(len(to_candidate)))
    page.screenshot(path=str(DOCS / "rollout-canary.png"), full_page=True)

    page.fill("#promote-reason", "gate passed, same success rate")
    page.click("#promote")
    expect(page.locator("#live-version")).to_have_text("v2")
    assert engine.start_run(workflow=workflow, input={"company": "Iris"}).run.version.number == 2

    page.fill("#rollback-reason", "replies dropped after the body change")
    page.click("#rollback")
    expect(page.locator("#live-version")).to_have_text("v1")
    expect(page.locator("#rollout-history")).to_contain_text("replies dropped after the body")
    page.screenshot(path=str(DOCS / "rollout-rolled-back.png"), full_page=True)
    assert engine.start_run(workflow=workflow, input={"company": "Jade"}).run.version.number == 1
