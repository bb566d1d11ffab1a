"""Races on the graph that only PostgreSQL with real connections can show.

Each contender is a thread with its own database session (the test
server allows 250), released at once by a barrier.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connections

from knowledge import services
from knowledge.models import DedupRecord, Event
from runs.engine.registry import KINDS
from runs.models import Run
from tests.conftest import race
from tests.knowledge.conftest import context

pytestmark = [pytest.mark.postgres_only, pytest.mark.django_db(transaction=True)]
SESSIONS = 100


def bounded(work):
    """`work(i)` holding one of SESSIONS database sessions, closed after."""
    sessions = threading.BoundedSemaphore(SESSIONS)

    def run(index: int):
        with sessions:
            try:
                return work(index)
            finally:
                connections.close_all()

    return run


def attempt_gate(run_ids: list[int], **config):
    kind = KINDS["dedup"]
    config = kind.Config.model_validate({"key": "{{ input.domain }}", "scope": "lead", **config})
    return bounded(
        lambda i: kind.execute(config, context(run_ids[i], step_key="gate", domain="acme.com"))
    )


def test_100_concurrent_dedup_attempts_with_one_key_let_exactly_one_through(make_runs):
    run_ids = make_runs(100)
    connections.close_all()
    results = race(100, attempt_gate(run_ids))
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors == []
    winners = [run_ids[i] for i, r in enumerate(results) if r.edge == "next"]
    duplicates = [r for r in results if r.edge == "duplicate"]
    assert len(winners) == 1 and len(duplicates) == 99
    assert {r.output["first_run"] for r in duplicates} == set(winners)
    assert list(DedupRecord.objects.values_list("run_id", flat=True)) == winners


def test_concurrent_takeovers_of_an_expired_key_let_exactly_one_through(make_runs):
    old, *run_ids = make_runs(41)
    record = services.claim_dedup(
        scope="lead", key="acme.com", run_id=old, seq=1, step_key="gate", window_s=60
    ).record
    DedupRecord.objects.filter(pk=record.pk).update(
        expires_at=record.first_seen_at - timedelta(seconds=1)
    )
    connections.close_all()
    results = race(40, attempt_gate(run_ids, window_s=3600))
    assert [r for r in results if isinstance(r, Exception)] == []
    took_over = [run_ids[i] for i, r in enumerate(results) if r.edge == "next"]
    assert len(took_over) == 1
    assert sum(r.edge == "duplicate" for r in results) == 39
    assert DedupRecord.objects.get().run_id == took_over[0]


def test_concurrent_takeovers_of_a_key_held_by_a_failed_run_let_exactly_one_through(make_runs):
    dead, *run_ids = make_runs(41)
    services.claim_dedup(scope="lead", key="acme.com", run_id=dead, seq=1, step_key="gate")
    Run.objects.filter(pk=dead).update(status="failed")
    connections.close_all()
    results = race(40, attempt_gate(run_ids))
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sum(r.edge == "next" for r in results) == 1
    assert {r.output["first_run"] for r in results if r.edge == "duplicate"} == {
        DedupRecord.objects.get().run_id
    }


def test_concurrent_corrections_of_one_event_make_exactly_one(paused_type):
    acme = services.upsert_entity(type="account", key="acme")
    event = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="founder asked",
        actor_label="ops",
    )
    connections.close_all()
    results = race(
        20,
        bounded(
            lambda i: services.supersede_event(
                event=event,
                payload={"until": f"2025-08-{i + 1:02d}"},
                reason=f"fix {i}",
                actor_label=f"ops{i}",
            )
        ),
    )
    made = [r for r in results if isinstance(r, Event)]
    refused = [r for r in results if isinstance(r, services.AlreadySuperseded)]
    assert len(made) == 1 and len(refused) == 19
    assert Event.objects.get(supersedes=event).pk == made[0].pk
