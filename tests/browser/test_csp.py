"""The Content-Security-Policy in a real browser: the console (htmx
included), the admin and the API docs work under it, and the browser
reports no violation on any of their pages."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.conftest import waiting_for_review
from tests.console import conftest as console

review_workflow = console.review_workflow
pending_approval = console.pending_approval
pytestmark = [pytest.mark.django_db(transaction=True)]

# Kept per document in the page, read before every navigation.
LISTEN = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sample || ""}`);
});
"""


@pytest.fixture
def violations(page) -> list[str]:
    """Every CSP violation the browser saw, from events and its console."""
    seen: list[str] = []
    page.add_init_script(LISTEN)
    page.on(
        "console",
        lambda message: (
            seen.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return seen


def read_violations(page, seen: list[str]) -> list[str]:
    """What was seen since the last read (the console's and this page's)."""
    here = page.url.split("/", 3)[-1]
    found = [f"/{here}: {text}" for text in [*seen, *page.evaluate("window.__violations || []")]]
    seen.clear()
    return found


def test_console_admin_and_api_docs_work_under_the_policy(
    live_server, page, violations, make_workflow, review_workflow, pending_approval
):
    User.objects.create_superuser("ada", "ada@example.com", "correct horse 42")
    run_id = waiting_for_review(make_workflow)
    approval = pending_approval(version=review_workflow(sla_s=3600, escalate_to="manager"))
    found: list[str] = []

    page.goto(f"{live_server.url}/accounts/login/?next=/console/runs/")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_selector("#run-table")
    page.wait_for_load_state()
    # htmx runs: the filter swaps the table in place
    page.select_option("select[name=status]", "waiting")
    page.wait_for_function("() => location.search.includes('status=waiting')")
    found += read_violations(page, violations)

    page.goto(f"{live_server.url}/console/runs/{run_id}/")
    page.wait_for_selector("#timeline")
    found += read_violations(page, violations)

    page.goto(f"{live_server.url}/console/review/")
    page.wait_for_selector(f"#approval-{approval.pk}")
    # console.css styles what inline style attributes used to
    margin = page.eval_on_selector(".review-title", "e => getComputedStyle(e).marginTop")
    assert margin == "3.2px"
    found += read_violations(page, violations)

    for path in ("/console/dashboard/", "/console/review/sample/", "/console/dead-letters/"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state()
        found += read_violations(page, violations)

    for path in ("/admin/", "/admin/runs/run/", "/admin/policies/rubric/add/"):
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector("#content")
        found += read_violations(page, violations)
    size = page.eval_on_selector("#provider-banner", "e => getComputedStyle(e).fontSize")
    assert size == "12px"  # admin.css, loaded on every admin page

    # Swagger UI: renders, expands an operation and calls the API
    page.goto(f"{live_server.url}/api/v1/docs")
    page.wait_for_selector(".opblock")
    operation = page.locator(".opblock-get").filter(has_text="/api/v1/webhook-sources").first
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator(".execute").click()
    page.wait_for_selector(".live-responses-table .response-col_status")
    assert "401" in operation.locator(".live-responses-table").inner_text()
    found += read_violations(page, violations)

    assert found == []
