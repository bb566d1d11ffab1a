"""crm.upsert and crm.get on the built-in store."""

from __future__ import annotations

import pytest
from django.db.models import QuerySet

from runs.models import CrmRecord
from runs.tools import crm
from tests.conftest import race
from tests.tools import tool_call


def upsert(key: str, external_id: str = "acme", mode: str = "merge", **data):
    tool = crm.CrmUpsert()
    args = tool.Args(object_type="company", external_id=external_id, data=data, mode=mode)
    return tool.run(args, tool_call(key))


def get(external_id: str = "acme"):
    tool = crm.CrmGet()
    return tool.run(tool.Args(object_type="company", external_id=external_id), tool_call())


@pytest.mark.django_db
def test_upsert_creates_the_record_then_merges_into_it():
    first = upsert("k1", name="Acme", stage="lead")
    assert first.created and first.writes == 1 and first.data == {"name": "Acme", "stage": "lead"}
    second = upsert("k2", stage="customer")
    assert not second.created and second.writes == 2
    assert second.data == {"name": "Acme", "stage": "customer"}


@pytest.mark.django_db
def test_replace_mode_drops_the_keys_it_does_not_name():
    upsert("k1", name="Acme", stage="lead")
    assert upsert("k2", mode="replace", stage="customer").data == {"stage": "customer"}


@pytest.mark.django_db
def test_the_same_idempotency_key_twice_writes_once_and_answers_the_same():
    first = upsert("bosun-run-1-seq-4", name="Acme")
    again = upsert("bosun-run-1-seq-4", name="Acme")
    assert again == first
    assert CrmRecord.objects.get().writes == 1


@pytest.mark.django_db
def test_a_replayed_key_of_an_update_answers_what_the_update_answered():
    upsert("k1", name="Acme")
    update = upsert("k2", stage="customer")
    assert upsert("k2", stage="customer") == update
    assert CrmRecord.objects.get().writes == 2


@pytest.mark.django_db
def test_get_reads_a_record_and_reports_a_missing_one():
    upsert("k1", name="Acme")
    found = get()
    assert found.found and found.data == {"name": "Acme"} and found.writes == 1
    missing = get("globex")
    assert not missing.found and missing.data == {}


@pytest.mark.django_db
def test_a_create_that_loses_the_race_to_the_constraint_becomes_an_update(monkeypatch):
    # Another worker's row appears after our lookup missed it: our insert
    # hits the unique constraint, and the second try updates their row.
    CrmRecord.objects.create(
        object_type="company", external_id="acme", data={"by": "other"}, writes=1
    )
    real_first = QuerySet.first
    lookups = iter([None])
    monkeypatch.setattr(QuerySet, "first", lambda qs: next(lookups, None) or real_first(qs))
    result = upsert("k1", name="Acme")
    assert not result.created and result.writes == 2
    assert result.data == {"by": "other", "name": "Acme"}
    assert CrmRecord.objects.count() == 1


# Threads race on real connections: SQLite's in-memory test database
# answers "table is locked" instead of waiting, so PostgreSQL only.
@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_upserts_of_one_record_make_one_row_and_count_every_write():
    results = race(8, lambda i: upsert(f"key-{i}", **{f"field_{i}": i}))
    assert all(isinstance(r, crm.RecordResult) for r in results), results
    record = CrmRecord.objects.get()
    assert record.writes == 8 and sum(r.created for r in results) == 1
    assert record.data == {f"field_{i}": i for i in range(8)}


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_upserts_with_one_key_write_once():
    results = race(8, lambda i: upsert("bosun-run-3-seq-1", name="Acme"))
    assert all(isinstance(r, crm.RecordResult) for r in results), results
    assert CrmRecord.objects.get().writes == 1
    assert len({r.model_dump_json() for r in results}) == 1
