"""An operator in a real browser: log in, publish, watch a run, retry it."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from demo.samples import LEAD_QUALIFICATION, install_workflow
from runs import engine
from runs.models import Run
from tests.conftest import drive

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_operator_logs_in_and_reads_a_run_timeline(live_server, page, screenshot):
    user = User.objects.create_user(username="olga", password="correct horse 42", is_staff=True)
    user.groups.add(Group.objects.get(name="operator"))
    install_workflow(LEAD_QUALIFICATION)
    run = drive(
        engine.start_run(
            workflow="lead-qualification",
            input={
                "company": "Acme Robotics",
                "email": "dana@acme-robotics.example",
                "employees": 420,
                "country": "US",
                "title": "VP Operations",
            },
        ).run.pk
    )
    assert run.status == "waiting"

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "correct horse 42")
    page.click("input[type=submit]")
    page.wait_for_selector("#provider-banner")
    assert "scripted" in page.inner_text("#provider-banner")

    page.goto(f"{live_server.url}/admin/runs/run/")
    page.click(f"th.field-id a[href$='/{run.pk}/change/']")
    page.wait_for_selector("#step_runs-group")
    body = page.inner_text("body")
    assert "normalize" in body and "draft" in body and "waiting" in body
    assert Run.objects.get(pk=run.pk).steps_executed == 7  # normalize … draft
    assert screenshot("admin-run-timeline").stat().st_size > 10_000
