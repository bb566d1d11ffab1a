"""Heartbeats: a step, or a run of short steps, longer than the lease keeps
its run; a worker that lost its run learns it from the next beat. And what
leaving the lease to the beats buys: a step's update of its run touches no
index, and its statement is prepared once per connection (PostgreSQL)."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, ProgrammingError, connection, connections

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


@pytest.mark.django_db(transaction=True)
def test_a_run_of_short_steps_longer_than_its_lease_stays_with_its_worker(make_workflow, settings):
    """Checkpoints no longer renew the lease: the beats cover the whole
    hold, between steps too. Another claimer tries all along and never
    gets the run."""
    settings.BOSUN_HEARTBEAT_S = 0.25  # eight beats a lease: late beats are tolerated
    steps = [
        {"key": f"s{i}", "kind": "tool", "config": {"tool": "test.count", "args": {"sleep_s": 0.6}}}
        for i in range(5)
    ]
    version = make_workflow(chain(*steps, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    done = threading.Event()
    stolen: list[store.RunState] = []
    errors: list[BaseException] = []

    def unlocked(read):
        """SQLite's in-memory test database shares one cache between the
        threads' connections, and a table another connection is writing
        answers "database table is locked" at once (no busy timeout): that
        is an attempt that did not get through, tried again; any other
        error is the thief's."""
        try:
            return read()
        except OperationalError as exc:
            if "locked" not in str(exc):
                raise
            return None

    def thief() -> None:
        try:
            wait_until(lambda: unlocked(lambda: Run.objects.get(pk=run_id).lease_owner) == "holder")
            while not done.is_set():
                state = unlocked(
                    lambda: store.claim(run_id, worker="thief", lease_s=60, trace_id="")
                )
                if state is not None:
                    stolen.append(state)
                    return
                done.wait(0.05)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    other = threading.Thread(target=thief)
    other.start()
    try:
        # 3 s of steps under a 2 s lease.
        engine.advance_run(run_id, worker="holder", lease_s=2.0)
    finally:
        done.set()
        other.join()
    assert errors == []
    assert stolen == []
    assert Run.objects.get(pk=run_id).status == "succeeded"
    assert Execution.objects.filter(run_id=run_id).count() == 5


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_steps_update_of_its_run_is_a_hot_update(make_workflow):
    """Only the claim and the end change indexed columns of the run (its
    status and timers); every step between is written in place on its page,
    with no index touched."""
    steps = [{"key": f"e{i}", "kind": "tool", "config": {"tool": "echo"}} for i in range(8)]
    version = make_workflow(chain(*steps, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk

    def updates() -> tuple[int, int]:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_force_next_flush(), pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
                " WHERE relname = 'runs_run'"
            )
            return cursor.fetchone()

    before = updates()
    assert engine.advance_run(run_id, worker="w") == engine.Advance.FINISHED
    after = updates()
    updated, hot = after[0] - before[0], after[1] - before[1]
    assert updated == 10  # the claim, 8 echo steps, the end
    assert hot >= 8, (updated, hot)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_step_checkpoint_is_prepared_once_per_connection(make_workflow, settings):
    """The server plans the per-step statement once, not at every step."""
    settings.BOSUN_PG_PREPARE = True
    steps = [{"key": f"e{i}", "kind": "tool", "config": {"tool": "echo"}} for i in range(4)]
    version = make_workflow(chain(*steps, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    assert engine.advance_run(run_id, worker="w") == engine.Advance.FINISHED
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT generic_plans + custom_plans FROM pg_prepared_statements"
            " WHERE statement LIKE 'WITH upd AS (UPDATE runs_run%%INSERT INTO runs_steprun%%'"
        )
        executions = [row[0] for row in cursor.fetchall()]
    assert sum(executions) >= 3, executions  # the echo steps but the first share one statement


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_kept_cursor_follows_the_connection_and_its_errors_are_djangos(make_workflow, settings):
    """The hot path's statements go through one cursor kept with the
    connection: a new connection gets a new one, an error comes out as
    Django's, and an execute wrapper still sees every statement."""
    settings.BOSUN_PG_PREPARE = True
    steps = [{"key": f"e{i}", "kind": "tool", "config": {"tool": "echo"}} for i in range(3)]
    version = make_workflow(chain(*steps, END))
    first, second, third = (
        engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(3)
    )
    assert engine.advance_run(first, worker="w") == engine.Advance.FINISHED
    db = connections["default"]  # `connection` is a proxy of it
    kept = db.__dict__["_bosun_cursor"]
    connection.close()  # as the worker does between tasks when the server went away
    assert engine.advance_run(second, worker="w") == engine.Advance.FINISHED
    assert db.__dict__["_bosun_cursor"] is not kept
    assert db.__dict__["_bosun_cursor"].connection is db.connection

    with pytest.raises(ProgrammingError):
        store._prepared_row("SELECT no_such_column FROM runs_run", [])

    seen: list[str] = []

    def spy(execute, sql, params, many, context):
        seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        assert engine.advance_run(third, worker="w") == engine.Advance.FINISHED
    assert sum(sql.startswith("WITH upd AS (UPDATE runs_run") for sql in seen) == 4, seen
    statuses = Run.objects.filter(pk__in=[first, second, third]).values_list("status", flat=True)
    assert set(statuses) == {"succeeded"}


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_session_lost_between_tasks_is_replaced_before_the_claim(
    make_workflow, settings, monkeypatch
):
    """The server ends the worker's session between two tasks (a restart, a
    failover): the next task's claim connects again instead of failing, as
    through Django's own cursors (CONN_HEALTH_CHECKS)."""
    import psycopg
    from django.db import close_old_connections

    settings.BOSUN_PG_PREPARE = True
    version = make_workflow(chain({"key": "e", "kind": "tool", "config": {"tool": "echo"}}, END))
    first, second = (
        engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(2)
    )
    assert engine.advance_run(first, worker="w") == engine.Advance.FINISHED
    db = connections["default"]
    monkeypatch.setitem(db.settings_dict, "CONN_HEALTH_CHECKS", True)  # as in production
    lost = db.connection.info.backend_pid
    params = db.get_connection_params()
    params.pop("cursor_factory", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [lost])
    close_old_connections()  # what the queue does between two tasks
    assert engine.advance_run(second, worker="w") == engine.Advance.FINISHED
    assert db.connection.info.backend_pid != lost
