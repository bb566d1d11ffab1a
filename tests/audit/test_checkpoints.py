"""Signed checkpoints anchor the chain's head outside the table: whoever can
rewrite the table (its owner, a superuser; on SQLite anyone with the file)
can no longer delete a tail or re-hash the chain unnoticed."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from policies import audit, audit_checkpoints, tasks
from policies.models import AuditCheckpoint, AuditEntry
from tests.audit.test_chain import append, behind_the_triggers

pytestmark = pytest.mark.django_db

CHECKPOINTS = AuditCheckpoint._meta.db_table


def verify(*args: str) -> str:
    out = io.StringIO()
    call_command("audit_verify", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue().strip()


def findings(*args: str) -> str:
    with pytest.raises(CommandError) as failed:
        verify(*args)
    return str(failed.value)


def rehash_from(entry: AuditEntry) -> None:
    """What the table's owner can do after editing a row: recompute every
    hash from that row on, so that the chain alone holds again."""
    running = AuditEntry.objects.filter(id__lt=entry.pk).order_by("-id").first()
    previous = running.hash if running else audit.GENESIS
    with behind_the_triggers():
        for row in AuditEntry.objects.filter(id__gte=entry.pk).order_by("id"):
            new = audit.entry_hash(row, prev_hash=previous)
            AuditEntry.objects.filter(pk=row.pk).update(prev_hash=previous, hash=new)
            previous = new


def delete_entries_after(entry_id: int) -> None:
    with behind_the_triggers():
        AuditEntry.objects.filter(id__gt=entry_id).delete()


def test_a_checkpoint_signs_the_chains_head(db):
    entries = append(3)
    checkpoint = audit_checkpoints.take_checkpoint()
    assert (checkpoint.last_id, checkpoint.last_hash, checkpoint.count) == (
        entries[-1].pk,
        entries[-1].hash,
        3,
    )
    assert checkpoint.key_id == audit_checkpoints.key_id()
    assert checkpoint.mac == audit_checkpoints.checkpoint_mac(
        at=checkpoint.at,
        last_id=entries[-1].pk,
        last_hash=entries[-1].hash,
        count=3,
        key=checkpoint.key_id,
    )
    assert verify() == "audit chain intact: 3 row(s); 1 checkpoint(s) match"


def test_a_deleted_tail_is_reported_naming_where_the_log_now_ends(db):
    entries = append(5)
    audit_checkpoints.take_checkpoint()
    delete_entries_after(entries[2].pk)
    assert audit.verify() == (3, None)  # the chain alone sees nothing
    message = findings()
    assert "deleted tail" in message
    assert f"vouches for entry id {entries[4].pk}" in message
    assert f"the log ends at id {entries[2].pk} after 3 entries" in message
    assert f"2 entries after id {entries[2].pk} gone" in message


def test_a_chain_rehashed_after_an_edit_is_reported_between_two_checkpoints(db):
    entries = append(2)
    audit_checkpoints.take_checkpoint()
    entries += append(4)
    audit_checkpoints.take_checkpoint()
    with behind_the_triggers():
        AuditEntry.objects.filter(pk=entries[3].pk).update(data={"note": "nothing happened"})
    rehash_from(entries[3])
    assert audit.verify() == (6, None)  # the chain alone holds again
    message = findings()
    assert "re-hashed chain" in message
    assert f"after id {entries[1].pk}" in message and f"up to id {entries[5].pk}" in message


def test_the_whole_chain_rehashed_from_its_first_entry_is_reported(db):
    entries = append(4)
    audit_checkpoints.take_checkpoint()
    with behind_the_triggers():
        AuditEntry.objects.filter(pk=entries[0].pk).update(actor="user:mallory")
    rehash_from(entries[0])
    assert audit.verify() == (4, None)
    message = findings()
    assert "re-hashed chain" in message and f"up to id {entries[3].pk}" in message


def test_an_entry_deleted_and_the_rest_rehashed_is_reported_as_gone(db):
    entries = append(3)
    audit_checkpoints.take_checkpoint()
    entries += append(2)
    with behind_the_triggers():
        AuditEntry.objects.filter(pk=entries[2].pk).delete()
    rehash_from(entries[3])
    assert audit.verify() == (4, None)
    message = findings()
    assert f"names entry id {entries[2].pk}, which is gone" in message


def test_an_edit_without_rehash_is_reported_by_the_chain_and_the_checkpoint(db):
    entries = append(3)
    audit_checkpoints.take_checkpoint()
    with behind_the_triggers():
        AuditEntry.objects.filter(pk=entries[1].pk).update(actor="user:mallory")
    message = findings()
    assert "audit chain broken at row 2 " in message
    assert "changed entries" in message and f"up to id {entries[2].pk}" in message


def test_a_checkpoint_with_a_wrong_hmac_is_reported(db):
    """The owner deletes a tail and writes a checkpoint of the shorter chain
    to cover it; without the key its MAC cannot be right."""
    entries = append(4)
    real = audit_checkpoints.take_checkpoint()
    delete_entries_after(entries[1].pk)
    forged = AuditCheckpoint.objects.create(
        at=real.at,
        last_id=entries[1].pk,
        last_hash=entries[1].hash,
        count=2,
        key_id=real.key_id,
        mac=real.mac,
    )
    message = findings()
    assert f"forged checkpoint: checkpoint #{forged.pk}" in message
    assert "does not match its signature" in message
    assert "deleted tail" in message  # the real one still shows the truncation


def test_a_checkpoint_signed_with_another_key_is_reported(db, settings):
    append(2)
    settings.BOSUN_AUDIT_KEY = "k" * 40
    other = audit_checkpoints.take_checkpoint()
    settings.BOSUN_AUDIT_KEY = "a-different-key-of-forty-characters-----"
    message = findings()
    assert f"forged checkpoint: checkpoint #{other.pk}" in message
    assert f"signed with key {other.key_id}" in message


def test_the_key_is_derived_from_secret_key_unless_set(settings):
    settings.BOSUN_AUDIT_KEY = ""
    derived = audit_checkpoints.key_id()
    settings.SECRET_KEY = "another-secret-key"
    assert audit_checkpoints.key_id() != derived
    settings.BOSUN_AUDIT_KEY = "x" * 32
    own = audit_checkpoints.key_id()
    settings.SECRET_KEY = "yet-another-secret-key"
    assert audit_checkpoints.key_id() == own


def test_a_short_audit_key_is_refused_at_start_up():
    env = {**os.environ, "DEBUG": "1", "BOSUN_AUDIT_KEY": "too-short"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    started = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    assert "BOSUN_AUDIT_KEY must be at least 32 characters" in started.stderr


def test_an_exported_checkpoint_shows_a_tail_deleted_with_the_checkpoints(db, tmp_path):
    """The owner can empty the checkpoint table too: the exported file is
    what still speaks."""
    path = tmp_path / "checkpoints.jsonl"
    entries = append(4)
    out = io.StringIO()
    call_command("audit_checkpoint", export=str(path), stdout=out)
    (line,) = path.read_text().splitlines()
    exported = json.loads(line)
    assert exported["last_id"] == entries[3].pk and exported["count"] == 4
    assert f"appended to {path}" in out.getvalue()
    assert verify("--checkpoints", str(path)) == (
        "audit chain intact: 4 row(s); 1 checkpoint(s) match"
    )

    delete_entries_after(entries[0].pk)
    with behind_the_triggers(CHECKPOINTS):
        AuditCheckpoint.objects.all().delete()
    assert verify() == "audit chain intact: 1 row(s)"  # nothing left in the database
    message = findings("--checkpoints", str(path))
    assert "deleted tail: checkpoints.jsonl line 1" in message
    assert f"the log ends at id {entries[0].pk} after 1 entry: 3 entries after" in message
    assert "is missing from the checkpoint table" in message


def test_a_forged_or_unreadable_line_in_an_exported_file_is_reported(db, tmp_path):
    path = tmp_path / "checkpoints.jsonl"
    entries = append(2)
    call_command("audit_checkpoint", export=str(path), stdout=io.StringIO())
    exported = json.loads(path.read_text())
    exported["last_hash"] = entries[0].hash
    with open(path, "a") as file:
        file.write(json.dumps(exported) + "\n" + "not json\n")
    message = findings("--checkpoints", str(path))
    assert "forged checkpoint: checkpoints.jsonl line 2" in message
    assert "checkpoints.jsonl line 3 is not a checkpoint" in message
    assert "checkpoints.jsonl line 1" not in message  # the genuine one holds


def test_the_schedule_checkpoints_a_grown_log_and_appends_to_the_file(db, settings, tmp_path):
    from django_q.models import Schedule

    schedule = Schedule.objects.get(name="bosun-audit-checkpoint")
    assert schedule.func == "policies.tasks.audit_checkpoint" and schedule.repeats == -1
    settings.BOSUN_AUDIT_CHECKPOINT_FILE = str(tmp_path / "anchor.jsonl")
    append(2)
    first = tasks.audit_checkpoint()
    assert first is not None
    assert tasks.audit_checkpoint() is None  # run twice: nothing new to vouch for
    append(1)
    second = tasks.audit_checkpoint()
    lines = [json.loads(line) for line in (tmp_path / "anchor.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [first, second]
    assert [line["count"] for line in lines] == [2, 3]
    assert AuditCheckpoint.objects.count() == 2


def test_an_empty_log_can_be_checkpointed_and_verifies(db):
    checkpoint = audit_checkpoints.take_checkpoint()
    assert (checkpoint.last_id, checkpoint.count) == (0, 0)
    assert verify() == "audit chain intact: 0 row(s); 1 checkpoint(s) match"


def test_without_checkpoints_verify_says_a_tail_would_not_show(db):
    append(1)
    err = io.StringIO()
    call_command("audit_verify", stdout=io.StringIO(), stderr=err)
    assert "no checkpoints yet" in err.getvalue()


@pytest.mark.postgres_only
def test_postgres_refuses_update_delete_and_truncate_of_checkpoints(db):
    append(1)
    checkpoint = audit_checkpoints.take_checkpoint()
    for sql in (
        f"UPDATE {CHECKPOINTS} SET count = 5 WHERE id = {checkpoint.pk}",
        f"DELETE FROM {CHECKPOINTS} WHERE id = {checkpoint.pk}",
        f"TRUNCATE {CHECKPOINTS}",
    ):
        refused = pytest.raises(DatabaseError, match="append-only")
        with refused, transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql)
    assert AuditCheckpoint.objects.get(pk=checkpoint.pk).count == 1
