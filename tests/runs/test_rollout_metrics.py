"""The canary comparison: live against candidate, computed from runs and steps."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from approvals.models import ApprovalRequest
from runs import engine
from runs.models import Rollout, Run, RunMode, RunStatus, StepRun
from runs.rollout_metrics import rollout_comparison
from tests.conftest import chain

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def a_run(version, status, *, success=None, cost="0", escalated=False, flagged=False) -> Run:
    run = Run.objects.create(
        workflow=version.workflow,
        version=version,
        status=status,
        success=success,
        cost_usd=Decimal(cost),
        current_step="a",
    )
    if escalated:
        ApprovalRequest.objects.create(run=run, seq=1, step_key="review")
    if flagged:
        now = timezone.now()
        StepRun.objects.create(
            run=run,
            seq=1,
            step_key="a",
            kind="llm",
            status="succeeded",
            edge="flagged",
            started_at=now,
            finished_at=now,
        )
    return run


def test_the_comparison_counts_each_versions_runs_while_the_canary_ran(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    workflow = v1.workflow
    old = a_run(v1, RunStatus.SUCCEEDED, success=True, cost="9")  # before the canary
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=1))
    workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    v2 = engine.publish_workflow(workflow=workflow, canary_share=10)
    active = Rollout.objects.get(workflow=workflow)

    a_run(v1, RunStatus.SUCCEEDED, success=True, cost="0.10")
    a_run(v1, RunStatus.SUCCEEDED, success=False, cost="0.10", escalated=True)
    a_run(v1, RunStatus.FAILED, cost="0.20")
    a_run(v1, RunStatus.RUNNING, cost="0.05")
    a_run(v2, RunStatus.SUCCEEDED, success=True, cost="0.30", flagged=True, escalated=True)
    a_run(v2, RunStatus.SUCCEEDED, success=True, cost="0.10")

    live, candidate = rollout_comparison(active)
    assert (live.side, live.number, candidate.side, candidate.number) == (
        "live",
        1,
        "candidate",
        v2.number,
    )
    assert (live.runs, live.finished, live.succeeded, live.successes) == (4, 3, 2, 1)
    assert live.success_rate == 2 / 3
    assert live.escalation_rate == 1 / 4 and live.flagged_rate == 0
    assert live.cost_usd == Decimal("0.45") and live.cost_per_success == Decimal("0.45")
    assert (candidate.runs, candidate.successes, candidate.success_rate) == (2, 2, 1.0)
    assert candidate.escalation_rate == 0.5 and candidate.flagged_rate == 0.5
    assert candidate.cost_per_success == Decimal("0.20")


def test_a_version_without_runs_has_no_rates(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    engine.publish_workflow(workflow=v1.workflow, canary_share=10)
    live, candidate = rollout_comparison(Rollout.objects.get())
    assert candidate.runs == 0
    assert (candidate.success_rate, candidate.escalation_rate, candidate.cost_per_success) == (
        None,
        None,
        None,
    )


def test_sandbox_runs_are_not_counted(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    v2 = engine.publish_workflow(workflow=v1.workflow, canary_share=10)
    a_run(v2, RunStatus.SUCCEEDED, success=True, cost="0.10")
    shadow = a_run(v2, RunStatus.SUCCEEDED, success=True, cost="0.10")
    Run.objects.filter(pk=shadow.pk).update(mode=RunMode.SHADOW)
    _, candidate = rollout_comparison(Rollout.objects.get())
    assert (candidate.runs, candidate.cost_usd) == (1, Decimal("0.10"))
