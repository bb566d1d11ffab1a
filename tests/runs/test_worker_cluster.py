"""`manage.py worker`: a cluster that goes on executing runs whatever of it
is killed.

A django-q2 worker waiting for a task holds the task queue's read lock; if
it is killed there, plain `qcluster` reincarnates it and every worker then
waits on that lock for good. These tests kill the cluster's processes and
require the runs started afterwards to finish.
"""

from __future__ import annotations

import os
import signal

import pytest

from runs import engine
from runs.models import TERMINAL_STATUSES, Run
from tests.conftest import chain
from tests.processes import child_env, children, spawn, stop, wait_until
from tests.testapp.models import Execution

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
STEP = {"key": "s1", "kind": "tool", "config": {"tool": "test.count", "args": {}}}


def _finish(ids: list[int], within_s: float) -> None:
    wait_until(
        lambda: not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_STATUSES).exists(),
        within_s=within_s,
        what="runs did not finish",
    )


def _processes_of(cluster_pid: int, count: int) -> list[int]:
    """The sentinel's children (workers, pusher, monitor), once all are up."""

    def up() -> list[int]:
        sentinels = children(cluster_pid)
        found = children(sentinels[0]) if len(sentinels) == 1 else []
        return found if len(found) == count else []

    return list(wait_until(up, what="the cluster's processes did not come up"))


def test_runs_go_on_after_every_process_of_an_idle_cluster_is_killed(make_workflow, settings):
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    version = make_workflow(chain(STEP, END))
    env = child_env(BOSUN_WORKERS="2")
    cluster = spawn("worker", env=env)
    sweeper = spawn("sweeper", "--interval", "0.2", env=env)
    try:
        first = engine.start_run(workflow=version.workflow, input={"n": 0}).run.pk
        _finish([first], 60)
        # Two workers waiting for a task (one of them holding the task
        # queue's read lock), the pusher and the monitor.
        for pid in _processes_of(cluster.pid, 4):
            os.kill(pid, signal.SIGKILL)
        ids = [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(1, 6)
        ]
        _finish(ids, 60)
    finally:
        log = stop(cluster) + stop(sweeper)
    assert Run.objects.filter(pk__in=[first, *ids], status="succeeded").count() == 6, log
    assert "exited unasked" in log, log


def test_the_run_of_a_killed_worker_is_taken_over_without_waiting_out_its_lease(
    make_workflow, settings
):
    """The sentinel saw the worker die: it ends that worker's leases at once.
    With a 10-minute lease, the run can only finish within the minute that way."""
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    slow = {
        "key": "s1",
        "kind": "tool",
        "config": {"tool": "test.count", "args": {"sleep_s": 2.0}},
        "timeout_s": 10.0,
    }
    version = make_workflow(chain(slow, END))
    env = child_env(BOSUN_WORKERS="2", BOSUN_LEASE_S="600")
    cluster = spawn("worker", env=env)
    sweeper = spawn("sweeper", "--interval", "0.2", env=env)
    try:
        run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
        victim = wait_until(
            lambda: Execution.objects.filter(run_id=run_id).values_list("pid", flat=True).first(),
            within_s=60,
            what="the step never started",
        )
        os.kill(victim, signal.SIGKILL)  # mid-step, holding the run's lease
        _finish([run_id], 60)
    finally:
        log = stop(cluster) + stop(sweeper)
    assert Run.objects.get(pk=run_id).status == "succeeded", log
    pids = list(
        Execution.objects.filter(run_id=run_id).order_by("id").values_list("pid", flat=True)
    )
    assert len(pids) == 2 and pids[0] == victim != pids[1], (pids, log)


def test_a_term_to_the_whole_process_group_twice_stops_the_cluster():
    """Ctrl-C reaches every process of the group, and a supervisor may add
    its own TERM: django-q2's cluster could hang in its stop, waiting on a
    lock its killed sentinel held."""
    cluster = spawn("worker", env=child_env(BOSUN_WORKERS="2"))
    try:
        _processes_of(cluster.pid, 4)  # up: sentinel, two workers, pusher, monitor
        os.killpg(cluster.pid, signal.SIGTERM)  # every process of the group
        os.kill(cluster.pid, signal.SIGTERM)  # and the supervisor's own
        cluster.wait(timeout=60)
    finally:
        output = stop(cluster)
    assert cluster.returncode is not None, output
    assert not children(cluster.pid)
