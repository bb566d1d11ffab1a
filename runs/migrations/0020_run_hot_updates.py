"""Keep a step's update of its run off every index, so it can be HOT.

PostgreSQL updates a row in place on its page, without touching any index
(a heap-only tuple), when no indexed column changes and the page has room.
A step changes the run's position, counters and money; its lease is kept by
the heartbeat, not by the checkpoint (runs.engine.heartbeat). Two things
stood in the way:

- the dashboard's covering index carried the per-step counters and money
  (`cost_usd`, `vendor_usd`, `llm_calls`, `tool_calls`): it keeps only what
  changes when a run starts or ends; the dashboard reads money from its
  daily roll-up and the rows of the days not rolled up yet;
- the run table filled its pages: a fillfactor of 70 leaves room on each
  page for the new version of a row.

Plain SQL (CONCURRENTLY on PostgreSQL), as in 0009 and 0015. SQLite has
neither INCLUDE nor fillfactor: there the index stays a plain one.
"""

from __future__ import annotations

import importlib

from django.db import migrations

earlier = importlib.import_module("runs.migrations.0015_tool_price_indexes")

FILLFACTOR = 70
BEFORE = {"run_created_cover": earlier.INDEXES["run_created_cover"]}
INDEXES = {
    # name: (table, key, include, condition)
    "run_created_cover": (
        "runs_run",
        "created_at",
        "id, workflow_id, version_id, status, success, finished_at",
        "",
    ),
}


def _replace(indexes, fillfactor):
    def replace(apps, schema_editor) -> None:
        postgres = schema_editor.connection.vendor == "postgresql"
        if postgres:
            schema_editor.execute(f"ALTER TABLE runs_run SET (fillfactor = {fillfactor})")
        for name, (table, key, include, condition) in indexes.items():
            schema_editor.execute(
                f"DROP INDEX {'CONCURRENTLY ' if postgres else ''}IF EXISTS {name}"
            )
            sql = "CREATE INDEX {}IF NOT EXISTS {} ON {} ({})".format(
                "CONCURRENTLY " if postgres else "", name, table, key
            )
            if include and postgres:
                sql += f" INCLUDE ({include})"
            if condition:
                sql += f" WHERE {condition}"
            schema_editor.execute(sql)

    return replace


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("runs", "0019_steprun_retryable")]

    operations = [migrations.RunPython(_replace(INDEXES, FILLFACTOR), _replace(BEFORE, 100))]
