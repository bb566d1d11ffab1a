"""The review flow: one request at a time, claimed while open (two
reviewers never work on the same item), decided by reason code, skipped,
filtered; the queue's count polls."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.urls import reverse

from approvals import claims
from approvals.models import ApprovalRequest, ReasonCode
from policies.models import AuditEntry
from tests.clock import lapse_review_claim

FOCUS = "/console/review/focus/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def decide(client, approval, **data):
    data.setdefault("origin", "focus")
    return client.post(reverse("console-review-decide", args=[approval.pk]), data, **HTMX)


def shown(response) -> int | None:
    """The request the flow's page shows (its id), or None when clear."""
    body = response.content.decode()
    marker = 'id="approval-'
    if marker not in body:
        return None
    return int(body.split(marker, 1)[1].split('"', 1)[0])


def test_the_flow_shows_the_oldest_and_claims_it(pending_approval, client_for):
    first, second = pending_approval(), pending_approval()
    rita = client_for("reviewer", username="rita")
    page = rita.get(FOCUS)
    assert shown(page) == first.pk
    first.refresh_from_db()
    assert first.claimed_by_label == "rita" and first.claimed_until is not None
    assert "2 open to you, this one included" in page.content.decode()
    # A second reviewer is given the next one, never the claimed one.
    sam = client_for("reviewer", username="sam")
    page = sam.get(FOCUS)
    assert shown(page) == second.pk
    assert "1 open by other reviewers" in page.content.decode()
    # ... and sees in the queue who has which.
    queue = sam.get("/console/review/").content.decode()
    assert "open by rita until" in queue


def test_a_claimed_request_cannot_be_decided_by_another_until_the_claim_runs_out(
    pending_approval, client_for
):
    approval = pending_approval()
    rita = client_for("reviewer", username="rita")
    sam = client_for("reviewer", username="sam")
    assert shown(rita.get(FOCUS)) == approval.pk
    refused = decide(sam, approval, action="approve", origin="queue")
    assert b"rita has approval" in refused.content
    assert b"your decision was not recorded" in refused.content
    approval.refresh_from_db()
    assert approval.status == "pending"
    # Rita walks away; once her claim has run out, Sam may decide.
    lapse_review_claim(approval.pk)
    decide(sam, approval, action="approve", origin="queue")
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_label) == ("approved", "sam")
    assert approval.claimed_by is None and approval.claimed_until is None


def test_deciding_in_the_flow_answers_with_the_next_request(pending_approval, client_for):
    first, second = pending_approval(), pending_approval()
    rita = client_for("reviewer", username="rita")
    assert shown(rita.get(FOCUS)) == first.pk
    after = decide(rita, first, action="approve")
    assert shown(after) == second.pk
    assert b"Approved: " in after.content
    second.refresh_from_db()
    assert second.claimed_by_label == "rita"
    done = decide(rita, second, action="reject", code="off_tone")
    assert shown(done) is None and b"The queue is clear" in done.content
    second.refresh_from_db()
    assert (second.status, second.decision_code, second.decision_reason) == (
        "rejected",
        "off_tone",
        "",
    )
    entry = AuditEntry.objects.filter(action="approval.rejected").latest("id")
    assert entry.data["code"] == "off_tone"


def test_a_rejection_needs_a_code_or_a_note(pending_approval, client_for):
    approval = pending_approval()
    rita = client_for("reviewer", username="rita")
    rita.get(FOCUS)
    refused = decide(rita, approval, action="reject")
    assert b"the reason is required (a code or a note)" in refused.content
    assert shown(refused) == approval.pk  # the same request, still in the flow
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_skipping_gives_the_claim_back_and_moves_on(pending_approval, client_for):
    first, second = pending_approval(), pending_approval()
    rita = client_for("reviewer", username="rita")
    rita.get(FOCUS)
    page = rita.post(reverse("console-review-skip", args=[first.pk]), {"skip": ""}, **HTMX)
    assert shown(page) == second.pk
    first.refresh_from_db()
    assert first.claimed_by is None  # free for someone else
    # The skipped one stays out of this reviewer's flow for the session.
    page = decide(rita, second, action="approve", skip=str(first.pk))
    assert shown(page) is None


def test_the_flow_and_the_queue_follow_the_filters(pending_approval, pending_tool_call, client_for):
    draft = pending_approval()
    rita = client_for("reviewer", username="rita")
    reason = pending_tool_call.reason_code
    page = rita.get(FOCUS, {"reason": reason})
    assert shown(page) == pending_tool_call.pk
    queue = rita.get("/console/review/", {"reason": "review_required"}).content.decode()
    assert f'id="approval-{draft.pk}"' in queue
    assert f'id="approval-{pending_tool_call.pk}"' not in queue
    count = rita.get(reverse("console-review-count"), {"reason": "review_required"})
    assert (
        "1 pending" in count.content.decode() and 'hx-trigger="every 15s"' in count.content.decode()
    )


def test_reason_codes_are_a_managed_list(pending_approval, client_for):
    ReasonCode.objects.filter(code="other").update(active=False)
    ReasonCode.objects.create(code="legal_hold", label="Legal asked us to hold", position=0)
    approval = pending_approval()
    body = client_for("reviewer").get(FOCUS).content.decode()
    assert "Legal asked us to hold" in body and "Other (say why" not in body
    assert f'id="approval-{approval.pk}"' in body


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_reviewers_claiming_at_once_get_one_claim(pending_approval, make_user):
    approval = pending_approval()
    users = [make_user("reviewer") for _ in range(6)]
    barrier = threading.Barrier(len(users))
    won: list[str] = []

    def open_it(user) -> None:
        try:
            barrier.wait()
            if claims.claim(approval.pk, user):
                won.append(user.get_username())
        finally:
            connection.close()

    threads = [threading.Thread(target=open_it, args=(user,)) for user in users]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1
    assert ApprovalRequest.objects.get(pk=approval.pk).claimed_by_label == won[0]
