"""The tool-call ledger: a write happens at most once, across crashes."""

from __future__ import annotations

import pytest

from runs import engine
from runs.models import Run, ToolCallRecord
from tests.clock import lapse_lease
from tests.conftest import chain, drive
from tests.testapp.models import Execution

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def _unsafe(crash_after: bool) -> dict:
    return {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "test.unsafe_send", "args": {"crash_after": crash_after}},
    }


@pytest.mark.django_db
def test_an_unknown_unsafe_write_waits_for_a_person_who_settles_it(make_workflow):
    version = make_workflow(chain(_unsafe(False), END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    # As if a worker died between the send and the checkpoint.
    ToolCallRecord.objects.create(
        run=run,
        seq=1,
        step_key="send",
        tool="test.unsafe_send",
        side_effect="write_unsafe",
        idempotency_key=f"bosun-run-{run.pk}-seq-1",
        args={"to": "someone", "crash_after": False},
        args_hash="x",
        status="started",
        calls=1,
        started_at=run.created_at,
    )
    run = drive(run.pk)
    assert (run.status, run.wait_reason) == ("waiting", "needs_reconciliation")
    assert not Execution.objects.exists()
    record = ToolCallRecord.objects.get(run=run)
    assert record.status == "unknown"
    with pytest.raises(engine.InvalidState):
        engine.reconcile_tool_call(record_id=record.pk, happened=True, note="", by="ana")
    engine.reconcile_tool_call(
        record_id=record.pk,
        happened=True,
        result={"sent": True},
        note="found it in the outbox",
        by="ana",
    )
    run = drive(run.pk)
    assert run.status == "succeeded"
    assert not Execution.objects.exists(), "settled as sent: never sent again"


@pytest.mark.django_db
def test_an_unknown_write_settled_as_not_sent_is_sent_once(make_workflow):
    version = make_workflow(chain(_unsafe(False), END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    ToolCallRecord.objects.create(
        run=run, seq=1, step_key="send", tool="test.unsafe_send", side_effect="write_unsafe",
        idempotency_key=f"bosun-run-{run.pk}-seq-1", args={}, args_hash="x", status="started",
        calls=1, started_at=run.created_at,
    )  # fmt: skip
    drive(run.pk)
    record = ToolCallRecord.objects.get(run=run)
    engine.reconcile_tool_call(record_id=record.pk, happened=False, note="not in outbox", by="ana")
    run = drive(run.pk)
    assert run.status == "succeeded"
    assert Execution.objects.count() == 1
    assert ToolCallRecord.objects.get(run=run).calls == 2


@pytest.mark.django_db
def test_an_idempotent_write_after_a_crash_is_called_again_with_the_same_key(make_workflow):
    step = {"key": "send", "kind": "tool", "config": {"tool": "test.send"}}
    version = make_workflow(chain(step, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    key = f"bosun-run-{run.pk}-seq-1"
    ToolCallRecord.objects.create(
        run=run, seq=1, step_key="send", tool="test.send", side_effect="write_idempotent",
        idempotency_key=key, args={}, args_hash="x", status="started", calls=1,
        started_at=run.created_at,
    )  # fmt: skip
    run = drive(run.pk)
    assert run.status == "succeeded"
    record = ToolCallRecord.objects.get(run=run)
    assert (record.status, record.calls, record.idempotency_key) == ("succeeded", 2, key)


@pytest.mark.postgres_only
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_20_crashes_after_an_unsafe_send_never_send_twice(make_workflow):
    from tests.processes import child_env, spawn

    version = make_workflow(chain(_unsafe(True), END))
    ids = [engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(20)]
    env = child_env(BOSUN_LEASE_S="600")  # the dead workers hold their runs
    pending = list(ids)
    while pending:
        batch, pending = pending[:4], pending[4:]
        workers = [spawn("advance_run", str(run_id), env=env) for run_id in batch]
        for worker in workers:
            worker.wait(timeout=60)
            assert worker.returncode == 137, worker.stdout.read()
    assert Execution.objects.count() == 20, "each run sent once, then its worker died"
    for run_id in ids:
        # The dead worker's lease holds the run until it ends.
        assert engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED
        lapse_lease(run_id)
        run = drive(run_id)
        assert (run.status, run.wait_reason) == ("waiting", "needs_reconciliation")
    assert Execution.objects.count() == 20, "no second send"
    assert set(ToolCallRecord.objects.values_list("status", flat=True)) == {"unknown"}
    assert Run.objects.filter(pk__in=ids, status="running").count() == 0


@pytest.mark.django_db
def test_an_operator_settles_an_unknown_call_in_admin_and_the_run_resumes(make_workflow, client):
    from django.contrib.auth.models import Group, User

    version = make_workflow(chain(_unsafe(False), END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    ToolCallRecord.objects.create(
        run=run, seq=1, step_key="send", tool="test.unsafe_send", side_effect="write_unsafe",
        idempotency_key=f"bosun-run-{run.pk}-seq-1", args={}, args_hash="x", status="started",
        calls=1, started_at=run.created_at,
    )  # fmt: skip
    drive(run.pk)
    record = ToolCallRecord.objects.get(run=run)
    url = f"/admin/runs/toolcallrecord/{record.pk}/change/reconcile/"
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.groups.add(Group.objects.get(name="viewer"))
    client.force_login(viewer)
    assert client.get(url).status_code == 403
    operator = User.objects.create_user("op", password="x", is_staff=True)
    operator.groups.add(Group.objects.get(name="operator"))
    client.force_login(operator)
    assert (
        "Settle this call"
        in client.get(f"/admin/runs/toolcallrecord/{record.pk}/change/").content.decode()
    )
    page = client.post(url, {"happened": "no", "result": "", "note": ""})
    assert page.status_code == 200 and "This field is required" in page.content.decode()
    client.post(url, {"happened": "no", "result": "", "note": "not in the outbox"})
    record.refresh_from_db()
    assert (record.status, record.reconciled_by) == ("failed", "op")
    assert drive(run.pk).status == "succeeded"
    assert Execution.objects.count() == 1
