"""Reviewers and sweeps racing on PostgreSQL: one decision, one telling."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.urls import reverse
from django.utils import timezone

from approvals import sla
from approvals.models import ApprovalRequest
from policies import audit
from policies.models import AuditEntry
from runs import engine
from runs.models import StepRun
from tests.conftest import drive, race

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]


def test_50_reviewers_deciding_one_request_at_once_make_one_decision(
    pending_approval, client_for, rung
):
    approval = pending_approval()
    clients = [client_for("reviewer", username=f"r{i}") for i in range(50)]
    url = reverse("console-review-decide", args=[approval.pk])
    rung.clear()

    def decide(i: int):
        form = (
            {"action": "reject", "reason": f"no, says r{i}"}
            if i % 3 == 0
            else {"action": "edit", "draft": f"Edited by r{i}\n"}
            if i % 3 == 1
            else {"action": "approve"}
        )
        return clients[i].post(url, form, HTTP_HX_REQUEST="true")

    responses = race(50, decide)
    assert all(getattr(r, "status_code", None) == 200 for r in responses), responses
    bodies = [r.content.decode() for r in responses]
    approval.refresh_from_db()
    winner = approval.decided_by_label
    won = [b for b in bodies if "The run resumes." in b]
    lost = [b for b in bodies if f"by {winner}; your decision was not recorded." in b]
    assert len(won) == 1 and len(lost) == 49
    assert approval.decided_by.username == winner

    assert rung == [approval.run_id]  # woken once
    entries = AuditEntry.objects.filter(
        target_type="approvals.approvalrequest", target_id=approval.pk
    )
    assert entries.count() == 1 and entries.get().actor == f"user:{winner}"
    assert audit.verify()[1] is None

    run = drive(approval.run_id)
    assert run.status == "succeeded"
    assert StepRun.objects.filter(run=run, step_key="review").count() == 1
    assert StepRun.objects.filter(run=run, step_key__in=["sent", "dropped"]).count() == 1
    if approval.status == "approved" and approval.edited_draft is not None:
        assert StepRun.objects.get(run=run, step_key="sent").output == approval.edited_draft


def test_50_decide_approval_calls_at_once_resume_the_run_once(pending_approval, rung):
    approval = pending_approval()
    rung.clear()
    results = race(
        50,
        lambda i: engine.decide_approval(
            approval_id=approval.pk, approve=i % 2 == 0, reason=f"r{i}", actor_label=f"r{i}"
        ),
    )
    assert sum(isinstance(r, ApprovalRequest) for r in results) == 1
    assert sum(isinstance(r, engine.AlreadyDecided) for r in results) == 49
    assert rung == [approval.run_id]
    assert AuditEntry.objects.filter(action__startswith="approval.").count() == 1


def test_concurrent_sla_sweeps_tell_and_escalate_each_request_once(
    settings, pending_approval, make_user
):
    settings.BOSUN_REVIEW_NOTIFIER = "approvals.tasks.tell_reviewers"
    make_user("reviewer")
    make_user("manager")
    first = pending_approval(sla_s=60, escalate_to="manager", timeout_s=3600)
    others = [pending_approval(version=first.run.version) for _ in range(4)]
    ids = [first.pk, *(a.pk for a in others)]
    # Arrived unannounced (say the notifier's task was lost) and overdue.
    ApprovalRequest.objects.filter(pk__in=ids).update(
        notified_at=None, due_at=timezone.now() - timedelta(seconds=1)
    )
    mail.outbox.clear()

    reports = race(8, lambda i: sla.sweep_slas())
    assert sorted(a for r in reports for a in r.notified) == sorted(ids)
    assert sorted(a for r in reports for a in r.breached) == sorted(ids)
    subjects = sorted(m.subject.split(":")[0] for m in mail.outbox)
    assert subjects == ["[Bosun] Overdue"] * 5 + ["[Bosun] Review needed"] * 5
