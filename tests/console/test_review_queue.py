"""The review queue in the console: what each role sees and may do, and
what a decision does to the waiting run."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.models import ApprovalRequest, ApprovalStatus
from policies.models import AuditEntry
from runs.models import Run, StepRun
from tests.conftest import drive
from tests.console.conftest import DRAFT_TEXT, ROLES

pytestmark = pytest.mark.django_db
QUEUE = "/console/review/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def decide_url(approval: ApprovalRequest) -> str:
    return reverse("console-review-decide", args=[approval.pk])


def audit_of(approval: ApprovalRequest) -> list[AuditEntry]:
    return list(
        AuditEntry.objects.filter(target_type="approvals.approvalrequest", target_id=approval.pk)
    )


# --- pages, with and without htmx -----------------------------------------------


def test_the_queue_is_a_full_page_without_htmx_and_a_partial_with_it(pending_approval, client_for):
    approval = pending_approval()
    client = client_for("reviewer")
    page = client.get(QUEUE)
    assert page.status_code == 200
    assert b"<html" in page.content and b'id="review-queue"' in page.content
    partial = client.get(QUEUE, **HTMX)
    assert partial.status_code == 200
    assert b"<html" not in partial.content
    assert partial.content.lstrip().startswith(b'<section id="review-queue">')
    assert f'id="approval-{approval.pk}"'.encode() in partial.content


def test_the_detail_page_is_a_full_page_without_htmx_and_a_partial_with_it(
    pending_approval, client_for
):
    approval = pending_approval()
    client = client_for("viewer")
    url = reverse("console-review-detail", args=[approval.pk])
    assert url == f"/console/review/{approval.pk}/"
    page = client.get(url)
    assert page.status_code == 200 and b"<html" in page.content
    partial = client.get(url, **HTMX)
    assert b"<html" not in partial.content
    assert partial.content.lstrip().startswith(f'<article id="approval-{approval.pk}"'.encode())
    assert client.get(reverse("console-review-detail", args=[999999])).status_code == 404


def test_an_item_shows_the_draft_its_context_the_reason_and_the_sla(pending_approval, client_for):
    approval = pending_approval(sla_s=3600, escalate_to="manager", timeout_s=7200)
    body = client_for("operator").get(QUEUE).content.decode()
    assert "Email to Dana" in body
    assert "thanks for your interest in Acme." in body  # the draft
    assert "&quot;name&quot;: &quot;Dana&quot;" in body  # the run input
    # The step before it: its output, model and cost.
    assert "sequence: claude-haiku-4-5" in body and "1000/200" in body
    cost = StepRun.objects.get(run=approval.run, step_key="write").cost_usd
    assert f"${cost}" in body
    assert 'class="reason-code">review_required<' in body
    assert f"Due {approval.due_at:%Y-%m-%d %H:%M} UTC" in body
    assert "escalates to manager" in body and "rejected by policy at" in body
    assert 'class="status overdue"' not in body


def test_an_overdue_item_is_marked(pending_approval, client_for):
    from django.utils import timezone

    approval = pending_approval(sla_s=60)
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        due_at=timezone.now() - timezone.timedelta(minutes=5)
    )
    body = client_for("reviewer").get(QUEUE).content.decode()
    assert '<span class="status overdue">overdue</span>' in body


def test_a_flagged_draft_names_the_output_check_that_sent_it(pending_approval, client_for):
    approval = pending_approval(reason_code="check:competitor_mention")
    body = client_for("reviewer").get(QUEUE).content.decode()
    assert "check:competitor_mention" in body and "output check competitor_mention held" in body
    assert approval.reason_code == "check:competitor_mention"


def test_a_tool_call_shows_the_policy_that_holds_it(pending_tool_call, client_for):
    body = client_for("reviewer").get(QUEUE).content.decode()
    assert "Tool call" in body and "policy_requires_approval" in body
    assert f"policy {pending_tool_call.run.policy_version}" in body
    assert "&quot;tool&quot;: &quot;test.send&quot;" in body


def test_the_queue_lists_pending_requests_oldest_first(pending_approval, client_for):
    first, second, third = (pending_approval() for _ in range(3))
    ApprovalRequest.objects.filter(pk=second.pk).update(status=ApprovalStatus.CANCELLED)
    body = client_for("reviewer").get(QUEUE).content.decode()
    assert body.index(f'id="approval-{first.pk}"') < body.index(f'id="approval-{third.pk}"')
    assert f'id="approval-{second.pk}"' not in body
    assert "2 pending" in body


def test_context_is_redacted_for_reviewers_but_not_for_operators(review_workflow, client_for):
    from runs import engine

    version = review_workflow()
    run = engine.start_run(
        workflow=version.workflow, input={"name": "Dana", "email": "dana@acme.example"}
    ).run
    drive(run.pk)
    assert "dana@acme.example" not in client_for("reviewer").get(QUEUE).content.decode()
    assert "dana@acme.example" in client_for("operator").get(QUEUE).content.decode()


def test_the_queue_page_costs_the_same_queries_for_one_item_or_many(
    pending_approval, client_for, django_assert_num_queries
):
    # session, user, permissions (user, groups), count, requests with their
    # runs, workflows, versions and policies, the steps before them, the
    # reason codes, the filters' workflows and queues (role groups), the
    # engaged kill switches (the banner).
    client = client_for("reviewer")
    version = pending_approval().run.version
    with django_assert_num_queries(11):
        assert client.get(QUEUE).status_code == 200
    for _ in range(5):
        pending_approval(version=version)
    pending_approval()  # another workflow too
    with django_assert_num_queries(11):
        page = client.get(QUEUE)
    assert page.content.decode().count('class="card review-item"') == 7


# --- who may see and decide -----------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_every_role_sees_the_queue_but_only_reviewers_get_buttons(
    role, pending_approval, client_for
):
    approval = pending_approval()
    page = client_for(role).get(QUEUE)
    assert page.status_code == 200 and b"Email to Dana" in page.content
    buttons = b'name="action" value="approve"' in page.content
    assert buttons is (role == "reviewer")
    detail = client_for(role).get(reverse("console-review-detail", args=[approval.pk]))
    assert (b'name="action" value="reject"' in detail.content) is (role == "reviewer")


@pytest.mark.parametrize("role", ["operator", "manager", "viewer", None])
def test_a_role_without_the_decide_permission_gets_403_and_nothing_changes(
    role, pending_approval, client_for
):
    approval = pending_approval()
    response = client_for(role).post(decide_url(approval), {"action": "approve"})
    assert response.status_code == 403
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING


def test_a_user_in_no_group_may_not_see_the_queue(client_for):
    assert client_for(None).get(QUEUE).status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page(pending_approval, client_for):
    approval = pending_approval()
    client = client_for("anonymous")
    for response in (client.get(QUEUE), client.post(decide_url(approval), {"action": "approve"})):
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING


def test_a_post_without_a_csrf_token_is_refused(pending_approval, client_for):
    approval = pending_approval()
    client = client_for("reviewer", csrf=True)
    assert client.post(decide_url(approval), {"action": "approve"}).status_code == 403
    assert client.post(decide_url(approval), {"action": "approve"}, **HTMX).status_code == 403
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING
    # With the token the page carries, the same post goes through.
    token = str(client.get(QUEUE).context["csrf_token"])
    response = client.post(decide_url(approval), {"action": "approve"}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 302
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.APPROVED


def test_decide_accepts_only_post(pending_approval, client_for):
    approval = pending_approval()
    assert client_for("reviewer").get(decide_url(approval)).status_code == 405


# --- decisions ------------------------------------------------------------------------


def test_approve_resumes_the_run_at_once_and_is_audited(
    pending_approval, client_for, rung, django_capture_on_commit_callbacks
):
    approval = pending_approval()
    client = client_for("reviewer", username="rita")
    rung.clear()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(decide_url(approval), {"action": "approve", "reason": "fine"})
    assert response.status_code == 302 and response["Location"] == QUEUE
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by, approval.decided_by_label) == (
        "approved",
        client.user,
        "rita",
    )
    assert Run.objects.get(pk=approval.run_id).status == "queued" and rung == [approval.run_id]
    (entry,) = audit_of(approval)
    assert (entry.action, entry.actor) == ("approval.approved", "user:rita")
    assert entry.data == {"reason": "fine", "run": approval.run_id, "step": "review"}
    run = drive(approval.run_id)
    assert (run.status, run.outcome) == ("succeeded", "sent")
    assert StepRun.objects.get(run=run, step_key="sent").output == DRAFT_TEXT
    follow = client.get(QUEUE).content.decode()
    assert "Approved: Email to Dana" in follow and "Nothing is waiting for review." in follow


def test_edit_then_approve_stores_the_diff_and_the_run_goes_on_with_the_edit(
    pending_approval, client_for
):
    approval = pending_approval()
    edited = DRAFT_TEXT.replace("thanks for your interest", "thank you for your interest")
    client = client_for("reviewer", username="ed")
    response = client.post(
        decide_url(approval),
        # Browsers send textarea lines with CRLF.
        {"action": "edit", "draft": edited.replace("\n", "\r\n"), "reason": "warmer"},
        **HTMX,
    )
    assert response.status_code == 200
    assert b"Edited and approved: Email to Dana" in response.content
    approval.refresh_from_db()
    assert approval.edited_draft == edited and approval.draft == DRAFT_TEXT
    assert approval.edit_diff.splitlines() == [
        "--- draft",
        "+++ edited",
        "@@ -1,3 +1,3 @@",
        " Hello Dana,",
        "-thanks for your interest in Acme.",
        "+thank you for your interest in Acme.",
        " Best, Sam",
    ]
    (entry,) = audit_of(approval)
    assert (entry.action, entry.actor, entry.data["reason"]) == (
        "approval.edited",
        "user:ed",
        "warmer",
    )
    run = drive(approval.run_id)
    assert (run.status, run.outcome) == ("succeeded", "sent")
    assert StepRun.objects.get(run=run, step_key="sent").output == edited
    review = StepRun.objects.get(run=run, step_key="review").output
    assert review["edited"] is True and review["decided_by"] == "ed"
    detail = client.get(reverse("console-review-detail", args=[approval.pk])).content.decode()
    assert "+thank you for your interest in Acme." in detail


def test_an_edit_from_the_detail_page_redirects_the_browser_to_the_queue(
    pending_approval, client_for
):
    approval = pending_approval()
    client = client_for("reviewer")
    response = client.post(
        decide_url(approval), {"action": "edit", "draft": "Hi", "origin": "detail"}, **HTMX
    )
    assert response.status_code == 200 and response["HX-Redirect"] == QUEUE
    assert "Edited and approved" in client.get(QUEUE).content.decode()


def test_a_rejection_needs_a_reason_and_nothing_typed_is_lost(pending_approval, client_for):
    approval = pending_approval()
    client = client_for("reviewer")
    partial = client.post(decide_url(approval), {"action": "reject", "reason": "  "}, **HTMX)
    assert partial.status_code == 200
    assert b"the reason is required" in partial.content
    assert partial.content.lstrip().startswith(f'<article id="approval-{approval.pk}"'.encode())
    page = client.post(decide_url(approval), {"action": "edit", "draft": "", "reason": "my note"})
    assert page.status_code == 400 and b"The edited draft is empty." in page.content
    assert b"my note</textarea>" in page.content and b"<html" in page.content
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING
    assert audit_of(approval) == []

    client.post(decide_url(approval), {"action": "reject", "reason": "wrong tone"})
    approval.refresh_from_db()
    assert (approval.status, approval.decision_reason) == ("rejected", "wrong tone")
    run = drive(approval.run_id)
    assert (run.outcome, run.success) == ("dropped", False)
    (entry,) = audit_of(approval)
    assert (entry.action, entry.data["reason"]) == ("approval.rejected", "wrong tone")


def test_an_unknown_action_is_a_form_error(pending_approval, client_for):
    approval = pending_approval()
    response = client_for("reviewer").post(decide_url(approval), {"action": "shrug"}, **HTMX)
    assert b"Choose approve, approve with edits or reject." in response.content
    assert ApprovalRequest.objects.get(pk=approval.pk).status == ApprovalStatus.PENDING


def test_the_second_reviewer_is_told_who_decided_first(pending_approval, client_for):
    approval = pending_approval()
    first = client_for("reviewer", username="ana")
    second = client_for("reviewer", username="ben")
    second.get(QUEUE)  # ben opened the queue before ana decided
    assert first.post(decide_url(approval), {"action": "approve"}).status_code == 302

    partial = second.post(decide_url(approval), {"action": "reject", "reason": "no"}, **HTMX)
    assert partial.status_code == 200
    assert b"Already approved by ana; your decision was not recorded." in partial.content
    page = second.post(decide_url(approval), {"action": "reject", "reason": "no"}, follow=True)
    assert page.status_code == 200
    assert b"Already approved by ana" in page.content
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_label) == ("approved", "ana")
    assert len(audit_of(approval)) == 1


def test_a_cancelled_run_has_nothing_left_to_decide(pending_approval, client_for):
    from runs import engine

    approval = pending_approval()
    engine.cancel_run(run_id=approval.run_id, reason="operator")
    response = client_for("reviewer").post(decide_url(approval), {"action": "approve"}, **HTMX)
    assert b"was cancelled; nothing to decide" in response.content


def test_a_tool_call_can_be_approved_or_rejected_but_not_edited(pending_tool_call, client_for):
    client = client_for("reviewer")
    body = client.get(QUEUE).content.decode()
    assert 'value="approve"' in body and 'value="reject"' in body
    assert 'value="edit"' not in body and "it cannot be edited" in body

    response = client.post(
        decide_url(pending_tool_call), {"action": "edit", "draft": '{"to": "me"}'}, **HTMX
    )
    assert b"A tool call is approved or rejected as it stands, not edited." in response.content
    assert ApprovalRequest.objects.get(pk=pending_tool_call.pk).status == ApprovalStatus.PENDING

    client.post(decide_url(pending_tool_call), {"action": "approve"})
    assert drive(pending_tool_call.run_id).status == "succeeded"


def _email_review(make_workflow, draft):
    from runs import engine

    version = make_workflow(
        [
            {
                "key": "review",
                "kind": "approval",
                "config": {"draft": draft},
                "edges": {"approved": "done", "rejected": "done"},
            },
            {"key": "done", "kind": "end", "config": {"output": "{{ steps.review.draft }}"}},
        ]
    )
    run = engine.start_run(workflow=version.workflow, input={}).run
    drive(run.pk)
    return run, ApprovalRequest.objects.get(run=run)


EMAIL = {
    "to": "dana@acme.example",
    "subject": "Hi",
    "body": "Hello Dana,\nsee https://acme.example/offer?x=1 and reply.\n" + "word " * 80,
    "priority": 2,
}


def test_an_email_draft_reads_as_an_email_and_is_edited_field_by_field(make_workflow, client_for):
    run, approval = _email_review(make_workflow, EMAIL)
    client = client_for("reviewer")
    page = client.get(QUEUE).content.decode()
    assert '<div class="draft email">' in page
    assert "<dt>To</dt><dd>dana@acme.example</dd>" in page
    assert "Hello Dana,<br>see https://acme.example/offer?x=1" in page  # line breaks kept
    assert "<code>https://acme.example/offer?x=1</code>" in page  # listed, not a link
    assert 'href="https://acme.example' not in page
    shown, _, raw = page.partition("Raw JSON")
    assert "\\n" not in shown and "\\n" in raw  # escaped newlines only in the raw JSON
    assert 'name="field.subject" value="Hi"' in page
    assert '<textarea name="field.body"' in page

    # A JSON field that is not JSON: refused with the field named, typed values kept.
    bad = client.post(
        decide_url(approval),
        {"action": "edit", "field.subject": "Hello", "field.priority": "high!"},
        **HTMX,
    )
    assert b"priority holds JSON and this is not valid JSON" in bad.content
    assert b'name="field.subject" value="Hello"' in bad.content
    approval.refresh_from_db()
    assert approval.status == "pending"

    client.post(
        decide_url(approval),
        {
            "action": "edit",
            "field.to": "dana@acme.example",
            "field.subject": "Hello",
            "field.body": EMAIL["body"].replace("\n", "\r\n"),  # browsers send CRLF
            "field.priority": "3",
        },
    )
    approval.refresh_from_db()
    assert approval.edited_draft == {**EMAIL, "subject": "Hello", "priority": 3}
    # The kept diff is field by field: only what changed, under its field.
    assert approval.edit_diff == "@@ subject\n-Hi\n+Hello\n@@ priority\n-2\n+3\n"
    assert drive(run.pk).status == "succeeded"
    assert StepRun.objects.get(run=run, step_key="done").output["subject"] == "Hello"


def test_a_json_draft_still_takes_a_whole_json_edit(make_workflow, client_for):
    """What the API and a script post: the draft as one JSON document."""
    run, approval = _email_review(make_workflow, {"to": "dana@acme.example", "subject": "Hi"})
    client = client_for("reviewer")
    bad = client.post(decide_url(approval), {"action": "edit", "draft": "{nope"}, **HTMX)
    assert b"This draft is JSON and the edit is not valid JSON" in bad.content
    client.post(
        decide_url(approval),
        {"action": "edit", "draft": '{"to": "dana@acme.example", "subject": "Hello"}'},
    )
    approval.refresh_from_db()
    assert approval.edited_draft == {"to": "dana@acme.example", "subject": "Hello"}
    assert approval.edit_diff == "@@ subject\n-Hi\n+Hello\n"


def test_a_tool_call_reads_as_its_labelled_arguments(pending_tool_call, client_for):
    page = client_for("reviewer").get(QUEUE).content.decode()
    assert '<div class="draft tool-call">' in page
    assert "Tool <code>test.send</code>" in page and "<dt>to</dt><dd>ops</dd>" in page
    assert "Raw JSON" in page


def test_an_edit_that_changes_nothing_is_a_plain_approval(pending_approval, client_for):
    approval = pending_approval()
    response = client_for("reviewer").post(
        decide_url(approval), {"action": "edit", "draft": DRAFT_TEXT}, **HTMX
    )
    assert b"Approved (the draft was not changed)" in response.content
    approval.refresh_from_db()
    assert (approval.status, approval.edited_draft, approval.edit_diff) == ("approved", None, "")
    assert [e.action for e in audit_of(approval)] == ["approval.approved"]
