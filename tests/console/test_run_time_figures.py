"""Each run keeps its machine time and its time waiting for people where
they change: a step's checkpoint, a decision, a breach (runs.metrics)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models import Sum
from django.utils import timezone

from approvals import sla
from approvals.models import ApprovalRequest
from runs import engine
from runs.models import Run, StepRun
from tests.conftest import drive

pytestmark = pytest.mark.django_db


def test_a_run_adds_up_the_durations_of_its_step_attempts(pending_approval):
    approval = pending_approval()
    engine.decide_approval(approval_id=approval.pk, approve=True, actor_label="rhea")
    run = drive(approval.run_id)
    assert run.status == "succeeded"
    recorded = StepRun.objects.filter(run=run).aggregate(total=Sum("duration_ms"))["total"]
    assert recorded > 0
    assert run.machine_ms == pytest.approx(recorded)


def test_a_decision_adds_its_wait_to_the_run_once(pending_approval):
    approval = pending_approval()
    created = timezone.now() - timedelta(minutes=30)
    ApprovalRequest.objects.filter(pk=approval.pk).update(created_at=created)
    engine.decide_approval(approval_id=approval.pk, approve=True, actor_label="rhea")
    with pytest.raises(engine.AlreadyDecided):
        engine.decide_approval(approval_id=approval.pk, approve=False, reason="late")
    approval.refresh_from_db()
    run = Run.objects.get(pk=approval.run_id)
    waited = (approval.decided_at - created).total_seconds() * 1000
    assert (run.decisions, run.wait_ms) == (1, pytest.approx(waited))
    assert run.wait_ms > 29 * 60 * 1000  # the database clock stamps the decision


def test_a_breach_is_counted_on_the_run_once(pending_approval):
    approval = pending_approval(sla_s=600)
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        due_at=timezone.now() - timedelta(seconds=1), notified_at=timezone.now()
    )
    assert sla.sweep_slas().breached == [approval.pk]
    assert sla.sweep_slas().breached == []
    assert Run.objects.get(pk=approval.run_id).breaches == 1
