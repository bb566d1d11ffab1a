"""`flush` for the test suite: empties the audit log too.

Tests that use real transactions (`django_db(transaction=True)`, live
servers) are cleaned up with `flush`, which TRUNCATEs every table. On
PostgreSQL the audit log's trigger refuses TRUNCATE, as it should in
production; the test database's owner switches that one trigger off for
the flush and back on after it. Only the test settings install this app.
"""

from __future__ import annotations

from django.core.management.commands import flush
from django.db import DEFAULT_DB_ALIAS, connections

TRIGGER = "ALTER TABLE policies_auditentry {} TRIGGER policies_auditentry_no_truncate"


class Command(flush.Command):
    def handle(self, **options):
        connection = connections[options.get("database", DEFAULT_DB_ALIAS)]
        if connection.vendor != "postgresql" or not _has_audit_table(connection):
            return super().handle(**options)
        with connection.cursor() as cursor:
            cursor.execute(TRIGGER.format("DISABLE"))
        try:
            return super().handle(**options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute(TRIGGER.format("ENABLE"))


def _has_audit_table(connection) -> bool:
    return "policies_auditentry" in connection.introspection.table_names()
