"""The tool gate: role, arguments, autonomy, taint and approvals.

Each refusal is shown twice: through a workflow, and by calling the gate
directly, as a model asking for a tool (or any other caller) would.
"""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest, ApprovalStatus
from policies.services import rules_for
from runs import engine
from runs.engine import gate
from runs.models import Run, StepRun, ToolCallRecord
from tests.conftest import chain, drive
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def _send(**config):
    return {"key": "send", "kind": "tool", "config": {"tool": "test.send", **config}}


def _caller(run: Run, **overrides) -> gate.Caller:
    fields = {
        "run_id": run.pk,
        "seq": run.seq,
        "step_key": run.current_step,
        "attempt": 1,
        "timeout_s": 10,
        "workflow": run.workflow.slug,
        "rules": rules_for(run.role_version_id, run.policy_version_id),
        "tainted": run.tainted,
    }
    return gate.Caller(**{**fields, **overrides})


def _started(make_workflow, steps, **kwargs) -> Run:
    version = make_workflow(steps, **kwargs)
    return engine.start_run(workflow=version.workflow, input={"amount": 250}).run


def test_a_tool_outside_the_role_is_refused_and_the_refusal_recorded(make_workflow):
    run = _started(make_workflow, chain(_send(), END), tools=["echo"])
    run = drive(run.pk)
    assert run.status == "failed"
    step = StepRun.objects.get(run=run, step_key="send")
    assert step.error_type == "refused:not_in_role"
    assert "may not call test.send" in step.error
    assert not Execution.objects.exists()


def test_a_tool_outside_the_role_is_refused_when_called_directly(make_workflow):
    run = _started(make_workflow, chain(_send(), END), tools=["echo"])
    with pytest.raises(gate.Refused) as refused:
        gate.call_tool("test.send", {"to": "x"}, _caller(run))
    assert refused.value.code == "not_in_role"
    assert not Execution.objects.exists()
    assert not ToolCallRecord.objects.exists()


def test_arguments_outside_the_schema_are_refused_with_the_field(make_workflow):
    run = _started(make_workflow, chain(_send(), END))
    with pytest.raises(gate.Refused) as refused:
        gate.call_tool("test.send", {"to": ["not", "a", "string"]}, _caller(run))
    assert refused.value.code == "invalid_arguments"
    assert "to" in str(refused.value)
    assert not Execution.objects.exists()


def test_a_blocked_tool_is_refused_in_a_workflow_and_directly(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "block"}]}
    run = _started(make_workflow, chain(_send(), END), policy=policy)
    with pytest.raises(gate.Refused) as refused:
        gate.call_tool("test.send", {}, _caller(run))
    assert refused.value.code == "blocked"
    run = drive(run.pk)
    assert run.status == "failed"
    assert StepRun.objects.get(run=run).error_type == "refused:blocked"
    assert not Execution.objects.exists()


def test_a_refusal_takes_the_refused_edge_when_the_workflow_has_one(make_workflow):
    steps = [
        {**_send(), "edges": {"next": "done", "refused": "review"}},
        {"key": "review", "kind": "end", "config": {"outcome": "needs_review", "success": False}},
        END,
    ]
    run = _started(
        make_workflow, steps, policy={"autonomy": [{"tool": "test.send", "mode": "block"}]}
    )
    run = drive(run.pk)
    assert (run.status, run.outcome) == ("succeeded", "needs_review")
    step = StepRun.objects.get(run=run, step_key="send")
    assert step.edge == "refused" and step.output["code"] == "blocked"


def test_a_tool_needing_approval_is_not_called_without_one(make_workflow):
    policy = {
        "autonomy": [
            {
                "tool": "test.send",
                "mode": "approve",
                "when": {"path": "args.to", "op": "==", "value": "finance"},
            }
        ]
    }
    run = _started(make_workflow, chain(_send(args={"to": "finance"}), END), policy=policy)
    with pytest.raises(gate.NeedsApproval):
        gate.call_tool("test.send", {"to": "finance"}, _caller(run))
    assert not Execution.objects.exists()
    # Below the condition the same tool runs on its own.
    assert gate.call_tool("test.send", {"to": "ops"}, _caller(run, seq=7)).result == {"sent": True}


def test_an_approval_binds_the_exact_arguments_and_is_consumed_once(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    run = _started(make_workflow, chain(_send(args={"to": "finance"}), END), policy=policy)
    run = drive(run.pk)
    assert (run.status, run.wait_reason) == ("waiting", "approval")
    request = ApprovalRequest.objects.get(run=run)
    assert request.kind == "tool_call" and request.draft["args"] == {"to": "finance"}
    engine.decide_approval(approval_id=request.pk, approve=True, actor_label="ana")
    # Other arguments under the same approval: refused.
    with pytest.raises(gate.Refused) as refused:
        gate.call_tool("test.send", {"to": "elsewhere"}, _caller(run))
    assert refused.value.code == "approval_mismatch"
    run = drive(run.pk)
    assert run.status == "succeeded"
    assert Execution.objects.count() == 1
    request.refresh_from_db()
    assert request.consumed_by == f"bosun-run-{run.pk}-seq-1"
    # The approval was used by that call; a call under any other key is refused.
    ApprovalRequest.objects.filter(pk=request.pk).update(consumed_by="bosun-run-0-seq-0")
    ToolCallRecord.objects.all().delete()
    with pytest.raises(gate.Refused) as refused:
        gate.call_tool("test.send", {"to": "finance"}, _caller(run, seq=1))
    assert refused.value.code == "approval_consumed"
    assert Execution.objects.count() == 1


def test_a_rejected_tool_call_fails_the_step_with_the_reason(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    run = _started(make_workflow, chain(_send(), END), policy=policy)
    drive(run.pk)
    request = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=request.pk, approve=False, reason="wrong customer")
    run = drive(run.pk)
    assert run.status == "failed"
    assert "wrong customer" in StepRun.objects.get(run=run).error
    assert not Execution.objects.exists()


def test_a_tool_call_approval_cannot_be_edited(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    run = _started(make_workflow, chain(_send(), END), policy=policy)
    drive(run.pk)
    request = ApprovalRequest.objects.get(run=run)
    with pytest.raises(engine.InvalidState):
        engine.decide_approval(approval_id=request.pk, approve=True, edited_draft={"to": "me"})
    assert ApprovalRequest.objects.get(pk=request.pk).status == ApprovalStatus.PENDING


def test_a_tainted_run_needs_approval_for_writes_but_not_reads(make_workflow):
    run = _started(make_workflow, chain(_send(), END), tools=["test.send", "echo"])
    Run.objects.filter(pk=run.pk).update(tainted=True)
    run.refresh_from_db()
    with pytest.raises(gate.NeedsApproval) as pending:
        gate.call_tool("test.send", {}, _caller(run))
    assert pending.value.reason_code == "tainted_run"
    assert gate.call_tool("echo", {"value": 1}, _caller(run, seq=9)).result == {"value": 1}
    assert not Execution.objects.exists()


def test_a_retry_after_success_returns_the_recorded_result_without_calling(make_workflow):
    run = _started(make_workflow, chain(_send(), END))
    first = gate.call_tool("test.send", {"to": "a"}, _caller(run))
    again = gate.call_tool("test.send", {"to": "a"}, _caller(run, attempt=2))
    assert (first.from_ledger, again.from_ledger) == (False, True)
    assert again.result == first.result
    assert Execution.objects.count() == 1
