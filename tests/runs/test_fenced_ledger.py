"""The tool-call ledger is fenced like the checkpoint: a worker whose run is
no longer its own neither starts a call nor records one's outcome."""

from __future__ import annotations

import pytest

from policies.services import rules_for
from runs import engine
from runs.engine import gate, store
from runs.models import Run, ToolCallRecord
from tests.clock import lapse_lease
from tests.conftest import chain
from tests.testapp import tools
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
SEND = {"key": "send", "kind": "tool", "config": {"tool": "test.send"}}


def _claimed(make_workflow, worker: str = "a") -> store.RunState:
    version = make_workflow(chain(SEND, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    state = store.claim(run.pk, worker=worker, lease_s=60, trace_id="")
    assert state is not None
    return state


def _caller(state: store.RunState) -> gate.Caller:
    run = Run.objects.get(pk=state.run_id)
    return gate.Caller(
        run_id=run.pk,
        seq=state.seq,
        step_key="send",
        attempt=state.attempt,
        timeout_s=10,
        workflow=run.workflow.slug,
        rules=rules_for(run.role_version_id, run.policy_version_id),
        fence=state.fence,
    )


def test_a_worker_whose_lease_ran_out_does_not_call(make_workflow):
    state = _claimed(make_workflow)
    lapse_lease(state.run_id)  # nobody has taken the run yet; the lease is over
    with pytest.raises(engine.LeaseLost):
        gate.call_tool("test.send", {"to": "x"}, _caller(state))
    assert not Execution.objects.exists()
    assert not ToolCallRecord.objects.exists()


def test_a_worker_whose_run_was_taken_over_does_not_call(make_workflow):
    state = _claimed(make_workflow)
    lapse_lease(state.run_id)
    assert store.claim(state.run_id, worker="b", lease_s=60, trace_id="") is not None
    with pytest.raises(engine.LeaseLost):
        gate.call_tool("test.send", {"to": "x"}, _caller(state))
    assert not Execution.objects.exists()
    assert not ToolCallRecord.objects.exists()


def test_an_outcome_that_arrives_after_a_takeover_is_not_recorded(make_workflow, monkeypatch):
    state = _claimed(make_workflow)

    def taken_over_meanwhile(self, args, call):
        # While the vendor takes its time, the lease runs out and another
        # worker claims the run.
        lapse_lease(state.run_id)
        assert store.claim(state.run_id, worker="b", lease_s=60, trace_id="") is not None
        return self.Result(sent=True)

    monkeypatch.setattr(tools.Send, "run", taken_over_meanwhile)
    with pytest.raises(engine.LeaseLost):
        gate.call_tool("test.send", {"to": "x"}, _caller(state))
    record = ToolCallRecord.objects.get(run_id=state.run_id)
    # Left as the new owner finds it: started, one call, no outcome.
    assert (record.status, record.calls, record.result, record.finished_at) == (
        "started",
        1,
        None,
        None,
    )


def test_the_lease_holder_calls_and_records(make_workflow):
    state = _claimed(make_workflow)
    called = gate.call_tool("test.send", {"to": "x"}, _caller(state))
    assert called.result == {"sent": True}
    record = ToolCallRecord.objects.get(run_id=state.run_id)
    assert (record.status, record.result) == ("succeeded", {"sent": True})


def test_a_writes_ledger_row_is_closed_by_the_steps_own_checkpoint(make_workflow):
    """The vendor answered; the row stays `started` until the checkpoint,
    which closes it in the same statement (or transaction) as the step."""
    from tests.conftest import drive

    seen = []
    real = store.checkpoint

    def watch(state, update, record):
        if record is not None and record["step_key"] == "send":
            seen.append(ToolCallRecord.objects.get(run_id=state.run_id).status)
        return real(state, update, record)

    version = make_workflow(chain(SEND, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store, "checkpoint", watch)
        assert drive(run_id).status == "succeeded"
    record = ToolCallRecord.objects.get(run_id=run_id)
    assert seen == ["started"]
    assert (record.status, record.result, record.calls) == ("succeeded", {"sent": True}, 1)


def test_a_lost_checkpoint_leaves_the_row_started_and_the_write_is_asked_again_by_its_key(
    make_workflow, monkeypatch
):
    from tests.conftest import drive

    real = store.checkpoint
    lost = []

    def lose_the_send(state, update, record):
        if record is not None and record["step_key"] == "send" and not lost:
            lost.append(record)
            raise engine.LeaseLost(state.run_id)  # gone before its checkpoint
        return real(state, update, record)

    version = make_workflow(chain(SEND, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    monkeypatch.setattr(store, "checkpoint", lose_the_send)
    assert engine.advance_run(run_id) is engine.Advance.LEASE_LOST
    assert ToolCallRecord.objects.get(run_id=run_id).status == "started"
    lapse_lease(run_id)
    assert drive(run_id).status == "succeeded"
    record = ToolCallRecord.objects.get(run_id=run_id)
    # Asked again under the same key (the vendor applies it once).
    assert (record.status, record.calls) == ("succeeded", 2)
    assert Execution.objects.filter(run_id=run_id).count() == 2
