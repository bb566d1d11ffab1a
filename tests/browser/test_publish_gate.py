"""An operator publishes a prompt change that flips three known cases: the
publish gate refuses it and lists those cases."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from playwright.sync_api import expect

from evals.models import EvalCase, EvalSet, PublishGate
from tests.browser.conftest import DOCS
from tests.evals.conftest import outreach_steps, set_subject

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_prompt_change_that_flips_three_cases_is_refused_at_publish(
    live_server, page, make_workflow
):
    version = make_workflow(outreach_steps(), slug="outreach")
    workflow = version.workflow
    eval_set = EvalSet.objects.create(workflow=workflow, name="greetings")
    for company in ("Acme", "Bareco", "Cobalt", "Delta", "Echo", "Fjord", "Gale", "Halo"):
        expectations = [{"check": "outcome", "equals": "sent"}]
        if company in ("Acme", "Bareco", "Cobalt"):
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
    PublishGate.objects.create(workflow=workflow, eval_set=eval_set, min_pass_rate=Decimal("90"))
    set_subject(workflow, "Hi {{ input.company }}")  # the prompt change
    with pytest.raises(CommandError):
        call_command("eval_gate", "outreach", "--draft", "--inline")

    User.objects.create_user(
        username="olga", password="correct horse 42", is_staff=True
    ).groups.add(Group.objects.get(name="operator"))
    page.goto(f"{live_server.url}/admin/login/?next=/admin/runs/workflow/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "correct horse 42")
    page.click("input[type=submit]")
    page.check(f"input[name=_selected_action][value='{workflow.pk}']")
    page.select_option("select[name=action]", "publish")
    page.click("button[name=index]")
    errors = page.locator("ul.messagelist li.error")
    expect(errors.first).to_be_visible()
    text = "\n".join(errors.all_inner_texts())
    assert "pass rate 62.5% is below the minimum 90.00%" in text
    assert "critical case regressed: Acme greeting" in text
    for company in ("Acme", "Bareco", "Cobalt"):
        assert f"failing case: {company} greeting" in text
    assert "Delta" not in text
    assert workflow.versions.filter(candidate=False).count() == 1
    DOCS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS / "publish-gate.png"), full_page=True)
