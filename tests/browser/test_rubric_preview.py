"""A manager in a real browser: lower a threshold, preview who moves, save."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User

from policies.models import Rubric
from policies.rubrics import save_rubric
from tests.policies.test_rubrics import CRITERIA, ROUTES, record_scores

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_manager_previews_a_threshold_change_then_publishes_it(
    live_server, page, screenshot, make_workflow
):
    rubric = Rubric(name="icp", description="Inbound lead fit", criteria=CRITERIA, routes=ROUTES)
    save_rubric(rubric=rubric, by="setup")
    record_scores(rubric, make_workflow)  # totals 75 72 68 65 62 61 55 45 30 10
    user = User.objects.create_user(username="mona", password="correct horse 42", is_staff=True)
    user.groups.add(Group.objects.get(name="manager"))

    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "mona")
    page.fill("#id_password", "correct horse 42")
    page.click("input[type=submit]")
    page.wait_for_selector("#user-tools")
    page.goto(f"{live_server.url}/admin/policies/rubric/{rubric.pk}/change/")

    assert page.input_value("#id_routes-0-route") == "outreach"
    page.fill("#id_routes-0-min", "60")
    page.click("#rubric-preview-button")
    page.wait_for_selector("#rubric-preview")
    # 68, 65, 62 and 61 move from nurture to outreach; the draft is still on the page.
    assert page.inner_text("#rubric-preview-moved") == "4"
    assert page.inner_text("#rubric-preview-scanned") == "10"
    assert "nurture → outreach: 4" in page.inner_text("#rubric-preview")
    assert page.input_value("#id_routes-0-min") == "60"
    assert rubric.versions.count() == 1
    assert screenshot("admin-rubric-preview").stat().st_size > 10_000

    page.click("input[name=_save]")
    page.wait_for_selector(".messagelist")
    assert "Saved as version 2" in page.inner_text(".messagelist")
    latest = rubric.versions.order_by("-number").first()
    assert latest.number == 2
    assert latest.snapshot["routes"][0] == {"min": 60, "route": "outreach"}
