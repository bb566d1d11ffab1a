"""A reviewer in a real browser: log in, edit and approve one draft, reject
another with a reason; the runs go on with what the reviewer decided."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from approvals.models import ApprovalRequest
from runs.models import StepRun
from tests.browser.conftest import ARTIFACTS
from tests.conftest import drive
from tests.console import conftest as console
from tests.console.conftest import DRAFT_TEXT

# The console's fixtures, shared with this directory.
review_workflow = console.review_workflow
pending_approval = console.pending_approval
pytestmark = [pytest.mark.django_db(transaction=True)]


def test_a_reviewer_edits_approves_and_rejects_in_the_queue(
    live_server, page, screenshot, review_workflow, pending_approval
):
    user = User.objects.create_user(username="rhea", password="correct horse 42")
    user.groups.add(Group.objects.get(name="reviewer"))
    version = review_workflow(sla_s=3600, escalate_to="manager")
    first = pending_approval(version=version)
    second = pending_approval(version=version)

    page.goto(f"{live_server.url}/console/review/")  # sent to log in first
    page.wait_for_selector("input[name=username]")
    assert page.url.startswith(f"{live_server.url}/accounts/login/")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.wait_for_selector("#review-queue")
    assert page.locator("article.review-item").count() == 2
    assert "2 pending" in page.inner_text("#review-queue")
    page.locator(f"#approval-{first.pk} details.context summary").click()
    assert "claude-haiku-4-5" in page.inner_text(f"#approval-{first.pk} details.context")
    assert screenshot("console-review-queue").stat().st_size > 10_000

    # Edit the first draft, then approve it: htmx swaps the item in place.
    item = page.locator(f"#approval-{first.pk}")
    item.locator("details.edit summary").click()
    edited = DRAFT_TEXT.replace("Best, Sam", "Warm regards, Sam")
    item.locator("textarea[name=draft]").fill(edited)
    item.locator("button[value=edit]").click()
    page.wait_for_selector(f"#approval-{first.pk}.decided")
    assert "Edited and approved: Email to Dana" in page.inner_text(f"#approval-{first.pk}")
    assert page.url == f"{live_server.url}/console/review/"  # no page load

    first.refresh_from_db()
    assert (first.status, first.decided_by_label) == ("approved", "rhea")
    assert "+Warm regards, Sam" in first.edit_diff
    run = drive(first.run_id)
    assert (run.status, run.outcome) == ("succeeded", "sent")
    assert StepRun.objects.get(run=run, step_key="sent").output == edited

    # Rejecting needs a reason: without one the item says so and stays.
    item = page.locator(f"#approval-{second.pk}")
    item.locator("button[value=reject]").click()
    page.wait_for_selector(f"#approval-{second.pk} .error")
    assert "the reason is required" in page.inner_text(f"#approval-{second.pk}")
    assert ApprovalRequest.objects.get(pk=second.pk).status == "pending"
    page.locator(f"#approval-{second.pk} form.decide textarea[name=reason]").fill("Too pushy")
    page.locator(f"#approval-{second.pk} button[value=reject]").click()
    page.wait_for_selector(f"#approval-{second.pk}.decided")
    assert "Rejected: Email to Dana" in page.inner_text(f"#approval-{second.pk}")

    second.refresh_from_db()
    assert (second.status, second.decision_reason) == ("rejected", "Too pushy")
    run = drive(second.run_id)
    assert (run.outcome, run.success) == ("dropped", False)

    page.goto(f"{live_server.url}/console/review/")
    assert "Nothing is waiting for review." in page.inner_text("#review-queue")


def test_an_email_draft_reads_as_an_email_and_nothing_scrolls_sideways(
    live_server, page, screenshot, make_workflow
):
    """At 1366 px, with a long unbroken link in the body and a wide context,
    the page fits its width; the reviewer edits the subject field, not JSON."""
    from runs import engine

    user = User.objects.create_user(username="rhea", password="correct horse 42")
    user.groups.add(Group.objects.get(name="reviewer"))
    long_link = "https://acme.example/" + "x" * 300
    draft = {"to": "dana@acme.example", "subject": "Hi", "body": f"Hello Dana,\nsee {long_link}\n"}
    version = make_workflow(
        [
            {"key": "note", "kind": "tool", "config": {"tool": "echo", "args": {"v": "y" * 400}},
             "edges": {"next": "review"}},
            {"key": "review", "kind": "approval", "config": {"title": "Email to Dana", "draft": draft},
             "edges": {"approved": "done", "rejected": "done"}},
            {"key": "done", "kind": "end", "config": {"output": "{{ steps.review.draft }}"}},
        ]
    )  # fmt: skip
    run = engine.start_run(workflow=version.workflow, input={"note": "z" * 500}).run
    drive(run.pk)
    approval = ApprovalRequest.objects.get(run=run)

    page.set_viewport_size({"width": 1366, "height": 900})
    page.goto(f"{live_server.url}/console/review/")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    item = page.locator(f"#approval-{approval.pk}")
    item.wait_for()
    item.locator("details.context summary").click()
    assert item.locator(".draft.email dt").first.inner_text() == "To"
    assert "Hello Dana," in item.locator(".draft.email .body").inner_text()
    assert item.locator(".draft.email .body a").count() == 0  # links shown, not followed
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366
    screenshot("console-review-email")

    item.locator("details.edit summary").click()
    item.locator("input[name='field.subject']").fill("Hello")
    item.locator("button[value=edit]").click()
    page.wait_for_selector(f"#approval-{approval.pk}.decided")
    approval.refresh_from_db()
    assert approval.edited_draft == {**draft, "subject": "Hello"}
    assert approval.edit_diff == "@@ subject\n-Hi\n+Hello\n"


def test_a_reviewer_clears_twenty_items_by_keyboard_only(
    live_server, page, screenshot, review_workflow, pending_approval
):
    """Approve with `a`, reject with `r` then a reason code's number, edit
    with `e` and approve the edit with Ctrl+Enter: no mouse at all."""
    user = User.objects.create_user(username="rhea", password="correct horse 42")
    user.groups.add(Group.objects.get(name="reviewer"))
    version = review_workflow()
    items = [pending_approval(version=version) for _ in range(20)]

    page.goto(f"{live_server.url}/console/review/focus/")
    page.fill("input[name=username]", "rhea")
    page.fill("input[name=password]", "correct horse 42")
    page.keyboard.press("Enter")
    page.wait_for_selector(f"#approval-{items[0].pk}")
    screenshot("console-review-flow")

    def item_of(approval):
        return page.locator(f"#approval-{approval.pk}")

    busy = ".htmx-request, .htmx-swapping, .htmx-settling"
    for index, approval in enumerate(items):
        page.wait_for_selector(f"#approval-{approval.pk}")
        page.wait_for_selector(busy, state="detached")  # htmx has finished swapping it in
        if index % 5 == 3:  # reject: r, then the second reason code
            page.keyboard.press("r")
            expect(item_of(approval).locator("input[name=code]").first).to_be_focused()
            page.keyboard.press("2")
        elif index == 10:  # edit, then approve the edit
            page.keyboard.press("e")
            expect(item_of(approval).locator("textarea[name=draft]")).to_be_focused()
            page.keyboard.press("Control+End")
            page.keyboard.type("P.S. See you soon.\n")
            page.keyboard.press("Control+Enter")
        else:
            page.keyboard.press("a")
        following = items[index + 1].pk if index + 1 < len(items) else None
        page.wait_for_selector(f"#approval-{following}" if following else "#review-done")
    decided = {a.pk: a for a in ApprovalRequest.objects.filter(pk__in=[a.pk for a in items])}
    assert all(a.status != "pending" for a in decided.values())
    rejected = [a for a in decided.values() if a.status == "rejected"]
    assert len(rejected) == 4 and {a.decision_code for a in rejected} == {"off_tone"}
    edited = decided[items[10].pk]
    assert "+P.S. See you soon." in edited.edit_diff
    assert all(a.decided_by_label == "rhea" for a in decided.values())


def _log_in(page, url: str, username: str) -> None:
    page.goto(url)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", "correct horse 42")
    page.keyboard.press("Enter")


def test_two_reviewers_cannot_decide_the_same_item(
    live_server, browser, review_workflow, pending_approval
):
    """Each reviewer's flow claims a different item; the other's item shows
    who has it, and a decision on it from the detail page is refused and
    says so; only the holder's decision is recorded."""
    for name in ("rhea", "sol"):
        user = User.objects.create_user(username=name, password="correct horse 42")
        user.groups.add(Group.objects.get(name="reviewer"))
    version = review_workflow()
    first, second = pending_approval(version=version), pending_approval(version=version)
    rhea = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()
    sol = browser.new_context(viewport={"width": 1366, "height": 900}).new_page()

    _log_in(rhea, f"{live_server.url}/console/review/focus/", "rhea")
    rhea.wait_for_selector(f"#approval-{first.pk}")
    _log_in(sol, f"{live_server.url}/console/review/focus/", "sol")
    sol.wait_for_selector(f"#approval-{second.pk}")  # not rhea's: it is claimed
    expect(sol.locator("#review-left")).to_contain_text("1 open by other reviewers")

    sol.goto(f"{live_server.url}/console/review/{first.pk}/")
    expect(sol.locator(f"#approval-{first.pk} .status.claimed")).to_contain_text("open by rhea")
    sol.locator(f"#approval-{first.pk} button[value=approve]").click()
    expect(sol.locator(f"#approval-{first.pk} [role=alert]")).to_contain_text(
        "your decision was not recorded"
    )
    sol.screenshot(path=str(ARTIFACTS / "console-review-claimed.png"), full_page=True)
    first.refresh_from_db()
    assert first.status == "pending"

    rhea.bring_to_front()
    rhea.keyboard.press("a")
    rhea.wait_for_selector("#review-done")
    first.refresh_from_db()
    assert (first.status, first.decided_by_label) == ("approved", "rhea")

    sol.reload()
    expect(sol.locator(f"#approval-{first.pk} .decision")).to_contain_text("Approved by rhea")
    rhea.context.close()
    sol.context.close()
