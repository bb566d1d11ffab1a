"""Drop the two foreign-key indexes another index already covers.

Django gives every foreign key an index on its column. Two of them only
repeat the first column of a wider index:

- `runs_steprun.run_id`: `steprun_attempt_unique` is (run_id, seq, attempt).
  Every step inserts a StepRun row, so every step wrote one index entry
  more than it needs.
- `runs_run.workflow_id`: `run_workflow_created` is (workflow_id,
  created_at DESC). The run table's inserts and its claims and ends (the
  updates PostgreSQL cannot write in place) wrote it.

The planner uses the wider index for any lookup by the column alone, so
nothing reads slower. The state change is `db_index=False`; the database
change is written by hand, per vendor, because Django would rebuild the
run table on SQLite to drop an index (losing its triggers, migration runs
0029), and on PostgreSQL it would drop it under a lock that stops the
engine: here it goes CONCURRENTLY, outside a transaction.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

# The names Django gave them (runs 0001): table, column, a hash of both.
INDEXES = {
    "runs_steprun_run_id_f067724d": ("runs_steprun", "run_id"),
    "runs_run_workflow_id_a08af1d8": ("runs_run", "workflow_id"),
}


def drop(apps, schema_editor) -> None:
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX{concurrently} IF EXISTS {name}")


def create(apps, schema_editor) -> None:
    concurrently = " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(f"CREATE INDEX{concurrently} IF NOT EXISTS {name} ON {table} ({column})")


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("runs", "0030_workflow_slug_fixed")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="steprun",
                    name="run",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="step_runs",
                        to="runs.run",
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="workflow",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="runs",
                        to="runs.workflow",
                    ),
                ),
            ],
            database_operations=[migrations.RunPython(drop, create)],
        )
    ]
