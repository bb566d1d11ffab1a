"""`flush` for the test suite: empties the audit log and its checkpoints too.

Tests that use real transactions (`django_db(transaction=True)`, live
servers) are cleaned up with `flush`, which TRUNCATEs every table. On
PostgreSQL the audit tables' triggers refuse TRUNCATE, as they should in
production; the test database's owner switches those triggers off for
the flush and back on after it. Only the test settings install this app.
"""

from __future__ import annotations

from django.core.management.commands import flush
from django.db import DEFAULT_DB_ALIAS, connections

TABLES = ("policies_auditentry", "policies_auditcheckpoint")


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options.get("database", DEFAULT_DB_ALIAS)]
        if connection.vendor != "postgresql":
            return super().handle(**options)
        tables = _audit_tables(connection)
        if not tables:
            return super().handle(**options)
        _switch(connection, tables, "DISABLE")
        try:
            return super().handle(**options)
        finally:
            _switch(connection, tables, "ENABLE")


def _switch(connection, tables: list[str], how: str) -> None:
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"ALTER TABLE {table} {how} TRIGGER {table}_no_truncate")


def _audit_tables(connection) -> list[str]:
    present = set(connection.introspection.table_names())
    return [table for table in TABLES if table in present]
