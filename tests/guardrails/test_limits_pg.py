"""Limits and the kill switch against real worker processes on PostgreSQL."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db.models import Q

from policies.models import Limit, RateGrant
from runs import engine
from runs.engine.switches import set_switch
from runs.models import TERMINAL_STATUSES, Run, StepRun, ToolCallRecord
from tests.conftest import chain
from tests.processes import child_env, spawn, stop
from tests.testapp.models import Execution, Gauge

pytestmark = [pytest.mark.postgres_only, pytest.mark.slow, pytest.mark.django_db(transaction=True)]
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def _inflight(key: str = "call", sleep_s: float = 0.1) -> dict:
    return {
        "key": key,
        "kind": "tool",
        "config": {"tool": "test.inflight", "args": {"sleep_s": sleep_s}},
        "timeout_s": 10.0,
    }


def _finish(ids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not Run.objects.filter(pk__in=ids).exclude(status__in=TERMINAL_STATUSES).exists():
            return
        time.sleep(0.2)


def _workers(**env):
    env = child_env(BOSUN_WORKERS="4", **env)
    return spawn("worker", env=env), spawn("sweeper", "--interval", "0.1", env=env)


def test_a_cap_of_3_holds_across_worker_processes_and_all_50_runs_finish(make_workflow, settings):
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    Limit.objects.create(key="vendor:test", max_in_flight=3)
    version = make_workflow(chain(_inflight(sleep_s=0.15), END))
    cluster, sweeper = _workers()
    # A second cluster: two machines' worth of processes on one database.
    second = spawn("worker", env=child_env(BOSUN_WORKERS="4"))
    try:
        ids = [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(50)
        ]
        _finish(ids, 180)
    finally:
        for process in (cluster, sweeper, second):
            stop(process)
    assert Run.objects.filter(pk__in=ids, status="succeeded").count() == 50
    gauge = Gauge.objects.get(key="vendor:test")
    print(f"cap: peak in flight {gauge.peak}")
    assert gauge.peak == 3, f"peak in flight {gauge.peak}"
    assert Execution.objects.count() == 50
    pids = set(Execution.objects.values_list("pid", flat=True))
    assert len(pids) >= 3, "the calls should have been spread over several processes"
    # Runs that found the cap full waited without failing: every run has
    # exactly one succeeded tool step.
    assert StepRun.objects.filter(step_key="call", status="succeeded").count() == 50


def test_a_rate_of_10_per_6s_is_never_exceeded_and_the_limit_is_used(make_workflow, settings):
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    Limit.objects.create(key="vendor:test", rate=10, period_s=6.0)
    version = make_workflow(chain(_inflight(sleep_s=0.0), END))
    cluster, sweeper = _workers(BOSUN_RATE_GRANT_RETENTION_S="600")
    try:
        ids = [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(60)
        ]
        _finish(ids, 120)
    finally:
        stop(cluster)
        stop(sweeper)
    assert Run.objects.filter(pk__in=ids, status="succeeded").count() == 60
    assert Execution.objects.count() == 60
    # The grants are the calls let through, each followed by exactly one
    # execution (the workers were told to keep the whole grant log).
    starts = sorted(
        RateGrant.objects.filter(key="vendor:test").values_list("granted_at", flat=True)
    )
    assert len(starts) == 60
    window = timedelta(seconds=6)
    worst = max(sum(1 for t in starts if s <= t < s + window) for s in starts)
    assert worst <= 10, f"{worst} calls in one 6 s window"
    span = (starts[-1] - starts[0]).total_seconds()
    # 60 calls at 10 per 6 s: the first 10 go at once, the other 50 need
    # 5 periods. Throughput over those periods against the limit:
    throughput = (60 - 10) / span
    print(f"rate: worst 6 s window {worst}, throughput {throughput / (10 / 6):.1%} of the limit")
    assert throughput >= 0.9 * (10 / 6), f"{throughput:.3f}/s of {10 / 6:.3f}/s"


def test_no_write_starts_after_the_kill_switch_commits_and_lifting_it_resumes(
    make_workflow, settings
):
    """Writes read the switches at the moment of the call, with their ledger
    row (a free read obeys the switches as its step started: see
    test_policies.py)."""
    settings.BOSUN_DOORBELL = "runs.tasks.ring"
    steps = [
        {
            "key": f"s{i}",
            "kind": "tool",
            "config": {"tool": "test.hang_once_send", "args": {"first_sleep_s": 0.05}},
            "timeout_s": 10.0,
        }
        for i in range(1, 9)
    ]
    version = make_workflow(chain(*steps, END))
    cluster, sweeper = _workers()
    try:
        ids = [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(12)
        ]
        deadline = time.monotonic() + 30
        while Execution.objects.count() < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        set_switch(scope="global", engaged=True, reason="vendor incident", by="oncall")
        last_before = ToolCallRecord.objects.order_by("-pk").values_list("pk", flat=True).first()
        calls_at_switch = ToolCallRecord.objects.count()
        # Every run stops at the switch: parked as paused, unless it had ended.
        stopped = Q(status__in=TERMINAL_STATUSES) | Q(status="waiting", wait_reason="paused")
        deadline = time.monotonic() + 60
        while Run.objects.filter(pk__in=ids).exclude(stopped).exists():
            assert time.monotonic() < deadline, "runs did not stop at the switch"
            time.sleep(0.05)
        assert ToolCallRecord.objects.filter(pk__gt=last_before).count() == 0
        assert Execution.objects.count() == calls_at_switch
        paused = Run.objects.filter(pk__in=ids, wait_reason="paused").count()
        assert paused > 0
        assert (
            not Run.objects.filter(pk__in=ids, status__in=TERMINAL_STATUSES)
            .exclude(status="succeeded")
            .exists()
        )
        set_switch(scope="global", engaged=False, reason="vendor recovered", by="oncall")
        _finish(ids, 90)
    finally:
        stop(cluster)
        stop(sweeper)
    assert Run.objects.filter(pk__in=ids, status="succeeded").count() == 12
    # Resumed where they were: every step ran exactly once per run.
    assert Execution.objects.count() == 12 * 8
