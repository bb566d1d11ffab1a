"""A decision that lands while the approval step is parking still wakes the run."""

from __future__ import annotations

from approvals.models import ApprovalRequest
from runs import engine
from runs.engine import registry
from runs.models import Run, RunStatus
from tests.conftest import drive


def test_a_decision_between_request_and_park_is_not_lost(make_workflow, monkeypatch):
    version = make_workflow(
        [
            {
                "key": "review",
                "kind": "approval",
                "config": {"draft": "text"},
                "edges": {"approved": "done", "rejected": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done"}},
        ]
    )
    kind = registry.KINDS["approval"]
    original = kind.execute

    def decide_while_parking(config, ctx):
        outcome = original(config, ctx)
        # The reviewer is faster than the worker: the request exists, the
        # run is not yet marked waiting.
        request = ApprovalRequest.objects.get(run_id=ctx.run_id)
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label="quick")
        return outcome

    monkeypatch.setattr(kind, "execute", decide_while_parking)
    run_id = engine.start_run(workflow=version.workflow, input={"text": "hi"}).run.pk
    engine.advance_run(run_id)
    assert Run.objects.get(pk=run_id).status == RunStatus.QUEUED
    monkeypatch.setattr(kind, "execute", original)
    run = drive(run_id)
    assert run.status == RunStatus.SUCCEEDED
    assert run.step_runs.filter(step_key="review", edge="approved").exists()
