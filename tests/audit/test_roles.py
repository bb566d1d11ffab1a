"""On PostgreSQL the application connects as a role that owns nothing and
holds only SELECT and INSERT on the audit tables (`manage.py grant_app_role`):
it can append, but not change, delete or truncate, and not switch the
append-only triggers off.

The test database belongs to the tests' own role (the owner); each test
makes a restricted role inside its transaction, grants it as a deployment
would, and acts as it with SET ROLE. All of it rolls back with the test.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, transaction

from policies import audit, audit_checkpoints
from policies.models import AuditCheckpoint, AuditEntry, WordList
from tests.audit.test_chain import append

pytestmark = pytest.mark.django_db

ENTRIES = AuditEntry._meta.db_table
CHECKPOINTS = AuditCheckpoint._meta.db_table


@pytest.fixture
def app_role(db) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT rolcreaterole FROM pg_roles WHERE rolname = current_user")
        (may_create,) = cursor.fetchone()
        if not may_create:
            pytest.skip("the test role needs CREATEROLE (scripts/postgres-start grants it)")
        role = f"bosun_test_app_{secrets.token_hex(4)}"
        cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        call_command("grant_app_role", role, stdout=io.StringIO())
        # Membership lets the test SET ROLE to it; the grant runs this way
        # only (the restricted role is not a member of the owner).
        cursor.execute(f"GRANT {role} TO current_user")
    return role


@contextmanager
def acting_as(role: str) -> Iterator[None]:
    """Run the block as `role`. Inside a savepoint: when a statement fails,
    rolling the savepoint back undoes the SET ROLE too."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")
        yield
        with connection.cursor() as cursor:
            cursor.execute("RESET ROLE")


def refused_as(role: str, sql: str, match: str) -> None:
    refused = pytest.raises(DatabaseError, match=match)
    with refused, acting_as(role), connection.cursor() as cursor:
        cursor.execute(sql)


@pytest.mark.postgres_only
def test_the_app_role_cannot_switch_the_audit_triggers_off_or_drop_them(app_role):
    for table in (ENTRIES, CHECKPOINTS):
        for sql in (
            f"ALTER TABLE {table} DISABLE TRIGGER ALL",
            f"ALTER TABLE {table} DISABLE TRIGGER {table}_no_update",
            f"DROP TRIGGER {table}_no_update ON {table}",
            f"ALTER TABLE {table} OWNER TO {app_role}",
            f"DROP TABLE {table}",
        ):
            refused_as(app_role, sql, "must be owner")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND tgenabled = 'O'",
            [ENTRIES],
        )
        assert cursor.fetchone() == (2,)


@pytest.mark.postgres_only
def test_the_app_role_may_not_update_delete_or_truncate_audit_rows(app_role):
    (entry,) = append(1)
    checkpoint = audit_checkpoints.take_checkpoint()
    # "permission denied", not the trigger's "append-only": the role lacks
    # the privilege itself, the triggers are a second wall behind it.
    for sql in (
        f"UPDATE {ENTRIES} SET actor = 'user:mallory' WHERE id = {entry.pk}",
        f"DELETE FROM {ENTRIES} WHERE id = {entry.pk}",
        f"TRUNCATE {ENTRIES}",
        f"UPDATE {CHECKPOINTS} SET count = 9 WHERE id = {checkpoint.pk}",
        f"DELETE FROM {CHECKPOINTS} WHERE id = {checkpoint.pk}",
        f"TRUNCATE {CHECKPOINTS}",
        "DELETE FROM django_migrations",
    ):
        refused_as(app_role, sql, "permission denied for table")
    assert AuditEntry.objects.get(pk=entry.pk).actor == "user:u1"
    assert AuditCheckpoint.objects.get(pk=checkpoint.pk).count == 1


@pytest.mark.postgres_only
def test_the_app_role_appends_checkpoints_and_writes_everything_else(app_role):
    with acting_as(app_role):
        append(3)
        checkpoint = audit_checkpoints.take_checkpoint()
        assert checkpoint.count == 3
        assert audit.verify() == (3, None)
        group = Group.objects.create(name="app-role-writes")
        group.name = "renamed"
        group.save()
        words = WordList.objects.create(name="app-role-words")
        words.delete()
        group.delete()
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            assert cursor.fetchone() == (app_role,)


@pytest.mark.postgres_only
def test_granting_twice_still_leaves_the_audit_tables_append_only(app_role):
    call_command("grant_app_role", app_role, stdout=io.StringIO())
    refused_as(app_role, f"DELETE FROM {ENTRIES}", "permission denied for table")


@pytest.mark.postgres_only
def test_grant_app_role_refuses_the_owner_and_an_unknown_role(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        (owner,) = cursor.fetchone()
    with pytest.raises(CommandError, match="could switch the audit log's triggers off"):
        call_command("grant_app_role", owner, stdout=io.StringIO())
    with pytest.raises(CommandError, match="no role"):
        call_command("grant_app_role", f"nobody_{secrets.token_hex(4)}", stdout=io.StringIO())


def test_grant_app_role_says_sqlite_has_no_roles(db):
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    with pytest.raises(CommandError, match="SQLite has no database roles"):
        call_command("grant_app_role", "bosun_app", stdout=io.StringIO())
