"""The engine's guarantees, on whichever database the suite runs against."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from approvals.models import ApprovalRequest
from runs import engine
from runs.engine import store
from runs.models import Run, StepRun
from tests.clock import lapse_lease, let_wait_pass
from tests.conftest import chain, drive, waiting_for_review
from tests.testapp.models import Execution, Switch

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "output": "{{ steps }}"}}


def count(key, **extra):
    return {"key": key, "kind": "tool", "config": {"tool": "test.count"}, **extra}


def executions(run_id) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in Execution.objects.filter(run_id=run_id).values_list("step_key", flat=True):
        out[key] = out.get(key, 0) + 1
    return out


def test_it_runs_every_step_once_and_records_each(make_workflow, rung):
    version = make_workflow(chain(count("a"), count("b"), count("c"), END))
    started = engine.start_run(workflow=version.workflow, input={"lead": 1})
    assert started.created and started.run.status == "queued"
    run = drive(started.run.pk)
    assert run.status == "succeeded" and run.outcome == "done" and run.success is True
    assert executions(run.pk) == {"a": 1, "b": 1, "c": 1}
    records = list(StepRun.objects.filter(run=run).values_list("seq", "step_key", "status"))
    assert records == [
        (1, "a", "succeeded"),
        (2, "b", "succeeded"),
        (3, "c", "succeeded"),
        (4, "done", "succeeded"),
    ]
    assert run.steps_executed == 4 and run.tool_calls == 3
    assert run.finished_at is not None and run.lease_owner == "" and run.ring_at is None


def test_later_steps_read_earlier_outputs_from_the_context(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "first",
                "kind": "tool",
                "config": {"tool": "echo", "args": {"value": "{{ input.n * 2 }}"}},
            },
            {
                "key": "second",
                "kind": "tool",
                "config": {"tool": "echo", "args": {"value": "got {{ steps.first.value }}"}},
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={"n": 21}).run.pk)
    assert StepRun.objects.get(run=run, step_key="second").output == {"value": "got 42"}


def test_it_resumes_from_the_failed_step_after_the_cause_is_fixed(make_workflow):
    Switch.objects.create(name="vendor-down", on=True)
    version = make_workflow(
        chain(
            count("s1"),
            count("s2"),
            {
                "key": "s3",
                "kind": "tool",
                "config": {"tool": "test.fail_while", "args": {"switch": "vendor-down"}},
            },
            count("s4"),
            count("s5"),
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed" and run.dead_lettered_at is not None
    assert run.current_step == "s3" and "switch vendor-down is on" in run.error
    assert executions(run.pk) == {"s1": 1, "s2": 1, "s3": 1}  # not retryable: failed fast

    Switch.objects.filter(name="vendor-down").update(on=False)
    engine.retry_run(run_id=run.pk)
    run = drive(run.pk)
    assert run.status == "succeeded"
    # Steps 1 and 2 were reused, not re-executed; 3 ran again, 4 and 5 once.
    assert executions(run.pk) == {"s1": 1, "s2": 1, "s3": 2, "s4": 1, "s5": 1}
    assert StepRun.objects.filter(run=run, status="succeeded").count() == 6


def test_retries_back_off_exponentially_within_jitter_bounds_then_dead_letter(make_workflow):
    base, cap, attempts = 0.02, 0.1, 5
    version = make_workflow(
        chain(
            {
                "key": "flaky",
                "kind": "tool",
                "config": {"tool": "test.fail"},
                "max_attempts": attempts,
                "backoff_base_s": base,
                "backoff_cap_s": cap,
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed" and run.dead_lettered_at is not None
    assert "retries exhausted" in run.error
    tries = list(StepRun.objects.filter(run=run).order_by("attempt"))
    assert [t.attempt for t in tries] == [1, 2, 3, 4, 5]
    assert all(t.status == "failed" for t in tries)
    for earlier, later in zip(tries, tries[1:], strict=False):
        ceiling = min(cap, base * 2 ** (earlier.attempt - 1))
        assert ceiling / 2 <= earlier.retry_delay_s <= ceiling
        # The next attempt never starts before its backoff has passed.
        gap = (later.started_at - earlier.finished_at).total_seconds()
        assert gap >= earlier.retry_delay_s - 0.002
    assert tries[-1].retry_delay_s is None  # the last attempt schedules nothing
    assert Execution.objects.filter(run_id=run.pk).count() == attempts


def test_a_retry_after_is_a_floor_for_the_next_attempt(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "limited",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"failures": 1, "retry_after": 0.3}},
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    first, second = StepRun.objects.filter(run=run, step_key="limited").order_by("attempt")
    assert run.status == "succeeded"
    assert first.retry_delay_s >= 0.3
    assert (second.started_at - first.finished_at).total_seconds() >= 0.3 - 0.002


def test_a_non_retryable_error_fails_fast(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "bad",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"retryable": False}},
                "max_attempts": 5,
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed"
    assert StepRun.objects.filter(run=run).count() == 1


def test_a_long_backoff_leaves_the_run_waiting_for_the_sweeper(make_workflow, rung, settings):
    settings.BOSUN_INLINE_WAIT_S = 0.0
    version = make_workflow(
        chain(
            {
                "key": "flaky",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"failures": 1}},
                "backoff_base_s": 60,
                "backoff_cap_s": 60,
            },
            END,
        )
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    assert engine.advance_run(run_id) is engine.Advance.WAITING
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.wait_reason, run.attempt) == ("waiting", "retry", 2)
    assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED  # not due yet
    let_wait_pass(run_id)
    rung.clear()
    assert run_id in engine.sweep()
    assert engine.sweep() == []  # pushed forward: one ring per due timer
    assert drive(run_id).status == "succeeded"


def test_a_step_over_its_time_limit_times_out(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "slow",
                "kind": "tool",
                "config": {"tool": "test.count", "args": {"sleep_s": 30, "count_after": True}},
                "timeout_s": 0.1,
                "max_attempts": 2,
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed"
    assert list(StepRun.objects.filter(run=run).values_list("error_type", "error")) == [
        ("timeout", "step timed out after 0.1s"),
        ("timeout", "step timed out after 0.1s"),
    ]
    assert not Execution.objects.exists()  # interrupted, not waited out


def test_a_stale_worker_cannot_checkpoint_after_a_takeover(make_workflow):
    version = make_workflow(chain(count("a"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    stale = store.claim(run_id, worker="stale", lease_s=30)
    assert store.claim(run_id, worker="other", lease_s=30) is None  # leased
    lapse_lease(run_id)
    fresh = store.claim(run_id, worker="fresh", lease_s=30)
    assert fresh is not None and fresh.fence == stale.fence + 1
    now = Run.objects.get().created_at
    record = store.step_record(
        seq=1,
        attempt=1,
        step_key="a",
        kind="tool",
        status="succeeded",
        edge="next",
        output={"stale": True},
        started_at=now,
        finished_at=now,
        duration_ms=0,
        worker="stale",
    )
    with pytest.raises(engine.LeaseLost):
        store.checkpoint(stale, store.Update().add("steps_executed", 1), record)
    assert not StepRun.objects.filter(run_id=run_id).exists()
    assert Run.objects.get(pk=run_id).steps_executed == 0


def test_starting_twice_with_one_idempotency_key_returns_the_first_run(make_workflow):
    version = make_workflow(chain(count("a"), END))
    first = engine.start_run(workflow=version.workflow, input={"x": 1}, idempotency_key="k1")
    again = engine.start_run(workflow=version.workflow, input={"x": 1}, idempotency_key="k1")
    assert first.created and not again.created and again.run.pk == first.run.pk
    assert Run.objects.count() == 1


def test_an_approval_waits_and_an_edited_approval_resumes_with_the_edit(make_workflow):
    version = make_workflow(
        [
            {
                "key": "draft",
                "kind": "tool",
                "config": {"tool": "echo", "args": {"value": "Hello"}},
                "edges": {"next": "review"},
            },
            {
                "key": "review",
                "kind": "approval",
                "config": {"draft": {"$ref": "steps.draft.value"}},
                "edges": {"approved": "sent", "rejected": "dropped"},
            },
            {
                "key": "sent",
                "kind": "end",
                "config": {"outcome": "sent", "output": "{{ steps.review.draft }}"},
            },
            {"key": "dropped", "kind": "end", "config": {"outcome": "dropped", "success": False}},
        ]
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    run = drive(run_id)
    assert (run.status, run.wait_reason, run.current_step) == ("waiting", "approval", "review")
    request = ApprovalRequest.objects.get(run=run)
    assert request.draft == "Hello" and request.status == "pending"
    assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED  # nothing to do yet

    engine.decide_approval(
        approval_id=request.pk, approve=True, actor_label="rita", edited_draft="Hello, Dana"
    )
    with pytest.raises(engine.AlreadyDecided):
        engine.decide_approval(approval_id=request.pk, approve=False, reason="late")
    run = drive(run_id)
    assert run.status == "succeeded" and run.outcome == "sent"
    assert StepRun.objects.get(run=run, step_key="sent").output == "Hello, Dana"
    review = StepRun.objects.get(run=run, step_key="review")
    assert review.output["edited"] is True and review.output["decided_by"] == "rita"
    assert ApprovalRequest.objects.filter(run=run).count() == 1


def test_a_rejection_needs_a_reason_and_takes_the_rejected_edge(make_workflow):
    version = make_workflow(
        [
            {
                "key": "review",
                "kind": "approval",
                "config": {"draft": "text"},
                "edges": {"approved": "sent", "rejected": "dropped"},
            },
            {"key": "sent", "kind": "end", "config": {"outcome": "sent"}},
            {"key": "dropped", "kind": "end", "config": {"outcome": "dropped", "success": False}},
        ]
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    drive(run_id)
    request = ApprovalRequest.objects.get(run_id=run_id)
    with pytest.raises(engine.InvalidState, match="reason"):
        engine.decide_approval(approval_id=request.pk, approve=False, reason=" ")
    engine.decide_approval(approval_id=request.pk, approve=False, reason="wrong tone")
    run = drive(run_id)
    assert (run.status, run.outcome, run.success) == ("succeeded", "dropped", False)


def test_cancel_stops_a_waiting_run_and_its_pending_approval(make_workflow):
    run_id = waiting_for_review(make_workflow)
    assert engine.cancel_run(run_id=run_id, reason="operator").status == "cancelled"
    assert ApprovalRequest.objects.get(run_id=run_id).status == "cancelled"
    with pytest.raises(engine.InvalidState):
        engine.cancel_run(run_id=run_id)
    with pytest.raises(engine.InvalidState):
        engine.retry_run(run_id=run_id)
    assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED


def test_a_run_cancelled_as_it_is_created_does_not_finish_before_it_began(make_workflow):
    # created_at is the app's clock, finished_at the database's: a run whose
    # creation time is (even slightly) ahead of the database still ends after it.
    run_id = waiting_for_review(make_workflow)
    Run.objects.filter(pk=run_id).update(created_at=timezone.now() + timedelta(seconds=5))
    run = engine.cancel_run(run_id=run_id)
    assert run.finished_at >= run.created_at


def test_a_cancelled_run_stops_its_worker_at_the_next_checkpoint(make_workflow):
    version = make_workflow(chain(count("a"), count("b"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    state = store.claim(run_id, worker="w", lease_s=30)
    engine.cancel_run(run_id=run_id)
    with pytest.raises(engine.LeaseLost):
        store.checkpoint(state, store.Update().add("steps_executed", 1), None)


def test_an_exhausted_loop_takes_its_exhausted_edge(make_workflow):
    version = make_workflow(
        [
            {
                "key": "poll",
                "kind": "tool",
                "config": {"tool": "test.count"},
                "edges": {"next": "check", "exhausted": "gave_up"},
                "max_visits": 3,
            },
            {
                "key": "check",
                "kind": "branch",
                "edges": {"again": "poll", "ok": "done"},
                "max_visits": 3,
                "config": {
                    "rules": [
                        {
                            "when": {"path": "steps.poll.executions", "op": "<", "value": 99},
                            "edge": "again",
                        }
                    ],
                    "default": "ok",
                },
            },
            {"key": "gave_up", "kind": "end", "config": {"outcome": "gave_up", "success": False}},
            END,
        ]
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.outcome) == ("succeeded", "gave_up")
    assert executions(run.pk) == {"poll": 3}


def test_a_run_yields_to_the_queue_when_its_time_slice_is_used(make_workflow, rung):
    version = make_workflow(chain(count("a"), count("b"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    assert engine.advance_run(run_id, slice_s=0) is engine.Advance.YIELDED
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.current_step, run.lease_owner) == ("queued", "b", "")
    assert drive(run_id).status == "succeeded"


def test_the_sweeper_recovers_an_expired_lease(make_workflow):
    version = make_workflow(chain(count("a"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    store.claim(run_id, worker="crashed", lease_s=10)  # ... and then it died
    assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED
    lapse_lease(run_id)
    assert engine.sweep() == [run_id]  # ring_at followed the lease
    run = drive(run_id)
    assert run.status == "succeeded" and run.fence == 2


def test_a_run_cannot_start_on_a_workflow_without_a_version(make_workflow):
    workflow = make_workflow(chain(count("a"), END), publish=False)
    with pytest.raises(engine.InvalidState, match="no published version"):
        engine.start_run(workflow=workflow, input={})
    with pytest.raises(engine.NotFound):
        engine.start_run(workflow="nope", input={})


def test_the_database_clock_is_what_leases_compare_against(make_workflow):
    version = make_workflow(chain(count("a"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    store.claim(run_id, worker="w", lease_s=60)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT lease_expires_at > {store.later_sql()} FROM runs_run WHERE id = %s",
            [59.0, run_id],
        )
        assert cursor.fetchone()[0] in (True, 1)


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_a_step_runs(make_workflow):
    # Outside a test transaction, as in a worker: a step that ran inside one
    # would hold row locks (and SQLite's write lock) for its whole duration.
    version = make_workflow(
        chain({"key": "probe", "kind": "tool", "config": {"tool": "test.in_transaction"}}, END)
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert StepRun.objects.get(run=run, step_key="probe").output == {"in_transaction": False}


def test_each_claim_is_kept_in_the_runs_lease_history_up_to_its_bound(make_workflow):
    version = make_workflow(chain(count("a"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    for n in range(store.LEASE_HISTORY + 3):
        state = store.claim(run_id, worker=f"w{n}", lease_s=10)
        assert state is not None
        lapse_lease(run_id)  # ... and then it died
    history = Run.objects.get(pk=run_id).lease_history
    assert len(history) == store.LEASE_HISTORY
    assert [h["worker"] for h in history] == [f"w{n}" for n in range(3, store.LEASE_HISTORY + 3)]
    assert [h["fence"] for h in history] == list(range(4, store.LEASE_HISTORY + 4))
    assert all(h["at"] for h in history)
