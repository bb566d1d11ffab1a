"""The audit log is append-only: PostgreSQL refuses changes, and the hash
chain shows any change made behind the triggers' back."""

from __future__ import annotations

import io
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from policies import audit
from policies.models import AuditEntry
from tests.conftest import race

pytestmark = pytest.mark.django_db

TABLE = AuditEntry._meta.db_table


def append(count: int) -> list[AuditEntry]:
    return [
        audit.record(
            action="run.retried",
            actor=f"user:u{i}",
            target_type="runs.run",
            target_id=i,
            data={"note": f"entry {i}", "amount": i * 10},
        )
        for i in range(1, count + 1)
    ]


def verify_command() -> str:
    out = io.StringIO()
    call_command("audit_verify", stdout=out)
    return out.getvalue()


@contextmanager
def behind_the_triggers(table: str = TABLE):
    """What someone who owns the table (or is superuser) can do: switch the
    append-only trigger off for a moment. Only the hash chain is left."""
    if connection.vendor != "postgresql":
        yield  # SQLite has no triggers to switch off
        return
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_update")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER {table}_no_update")


def tamper(sql: str, params: list) -> None:
    with behind_the_triggers(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount >= 1


def broken_at(position: int) -> str:
    with pytest.raises(CommandError) as failed:
        verify_command()
    message = str(failed.value)
    assert f"audit chain broken at row {position} " in message
    return message


def test_an_intact_chain_verifies_and_says_how_many_rows(db):
    append(5)
    assert verify_command().strip() == "audit chain intact: 5 row(s)"
    assert audit.verify() == (5, None)


def test_an_empty_log_verifies(db):
    assert verify_command().strip() == "audit chain intact: 0 row(s)"


def test_each_entry_carries_the_hash_of_the_one_before(db):
    first, second, third = append(3)
    assert first.prev_hash == audit.GENESIS
    assert (second.prev_hash, third.prev_hash) == (first.hash, second.hash)
    assert third.hash == audit.entry_hash(AuditEntry.objects.get(pk=third.pk))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_one_changed_byte_in_row_k_is_reported_at_row_k(db, k):
    entries = append(5)
    target = entries[k - 1]
    # "entry 3" -> "entry 8": one byte of the stored data.
    changed = {**target.data, "note": target.data["note"].replace(str(k), "8")}
    tamper(
        f"UPDATE {TABLE} SET data = {'%s::jsonb' if connection.vendor == 'postgresql' else '%s'}"
        " WHERE id = %s",
        [_json(changed), target.pk],
    )
    assert AuditEntry.objects.get(pk=target.pk).data["note"] == "entry 8"
    message = broken_at(k)
    assert f"(id {target.pk})" in message and "contents do not match" in message


def test_a_changed_actor_is_reported(db):
    entries = append(4)
    tamper(f"UPDATE {TABLE} SET actor = %s WHERE id = %s", ["user:mallory", entries[1].pk])
    broken_at(2)


def test_a_row_changed_with_its_hash_recomputed_breaks_the_next_link(db):
    entries = append(4)
    forged = AuditEntry.objects.get(pk=entries[1].pk)
    forged.actor = "user:mallory"
    tamper(
        f"UPDATE {TABLE} SET actor = %s, hash = %s WHERE id = %s",
        [forged.actor, audit.entry_hash(forged), forged.pk],
    )
    message = broken_at(3)
    assert "prev_hash does not match" in message


def test_a_deleted_row_is_reported_where_the_gap_is(db):
    entries = append(5)
    tamper(f"DELETE FROM {TABLE} WHERE id = %s", [entries[2].pk])
    message = broken_at(3)  # the row after the gap now stands third
    assert f"(id {entries[3].pk})" in message
    assert "prev_hash does not match" in message


def test_a_deleted_last_row_is_not_detectable_by_the_chain_alone(db):
    """The chain proves what is there; the last row's removal leaves a valid
    shorter chain. (PostgreSQL's trigger refuses the delete; see below.)"""
    entries = append(3)
    tamper(f"DELETE FROM {TABLE} WHERE id = %s", [entries[2].pk])
    assert verify_command().strip() == "audit chain intact: 2 row(s)"


def test_two_rows_swapped_are_reported_at_the_first(db):
    entries = append(4)
    second, third = (AuditEntry.objects.get(pk=e.pk) for e in entries[1:3])
    columns = ("at", "actor", "action", "target_type", "target_id", "prev_hash", "hash")
    with behind_the_triggers(), transaction.atomic():
        # Unique hashes: park the second row's hash while the rows trade places.
        AuditEntry.objects.filter(pk=second.pk).update(hash="x" * 64)
        AuditEntry.objects.filter(pk=third.pk).update(
            data=second.data, **{c: getattr(second, c) for c in columns}
        )
        AuditEntry.objects.filter(pk=second.pk).update(
            data=third.data, **{c: getattr(third, c) for c in columns}
        )
    message = broken_at(2)
    assert "prev_hash does not match" in message


def test_a_reordered_hash_is_reported(db):
    """Row k's stored hash moved to another row: both links break, the
    first is named."""
    entries = append(4)
    with behind_the_triggers(), transaction.atomic():
        AuditEntry.objects.filter(pk=entries[1].pk).update(hash="y" * 64)
        AuditEntry.objects.filter(pk=entries[2].pk).update(hash=entries[1].hash)
        AuditEntry.objects.filter(pk=entries[1].pk).update(hash=entries[2].hash)
    message = broken_at(2)
    assert "contents do not match" in message


def test_a_row_slipped_in_is_reported(db):
    entries = append(3)
    slipped = AuditEntry(
        at=entries[1].at,
        actor="user:mallory",
        action="run.retried",
        target_type="runs.run",
        target_id="99",
        data={},
        prev_hash=entries[2].hash,
    )
    slipped.hash = audit.entry_hash(slipped)
    # Appended correctly at the end, the row is part of a valid chain: only
    # inserting it out of order, before the rows it claims to follow, shows.
    with behind_the_triggers():
        # Past every id so far (PostgreSQL's sequence is not rolled back
        # with a test, so a fixed id may lie before these rows).
        AuditEntry.objects.filter(pk=entries[2].pk).update(id=entries[2].pk + 1000)
        slipped.id = entries[2].pk
        slipped.save(force_insert=True)
    broken_at(3)


@pytest.mark.postgres_only
def test_postgres_refuses_update_of_an_audit_row(db):
    (entry,) = append(1)
    refused = pytest.raises(DatabaseError, match="append-only")
    with refused, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"UPDATE {TABLE} SET actor = %s WHERE id = %s", ["x", entry.pk])
    assert AuditEntry.objects.get(pk=entry.pk).actor == "user:u1"


@pytest.mark.postgres_only
def test_postgres_refuses_delete_and_truncate_of_audit_rows(db):
    (entry,) = append(1)
    for sql in (f"DELETE FROM {TABLE} WHERE id = {entry.pk}", f"TRUNCATE {TABLE}"):
        refused = pytest.raises(DatabaseError, match="append-only")
        with refused, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditEntry.objects.filter(pk=entry.pk).exists()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEntry.objects.filter(pk=entry.pk).delete()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_keep_one_unbroken_chain():
    results = race(8, lambda i: audit.record(action="run.retried", actor=f"user:{i}"))
    assert not [r for r in results if isinstance(r, Exception)]
    assert audit.verify() == (8, None)


def _json(value) -> str:
    import json

    return json.dumps(value)
