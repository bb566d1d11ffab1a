"""Indexes for the console's read path (dashboard, dead letters) at scale.

Measured with bench/console.py at 100,000 runs and 1,000,000 step runs:
- run_created_cover: the dashboard's pass over a period's runs reads only
  this index (PostgreSQL: an index-only scan of narrow tuples instead of the
  wide run rows with their input and error text).
- steprun_cache_hit / steprun_dedup_duplicate: the savings figures read only
  the step runs that saved something, not every step run of the period.
- run_dead_letter: the dead-letter queue reads the dead runs only.

They are plain SQL so that PostgreSQL gets the covering form (INCLUDE) and
builds them without blocking writes (CONCURRENTLY, hence not atomic); they
are read-path tuning only and change no model state.
"""

from __future__ import annotations

from django.db import migrations

INDEXES = {
    # name: (table, key, include, condition)
    "run_created_cover": (
        "runs_run",
        "created_at",
        "id, workflow_id, version_id, status, success, cost_usd, llm_calls, tool_calls,"
        " finished_at",
        "",
    ),
    "steprun_cache_hit": ("runs_steprun", "run_id", "cost_saved_usd", "cache_hit"),
    "steprun_dedup_duplicate": (
        "runs_steprun",
        "run_id",
        "",
        "kind = 'dedup' AND edge = 'duplicate' AND status = 'succeeded'",
    ),
    "run_dead_letter": (
        "runs_run",
        "dead_lettered_at",
        "",
        "status = 'failed' AND dead_lettered_at IS NOT NULL",
    ),
}


def create(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, (table, key, include, condition) in INDEXES.items():
        sql = "CREATE INDEX {}IF NOT EXISTS {} ON {} ({})".format(
            "CONCURRENTLY " if postgres else "", name, table, key
        )
        if include and postgres:
            sql += f" INCLUDE ({include})"
        if condition:
            sql += f" WHERE {condition}"
        schema_editor.execute(sql)


def drop(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX {'CONCURRENTLY ' if postgres else ''}IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("runs", "0008_console_api_audit")]

    operations = [migrations.RunPython(create, drop)]
