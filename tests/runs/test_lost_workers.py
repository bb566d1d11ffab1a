"""A step that loses its worker, and a step the queue would stop.

A worker lost inside a step (killed, out of memory, ended by the queue) is
taken over, and the step executed again. If the step is what kills its
worker, every worker that takes it on dies the same way: the claim counts
the takeovers in a row in one step, and at BOSUN_MAX_TAKEOVERS the step is
dead-lettered instead.

django-q2's sentinel ends a worker still busy a few seconds past the queue's
task timeout, whatever it is doing. A step therefore starts only if its time
limit ends inside what is left of its task, and a step whose limit is longer
than any task may take is refused at publish.
"""

from __future__ import annotations

import pytest

from runs import engine, tasks
from runs.engine import store, worker
from runs.engine.errors import PublishError
from runs.models import Run, StepRun
from tests.clock import lapse_lease, let_wait_pass
from tests.conftest import chain
from tests.processes import child_env, spawn, stop, wait_until
from tests.testapp.models import Execution
from tests.testapp.tools import Count

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def _count_step(key: str, **fields) -> dict:
    return {"key": key, "kind": "tool", "config": {"tool": "test.count"}, **fields}


def _started(make_workflow, *steps: dict, end: dict = END) -> int:
    version = make_workflow(chain(*steps, end))
    return engine.start_run(workflow=version.workflow, input={}).run.pk


def _lost(run_id: int, holder: str) -> store.RunState:
    """`holder` claims the run and is lost in its step: its lease runs out."""
    state = store.claim(run_id, worker=holder, lease_s=60, trace_id="")
    assert state is not None
    lapse_lease(run_id)
    return state


def _cluster_until(run_id: int, status: str, **env: str) -> str:
    """Start a real `manage.py worker` and sweeper with `env`, wait until the
    run (rung into the queue when it started) reaches `status`, stop them;
    returns their output."""
    environment = child_env(**env)
    cluster = spawn("worker", env=environment)
    sweeper = spawn("sweeper", "--interval", "0.2", env=environment)
    try:
        wait_until(
            lambda: Run.objects.get(pk=run_id).status == status,
            within_s=120,
            what=f"the run did not reach {status}",
        )
    finally:
        log = stop(cluster) + stop(sweeper)
    return log


# --- takeovers ----------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_step_whose_workers_are_lost_again_and_again_is_dead_lettered(make_workflow, settings):
    settings.BOSUN_MAX_TAKEOVERS = 3
    run_id = _started(make_workflow, _count_step("s1"))
    for holder in ("a", "b", "c"):  # the first holder, then two takeovers: all lost
        _lost(run_id, holder)

    assert engine.advance_run(run_id) is engine.Advance.FAILED  # the third takeover

    run = Run.objects.get(pk=run_id)
    assert (run.status, run.dead_error_type, run.takeovers) == ("failed", "worker_lost", 3)
    assert run.dead_lettered_at is not None
    assert "lost 3 times in a row" in run.error
    assert not Execution.objects.filter(run_id=run_id).exists()  # not executed once more
    record = StepRun.objects.get(run_id=run_id)
    assert (record.step_key, record.status, record.error_type) == ("s1", "failed", "worker_lost")

    # A person retries it from the dead-letter queue: the count starts again.
    engine.retry_run(run_id=run_id)
    assert engine.advance_run(run_id) is engine.Advance.FINISHED
    assert Run.objects.get(pk=run_id).takeovers == 0
    assert Execution.objects.filter(run_id=run_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_below_the_bound_a_taken_over_step_is_executed_again(make_workflow, settings):
    settings.BOSUN_MAX_TAKEOVERS = 3
    run_id = _started(make_workflow, _count_step("s1"))
    _lost(run_id, "a")
    _lost(run_id, "b")

    assert engine.advance_run(run_id) is engine.Advance.FINISHED  # the second takeover
    assert Run.objects.get(pk=run_id).takeovers == 2
    assert Execution.objects.filter(run_id=run_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_takeovers_count_in_one_step_and_start_again_after_a_commit(make_workflow):
    run_id = _started(make_workflow, _count_step("s1"), _count_step("s2"))
    _lost(run_id, "a")
    taken = _lost(run_id, "b")
    assert (taken.takeovers, taken.seq) == (1, 1)
    # The second holder commits the first step, then is lost in the next one.
    store.checkpoint(taken, store.Update().set("seq", "seq + 1").value("current_step", "s2"), None)
    lapse_lease(run_id)

    again = store.claim(run_id, worker="c", lease_s=60, trace_id="")
    assert again is not None and (again.takeovers, again.seq) == (1, 2)


@pytest.mark.django_db(transaction=True)
def test_a_run_its_worker_released_is_no_takeover(make_workflow):
    """A retry's wait releases the run: the claim after it counts nothing."""
    fails_once = {"tool": "test.fail", "args": {"failures": 1}}
    retried = {"max_attempts": 3, "backoff_base_s": 60, "backoff_cap_s": 60}
    run_id = _started(make_workflow, {"key": "s1", "kind": "tool", "config": fails_once, **retried})
    _lost(run_id, "a")
    assert engine.advance_run(run_id) is engine.Advance.WAITING  # a takeover, then a retry
    assert Run.objects.get(pk=run_id).takeovers == 1

    let_wait_pass(run_id)
    assert engine.advance_run(run_id) is engine.Advance.FINISHED
    assert Run.objects.get(pk=run_id).takeovers == 0


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_step_that_kills_every_worker_it_meets_stops_killing_them(make_workflow, settings):
    """Real workers, killed by the step itself: the cluster replaces each one
    and ends its leases at once (a 10-minute lease is never waited out), and
    after the third loss the step is dead-lettered, not tried a fourth time."""
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    run_id = _started(
        make_workflow,
        {"key": "s1", "kind": "tool", "config": {"tool": "test.count", "args": {"kill": True}}},
    )
    log = _cluster_until(
        run_id, "failed", BOSUN_WORKERS="2", BOSUN_LEASE_S="600", BOSUN_MAX_TAKEOVERS="3"
    )
    run = Run.objects.get(pk=run_id)
    assert (run.dead_error_type, run.takeovers) == ("worker_lost", 3), log[-3000:]
    pids = list(Execution.objects.filter(run_id=run_id).values_list("pid", flat=True))
    assert len(pids) == 3 and len(set(pids)) == 3, (pids, log[-3000:])


# --- the queue's task timeout -------------------------------------------------


@pytest.mark.django_db
def test_a_step_limit_longer_than_a_task_may_take_is_refused_at_publish(make_workflow, settings):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 300}
    settings.BOSUN_LEASE_MARGIN_S = 5.0
    with pytest.raises(PublishError) as refused:
        make_workflow(chain(_count_step("slow", timeout_s=600), END))
    assert "timeout_s 600 is longer than a worker's task may take (295 s" in str(refused.value)
    make_workflow(chain(_count_step("slow", timeout_s=295), END))  # exactly the room: accepted


class _Clock:
    """The worker's monotonic clock, moved by the test (and by steps); as a
    real one, it has moved on a little whenever it is read."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


@pytest.mark.django_db
def test_a_step_that_would_outlast_the_task_waits_for_a_task_of_its_own(
    make_workflow, settings, monkeypatch
):
    """Task timeout 60 s, margin 5: a task's steps must end within 55 s. The
    first step takes 30 s; the second may take 30 s, which would end at 60:
    it is left for the next task, which has the time."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60}
    settings.BOSUN_LEASE_MARGIN_S = 5.0
    clock = _Clock()
    monkeypatch.setattr(worker, "monotonic", clock)
    counted = Count.run

    def thirty_seconds(self, args, call):
        clock.now += 30
        return counted(self, args, call)

    monkeypatch.setattr(Count, "run", thirty_seconds)
    run_id = _started(
        make_workflow, _count_step("s1", timeout_s=30), _count_step("s2", timeout_s=30)
    )

    assert tasks.advance(run_id) == "yielded"
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.current_step, run.lease_owner) == ("queued", "s2", "")
    assert list(Execution.objects.filter(run_id=run_id).values_list("step_key", flat=True)) == [
        "s1"
    ]

    assert tasks.advance(run_id) == "finished"  # a new task: 30 s of its 55 are enough
    assert Execution.objects.filter(run_id=run_id, step_key="s2").count() == 1


@pytest.mark.django_db
def test_a_step_as_long_as_a_task_has_room_for_starts_a_fresh_task(
    make_workflow, settings, monkeypatch
):
    """It cannot end before the task's end once any time has passed: it is
    not held back for that, or it would never start."""
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 60}
    settings.BOSUN_LEASE_MARGIN_S = 5.0
    monkeypatch.setattr(worker, "monotonic", _Clock())
    run_id = _started(make_workflow, _count_step("s1", timeout_s=55))
    assert tasks.advance(run_id) == "finished"


@pytest.mark.django_db
def test_without_a_queue_timeout_steps_are_not_held_back(make_workflow, settings, monkeypatch):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": None}
    clock = _Clock()
    monkeypatch.setattr(worker, "monotonic", clock)
    run_id = _started(make_workflow, _count_step("s1", timeout_s=10_000))
    assert tasks.advance(run_id) == "finished"


@pytest.mark.django_db
def test_a_step_published_before_the_timeout_was_cut_fails_without_starting(
    make_workflow, settings
):
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 300}
    settings.BOSUN_LEASE_MARGIN_S = 5.0
    run_id = _started(make_workflow, _count_step("s1", timeout_s=200))
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 120}  # a new deployment

    assert tasks.advance(run_id) == "failed"
    run = Run.objects.get(pk=run_id)
    assert run.dead_error_type == "step_too_long"
    assert "(200 s) is longer than a worker's task may take (115 s" in run.error
    assert not Execution.objects.filter(run_id=run_id).exists()


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_queue_never_stops_a_worker_inside_a_step(make_workflow, settings):
    """A real cluster with a 6-second task timeout (its sentinel ends a worker
    busy past about 9 s) and three steps of 3.5 s, each limited to 4.5 s:
    one task could not hold them all. Each step starts a task of its own,
    so each is executed once and no worker is ended."""
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 6}
    settings.BOSUN_LEASE_MARGIN_S = 1.0
    step = {"tool": "test.count", "args": {"sleep_s": 3.5}}
    run_id = _started(
        make_workflow,
        *[{"key": f"s{i}", "kind": "tool", "config": step, "timeout_s": 4.5} for i in (1, 2, 3)],
        end={**END, "timeout_s": 4.5},
    )
    log = _cluster_until(
        run_id, "succeeded", BOSUN_WORKERS="1", BOSUN_TASK_TIMEOUT_S="6", BOSUN_LEASE_MARGIN_S="1"
    )
    executed = list(
        Execution.objects.filter(run_id=run_id).order_by("id").values_list("step_key", flat=True)
    )
    assert executed == ["s1", "s2", "s3"], log[-3000:]
    assert "reincarnated" not in log, log[-3000:]
