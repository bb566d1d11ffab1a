"""Heartbeats: a step longer than the lease keeps its run; a worker that
lost its run learns it from the next beat."""

from __future__ import annotations

import pytest

from runs import engine
from runs.engine import heartbeat, store
from runs.models import Run
from tests.clock import lapse_lease
from tests.conftest import chain
from tests.processes import child_env, spawn, stop, wait_until
from tests.testapp.models import Execution

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def _claimed(make_workflow, lease_s: float) -> store.RunState:
    version = make_workflow(
        chain({"key": "s", "kind": "tool", "config": {"tool": "test.count"}}, END)
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    state = store.claim(run_id, worker="a", lease_s=lease_s, trace_id="")
    assert state is not None
    return state


@pytest.mark.django_db(transaction=True)
def test_beats_move_the_lease_and_the_sweepers_timer_forward(make_workflow):
    state = _claimed(make_workflow, lease_s=0.5)
    run_id = state.run_id
    first = Run.objects.get(pk=run_id).lease_expires_at
    with heartbeat.beating(run_id, state.fence, lease_s=5.0, every_s=0.05) as lost:
        wait_until(lambda: Run.objects.get(pk=run_id).lease_expires_at > first)
    assert Run.objects.get(pk=run_id).ring_at > first
    assert not lost.is_set()


@pytest.mark.django_db(transaction=True)
def test_a_beat_that_finds_the_run_taken_over_sets_lease_lost(make_workflow):
    state = _claimed(make_workflow, lease_s=60)
    run_id = state.run_id
    with heartbeat.beating(run_id, state.fence, lease_s=60, every_s=0.05) as lost:
        lapse_lease(run_id)
        assert store.claim(run_id, worker="b", lease_s=60, trace_id="") is not None
        assert lost.wait(timeout=30)
    # The beat did not extend the new owner's lease under the old fence.
    assert Run.objects.get(pk=run_id).lease_owner == "b"


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_step_four_leases_long_is_executed_once_while_the_sweeper_runs(make_workflow, settings):
    """Without beats its 1 s lease would run out mid-step, the sweeper would
    ring, and the other worker would execute the step a second time."""
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    step = {
        "key": "long",
        "kind": "tool",
        "config": {"tool": "test.count", "args": {"sleep_s": 4.0}},
        "timeout_s": 10.0,
    }
    version = make_workflow(chain(step, END))
    env = child_env(BOSUN_LEASE_S="1", BOSUN_HEARTBEAT_S="0.25", BOSUN_WORKERS="2")
    cluster = spawn("worker", env=env)
    sweeper = spawn("sweeper", "--interval", "0.1", env=env)
    try:
        run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
        wait_until(lambda: Run.objects.get(pk=run_id).status == "succeeded", within_s=60)
    finally:
        log = stop(cluster) + stop(sweeper)
    assert Execution.objects.filter(run_id=run_id).count() == 1, log
