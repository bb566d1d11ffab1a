"""The console's covering indexes carry vendor spend and saved credits.

The dashboard reads model and vendor spend apart: the run index of 0009
gains `vendor_usd` (the model's share is `cost_usd - vendor_usd`), the
cache-hit index the vendor's part of a saving and its credits, and a new
partial index holds only the step runs that spent credits (for credits per
vendor). Plain SQL, CONCURRENTLY on PostgreSQL, as in 0009.
"""

from __future__ import annotations

import importlib

from django.db import migrations

earlier = importlib.import_module("runs.migrations.0009_console_read_indexes")

BEFORE = {name: earlier.INDEXES[name] for name in ("run_created_cover", "steprun_cache_hit")}
INDEXES = {
    # name: (table, key, include, condition)
    "run_created_cover": (
        "runs_run",
        "created_at",
        "id, workflow_id, version_id, status, success, cost_usd, vendor_usd, llm_calls,"
        " tool_calls, finished_at",
        "",
    ),
    "steprun_cache_hit": (
        "runs_steprun",
        "run_id",
        "cost_saved_usd, vendor_saved_usd, credits_saved, vendor",
        "cache_hit",
    ),
    "steprun_credits": ("runs_steprun", "run_id", "vendor, credits", "credits > 0"),
}


def _replace(indexes):
    """Drop the indexes named in INDEXES and create `indexes`."""

    def replace(apps, schema_editor) -> None:
        postgres = schema_editor.connection.vendor == "postgresql"
        for name in INDEXES:
            schema_editor.execute(
                f"DROP INDEX {'CONCURRENTLY ' if postgres else ''}IF EXISTS {name}"
            )
        for name, (table, key, include, condition) in indexes.items():
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

    dependencies = [("runs", "0014_tool_prices")]

    operations = [migrations.RunPython(_replace(INDEXES), _replace(BEFORE))]
