"""An operator in a real browser: log in, filter the runs list, watch a run
timeline go live to its end, read the dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from runs import engine
from tests.conftest import waiting_for_review
from tests.console.runs_fixtures import add_run

pytestmark = [pytest.mark.django_db(transaction=True)]


def test_an_operator_reads_the_runs_a_live_timeline_and_the_dashboard(
    live_server, page, screenshot, make_workflow
):
    user = User.objects.create_user(username="otto", password="correct horse 42")
    user.groups.add(Group.objects.get(name="operator"))
    run_id = waiting_for_review(make_workflow)
    version = make_workflow(
        [{"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}],
        slug="browser-figures",
    )
    now = timezone.now()
    for day in range(6):
        for index in range(day + 2):
            add_run(
                version,
                status="failed" if index == 0 else "succeeded",
                success=index != 0,
                cost=f"0.0{index + 1}",
                created_at=now - timedelta(days=day, minutes=index),
                latency_ms=800 + 150 * index,
                dead=index == 0,
                current_step="done",
            )

    page.goto(f"{live_server.url}/accounts/login/?next=/console/runs/")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_selector("#run-table")
    page.wait_for_load_state()  # htmx (a deferred script) has wired the filters
    assert page.url == f"{live_server.url}/console/runs/"
    assert page.locator("#run-table tbody tr").count() == 28

    # the filter swaps the table in place (htmx) and keeps the address
    page.select_option("select[name=status]", "waiting")
    # A function, not an expression: Playwright would eval an expression on
    # every poll, which the page's Content-Security-Policy refuses.
    page.wait_for_function("() => document.querySelectorAll('#run-table tbody tr').length === 1")
    assert "status=waiting" in page.url
    page.click(f"#run-table a[href='/console/runs/{run_id}/']")

    page.wait_for_selector("#timeline[hx-trigger='every 2s']")
    assert "for approval" in page.inner_text("#step-current")
    assert screenshot("console-run-timeline").stat().st_size > 10_000
    # the timeline polls itself: the cancellation shows up without a reload
    engine.cancel_run(run_id=run_id, reason="cancelled while watched")
    page.wait_for_selector("#timeline h1 .status.cancelled", timeout=8000)
    assert page.locator("#timeline[hx-trigger]").count() == 0  # polling stopped

    page.click("header.top a[href='/console/dashboard/']")
    page.wait_for_load_state()
    page.wait_for_selector("#dashboard-body figure.chart")
    assert page.locator("#dashboard-body svg rect:not([height='0.0'])").count() == 6
    body = page.inner_text("#dashboard-body")
    assert "browser-figures" in body and "Cost / success" in body
    page.select_option("select[name=period]", "30d")
    page.wait_for_function("() => location.search.includes('period=30d')")
    page.wait_for_selector("#dashboard-body figure.chart")
    assert page.locator("#dashboard-body figure.chart svg").count() == 3
    assert screenshot("console-dashboard").stat().st_size > 10_000
