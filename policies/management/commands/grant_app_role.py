"""manage.py grant_app_role ROLE — the application role's privileges (PostgreSQL).

Run as the owner role after every `migrate`: it grants ROLE plain reads and
writes on every table Bosun's models have, reads on django_migrations, and
on the audit log and its checkpoints only SELECT and INSERT. ROLE owns
nothing, so it can neither switch the append-only triggers off nor drop
them. Running it twice changes nothing.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from policies.models import AuditCheckpoint, AuditEntry

APPEND_ONLY = (AuditEntry._meta.db_table, AuditCheckpoint._meta.db_table)


class Command(BaseCommand):
    help = (
        "Grant the application's database role what it needs (run as the owner role after "
        "migrate): reads and writes everywhere, only SELECT and INSERT on the audit tables."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("role", help="The role the application connects as.")
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)

    def handle(self, *args, role: str, database: str, **options) -> None:
        connection = connections[database]
        if connection.vendor != "postgresql":
            raise CommandError(
                "grant_app_role needs PostgreSQL: SQLite has no database roles, "
                "so the role separation is a PostgreSQL guarantee"
            )
        with transaction.atomic(using=database):
            tables = grant_app_role(connection, role=role)
        self.stdout.write(
            f"{role}: reads and writes on {tables} table(s); "
            f"SELECT and INSERT only on {', '.join(APPEND_ONLY)}"
        )


def grant_app_role(connection: BaseDatabaseWrapper, *, role: str) -> int:
    """Grant `role` its privileges; the number of tables granted."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.rolsuper, pg_has_role(r.oid, c.relowner, 'MEMBER'), "
            "pg_get_userbyid(c.relowner) "
            "FROM pg_roles r, pg_class c WHERE r.rolname = %s AND c.oid = %s::regclass",
            [role, APPEND_ONLY[0]],
        )
        row = cursor.fetchone()
        if row is None:
            raise CommandError(f"no role {role!r}: create it first (CREATE ROLE … LOGIN)")
        superuser, owns, owner = row
        # The whole point: a superuser, or the owner (or a role that acts
        # as it by membership), could ALTER TABLE … DISABLE TRIGGER.
        if superuser or owns:
            what = (
                "a superuser"
                if superuser
                else "the owner of the audit table"
                if role == owner
                else f"a member of {owner}, the owner of the audit table"
            )
            raise CommandError(
                f"{role} is {what}: it could switch the audit log's triggers off; "
                "the application must connect as a role that owns nothing"
            )
        cursor.execute("SELECT current_database(), current_schema()")
        db_name, schema = cursor.fetchone()
        tables = [
            name
            for name in connection.introspection.django_table_names(
                only_existing=True, include_views=False
            )
            if name != "django_migrations"
        ]
        who = quote(role)
        statements = [
            f"GRANT CONNECT ON DATABASE {quote(db_name)} TO {who}",
            f"GRANT USAGE ON SCHEMA {quote(schema)} TO {who}",
            f"GRANT SELECT ON django_migrations TO {who}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote(schema)} TO {who}",
            *(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {quote(t)} TO {who}" for t in tables),
            # After the grant above, so that a second run takes them away again.
            *(
                f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON {quote(t)} FROM {who}"
                for t in APPEND_ONLY
            ),
        ]
        for statement in statements:
            cursor.execute(statement)
    return len(tables)
