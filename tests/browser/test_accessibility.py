"""Every console page, and the admin's workflow page, pass axe-core with no
serious or critical violation (contrast, names, labels, landmarks…).

axe-core is bundled by axe-playwright-python (no CDN, no download). The
context bypasses the page's Content-Security-Policy only so that axe's own
script can be injected; the pages are otherwise as served.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import User
from django.utils import timezone

from approvals.models import ApprovalRequest, SampleItem, SampleReview
from policies.models import Breaker
from runs.engine.switches import set_switch
from runs.models import Run
from runs.views_timesplit import local_bound
from tests.conftest import waiting_for_review
from tests.console import conftest as console
from tests.console.runs_fixtures import add_run

review_workflow = console.review_workflow
pending_approval = console.pending_approval
pending_tool_call = console.pending_tool_call
pytestmark = [pytest.mark.django_db(transaction=True)]

SEVERE = ("serious", "critical")


@pytest.fixture
def browser_context_args(browser_context_args):
    return {**browser_context_args, "bypass_csp": True}


def severe(results) -> list[str]:
    """The serious and critical violations, one line per failing element."""
    found = []
    for violation in results.response["violations"]:
        if violation["impact"] not in SEVERE:
            continue
        for node in violation["nodes"]:
            found.append(
                f"{violation['impact']} {violation['id']}: {violation['help']}"
                f" at {' '.join(node['target'])}: {node['html'][:160]}"
            )
    return found


def console_pages(make_workflow, pending_approval, pending_tool_call) -> dict[str, str]:
    """One of every console page, with something on it."""
    review = pending_approval(sla_s=600, escalate_to="manager")
    tool_call = pending_tool_call
    run_id = waiting_for_review(make_workflow)
    version = Run.objects.get(pk=run_id).version
    now = timezone.now()
    for day in range(3):
        add_run(
            version, success=True, cost="0.02", created_at=now - timedelta(days=day), latency_ms=900
        )
        add_run(
            version,
            status="failed",
            dead=True,
            latency_ms=10,
            created_at=now - timedelta(days=day),
            current_step="review",
            error="review: it broke",
            steps=[{"step_key": "review", "status": "failed", "error_type": "timeout"}],
        )
    sample = SampleReview.objects.create(workflow=version.workflow, week="2026-W48", seed="s")
    SampleItem.objects.create(review=sample, run_id=run_id, stratum="done")
    Breaker.objects.create(key="vendor:enrichco")
    since = local_bound(now - timedelta(days=7))
    # A kill switch engaged: every page carries its banner.
    set_switch(scope="tool", target="test.send", engaged=True, reason="vendor incident", by="ada")
    return {
        "home": "/console/",
        "dashboard": "/console/dashboard/",
        "runs list": "/console/runs/",
        "runs list, drilled down": f"/console/runs/?workflow={version.workflow.slug}"
        f"&version={version.pk}&approvals=decided&created_from={since}",
        "run detail": f"/console/runs/{run_id}/",
        "dead letters": "/console/dead-letters/",
        "review queue": "/console/review/",
        "review focus": "/console/review/focus/",
        "review detail": f"/console/review/{review.pk}/",
        "tool-call review": f"/console/review/{tool_call.pk}/",
        "bulk decisions": f"/console/review/bulk/?shape={_shape(tool_call)}",
        "sample list": "/console/review/sample/",
        "sample detail": f"/console/review/sample/{sample.pk}/",
        "breakers": "/console/breakers/",
        "admin workflow": f"/admin/runs/workflow/{version.workflow_id}/change/",
    }


def _shape(request: ApprovalRequest) -> str:
    from approvals.views_bulk import shape_of

    return shape_of(request.draft).replace("(", "%28").replace(")", "%29")


def test_every_console_page_has_no_serious_or_critical_violation(
    live_server, page, make_workflow, pending_approval, pending_tool_call
):
    User.objects.create_superuser("ada", "ada@example.com", "correct horse 42")
    pages = console_pages(make_workflow, pending_approval, pending_tool_call)
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_load_state()
    login = severe(Axe().run(page))
    failures = {"login": login} if login else {}
    for name, path in pages.items():
        response = page.goto(f"{live_server.url}{path}")
        assert response is not None and response.ok, f"{name}: {path} answered {response}"
        page.wait_for_load_state()
        results = Axe().run(page)
        assert results.response["testEngine"]["name"] == "axe-core", name
        found = severe(results)
        if found:
            failures[name] = found
    if failures:
        report = "\n".join(
            f"{name} ({pages.get(name, '/accounts/login/')}):\n  " + "\n  ".join(lines)
            for name, lines in failures.items()
        )
        print(report)
        pytest.fail(f"serious or critical accessibility violations:\n{report}")
