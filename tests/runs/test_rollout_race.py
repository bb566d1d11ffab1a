"""Rollout changes racing each other on PostgreSQL: exactly one wins."""

from __future__ import annotations

import pytest

from policies.models import AuditEntry
from runs import engine
from runs.models import Rollout, Workflow
from tests.conftest import chain, race

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


def test_a_promote_and_a_rollback_at_once_leave_one_decision(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    engine.publish_workflow(workflow=v1.workflow, canary_share=10)
    active = Rollout.objects.get()
    actions = [engine.promote_rollout, engine.roll_back_rollout] * 5
    results = race(10, lambda i: actions[i](rollout_id=active.pk, actor=f"user:u{i}"))
    active.refresh_from_db()
    audited = AuditEntry.objects.filter(target_type="runs.rollout").exclude(
        action="rollout.started"
    )
    # A promote may be followed by an undo (rollback); nothing after a rollback.
    assert active.status in ("promoted", "rolled_back")
    assert [e.action for e in audited][-1] == f"rollout.{active.status}"
    assert audited.count() == sum(not isinstance(r, Exception) for r in results) <= 2
    live = Workflow.objects.get(pk=v1.workflow_id).live_version_id
    assert live == (active.candidate_id if active.status == "promoted" else active.baseline_id)


def test_concurrent_canary_starts_make_one_canary(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    workflow = v1.workflow
    workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    engine.publish_workflow(workflow=workflow)
    results = race(
        8,
        lambda i: engine.start_canary(
            workflow=Workflow.objects.get(pk=workflow.pk),
            candidate=v1,
            share_pct=10,
            actor=f"user:u{i}",
        ),
    )
    assert sum(isinstance(r, Rollout) for r in results) == 1
    assert all(isinstance(r, Rollout | engine.InvalidState) for r in results), results
    assert Rollout.objects.count() == 1
