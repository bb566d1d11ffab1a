"""Races that only a real database with real connections can show."""

from __future__ import annotations

import pytest
from django.db import connection

from approvals.models import ApprovalRequest
from runs import engine
from runs.engine import store
from runs.models import Run
from tests.conftest import chain, drive, race, waiting_for_review

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def test_20_concurrent_starts_with_one_idempotency_key_create_one_run(make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    results = race(
        20,
        lambda i: engine.start_run(
            workflow=version.workflow, input={"lead": "acme"}, idempotency_key="lead-acme"
        ),
    )
    assert all(isinstance(r, engine.Started) for r in results), results
    assert Run.objects.count() == 1
    assert sum(r.created for r in results) == 1
    assert {r.run.pk for r in results} == {Run.objects.get().pk}


def test_concurrent_claims_of_one_run_give_it_to_exactly_one_worker(make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    results = race(16, lambda i: store.claim(run_id, worker=f"w{i}", lease_s=30))
    winners = [r for r in results if isinstance(r, store.RunState)]
    assert len(winners) == 1 and results.count(None) == 15
    assert Run.objects.get(pk=run_id).fence == 1


def test_50_concurrent_decisions_on_one_approval_make_one_decision(make_workflow, rung):
    run_id = waiting_for_review(make_workflow)
    approval = ApprovalRequest.objects.get(run_id=run_id)
    rung.clear()
    results = race(
        50,
        lambda i: engine.decide_approval(
            approval_id=approval.pk, approve=i % 2 == 0, reason=f"reviewer {i}", actor_label=f"r{i}"
        ),
    )
    won = [r for r in results if isinstance(r, ApprovalRequest)]
    lost = [r for r in results if isinstance(r, engine.AlreadyDecided)]
    assert len(won) == 1 and len(lost) == 49
    assert rung == [run_id]  # the run was woken once
    approval.refresh_from_db()
    assert approval.decided_by_label == won[0].decided_by_label
    assert drive(run_id).status == "succeeded"


def test_concurrent_sweepers_ring_each_due_run_once(make_workflow, rung):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    ids = [engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(30)]
    Run.objects.update(ring_at=None)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE runs_run SET ring_at = clock_timestamp() - interval '1 second'")
    rung.clear()
    results = race(6, lambda i: engine.sweep())
    swept = [run_id for batch in results for run_id in batch]
    assert sorted(swept) == sorted(ids)


def test_20_concurrent_starts_on_a_queue_of_5_admit_exactly_5(make_workflow):
    version = make_workflow(
        chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END), max_active_runs=5
    )
    results = race(20, lambda i: engine.start_run(workflow=version.workflow, input={"n": i}))
    started = [r for r in results if isinstance(r, engine.Started)]
    refused = [r for r in results if isinstance(r, engine.QueueFull)]
    assert (len(started), len(refused)) == (5, 15), results
    assert Run.objects.filter(workflow=version.workflow).count() == 5
