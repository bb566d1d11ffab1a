"""Crash and zombie tests against real worker processes on PostgreSQL.

They start `manage.py worker` and `manage.py sweeper` (or a single
`advance_run`) as subprocesses on the test database, then kill or freeze
them, and count what was executed and what was committed.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from runs import engine
from runs.models import TERMINAL_STATUSES, Run, StepRun, ToolCallRecord
from tests.clock import lapse_lease
from tests.conftest import chain, drive
from tests.processes import alive, child_env, spawn, stop
from tests.testapp.models import Execution

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def test_runs_survive_workers_killed_at_random_and_commit_each_step_once(make_workflow, settings):
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    rng = random.Random(20261121)
    version = make_workflow(
        chain(
            *[
                {
                    "key": f"s{i}",
                    "kind": "tool",
                    "config": {"tool": "test.count", "args": {"sleep_s": 0.08}},
                    "timeout_s": 5.0,
                }
                for i in range(1, 6)
            ],
            END,
        )
    )
    env = child_env(BOSUN_LEASE_S="1.5", BOSUN_LEASE_MARGIN_S="0.5", BOSUN_WORKERS="3")
    cluster = spawn("worker", env=env)
    sweeper = spawn("sweeper", "--interval", "0.2", env=env)
    killed: set[int] = set()
    try:
        ids = [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(50)
        ]
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_STATUSES).exists():
                break
            time.sleep(rng.uniform(0.15, 0.5))
            if len(killed) >= 15:
                continue
            busy = [
                pid
                for pid in Execution.objects.order_by("-id").values_list("pid", flat=True)[:5]
                if pid not in killed and alive(pid)
            ]
            if busy:
                victim = rng.choice(busy)
                os.kill(victim, signal.SIGKILL)
                killed.add(victim)
    finally:
        log = stop(cluster) + stop(sweeper)

    assert len(killed) >= 10, f"only {len(killed)} kills landed\n{log[-3000:]}"
    statuses = Counter(Run.objects.filter(pk__in=ids).values_list("status", flat=True))
    assert statuses == {"succeeded": 50}, f"{statuses}\n{log[-3000:]}"
    for run_id in ids:
        committed = {
            s.step_key: s for s in StepRun.objects.filter(run_id=run_id, status="succeeded")
        }
        assert sorted(committed) == ["done", "s1", "s2", "s3", "s4", "s5"]
        assert sorted(s.seq for s in committed.values()) == [1, 2, 3, 4, 5, 6]
        for key in ("s1", "s2", "s3", "s4", "s5"):
            runs_of_step = list(
                Execution.objects.filter(run_id=run_id, step_key=key).order_by("id")
            )
            # A body ran again only because the process running it died
            # before its checkpoint: every execution but the last was killed...
            assert all(e.pid in killed for e in runs_of_step[:-1]), (run_id, key)
            # ...and nothing ran after the step had committed.
            assert runs_of_step[-1].created_at <= committed[key].finished_at
    reexecuted = Execution.objects.count() - 50 * 5
    print(f"kills={len(killed)} re-executed step bodies={reexecuted}")
    assert reexecuted <= len(killed)


class _Zombie:
    output = ""


def _stopped(pid: int) -> bool:
    """The process is stopped by a signal (state T in /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


@contextmanager
def _frozen_zombie(run_id: int) -> Iterator[_Zombie]:
    """`advance_run` in a process of its own, frozen inside its step's tool
    call: the tool stops its own process (its `freeze` argument) right
    after counting the execution, so the freeze falls there however slow
    the machine is, not seconds later past the step's time limit. Woken (SIGCONT) and waited for when the block
    ends, its output then in `.output`. Its lease is long: it ends when the
    test lapses it, not by the clock."""
    zombie = _Zombie()
    process = spawn(
        "advance_run", str(run_id), "--worker", "zombie", env=child_env(BOSUN_LEASE_S="600")
    )
    try:
        deadline = time.monotonic() + 30
        while not _stopped(process.pid):
            assert time.monotonic() < deadline and process.poll() is None, process.stdout.read()
            time.sleep(0.01)
        assert Execution.objects.filter(run_id=run_id).count() == 1  # inside the call
        yield zombie
        os.kill(process.pid, signal.SIGCONT)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGCONT)
        zombie.output = stop(process)


def test_a_paused_worker_cannot_commit_after_its_run_was_taken_over(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "slow",
                "kind": "tool",
                "config": {"tool": "test.count", "args": {"sleep_s": 2.0, "freeze": True}},
                "timeout_s": 5.0,
            },
            END,
        )
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    with _frozen_zombie(run_id) as zombie:  # frozen mid-step, holding a lease
        assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED  # the lease holds
        lapse_lease(run_id)  # ... until it ends, the zombie still frozen
        assert drive(run_id).status == "succeeded"  # another worker took over
    output = zombie.output
    assert output.strip().splitlines()[-1] == "lease_lost", output
    steps = list(StepRun.objects.filter(run_id=run_id).values_list("step_key", "status", "worker"))
    assert [(k, s) for k, s, _ in steps] == [("slow", "succeeded"), ("done", "succeeded")]
    assert all(worker != "zombie" for _, _, worker in steps)
    assert Execution.objects.filter(run_id=run_id).count() == 2  # the zombie's never committed


def test_a_frozen_worker_woken_after_a_takeover_leaves_the_ledger_as_the_new_owner_wrote_it(
    make_workflow,
):
    """Frozen inside a write past its lease, the worker wakes after another
    finished the call and the run: its time limit fires mid-call, and the
    outcome it would record (unknown) must not overwrite the ledger."""
    version = make_workflow(
        chain(
            {
                "key": "send",
                "kind": "tool",
                "config": {
                    "tool": "test.hang_once_send",
                    "args": {"first_sleep_s": 60.0, "freeze": True},
                },
                "timeout_s": 3.0,
            },
            END,
        )
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    with _frozen_zombie(run_id) as zombie:  # frozen inside the vendor call
        lapse_lease(run_id)
        assert drive(run_id).status == "succeeded"  # the new owner asked again: sent
        record = ToolCallRecord.objects.get(run_id=run_id)
        assert (record.status, record.result, record.calls) == ("succeeded", {"sent": True}, 2)
    # Woken, its 3 s time limit fired inside the call.
    output = zombie.output
    assert output.strip().splitlines()[-1] == "lease_lost", output
    assert "taken over; not recorded" in output, output
    record.refresh_from_db()
    assert (record.status, record.result, record.error) == ("succeeded", {"sent": True}, "")
