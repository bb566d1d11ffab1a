"""Count the claims that take a run over from a worker lost in its step.

`takeovers` and `takeover_seq` are written by the claim's own statement
(runs.engine.store.claim). The columns are added by hand with a constant
default: PostgreSQL then adds them without rewriting the run table, and
SQLite with `ALTER TABLE ADD COLUMN`, where Django would rebuild the table
for a NOT NULL column and lose its triggers (migration runs 0029).
"""

from __future__ import annotations

from django.db import migrations, models

COLUMNS = ("takeovers", "takeover_seq")


class Migration(migrations.Migration):
    dependencies = [("runs", "0032_partial_run_link_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddField(
                    model_name="run",
                    name=column,
                    field=models.IntegerField(db_default=0, default=0, editable=False),
                )
                for column in COLUMNS
            ],
            database_operations=[
                migrations.RunSQL(
                    f"ALTER TABLE runs_run ADD COLUMN {column} integer DEFAULT 0 NOT NULL",
                    f"ALTER TABLE runs_run DROP COLUMN {column}",
                )
                for column in COLUMNS
            ],
        )
    ]
