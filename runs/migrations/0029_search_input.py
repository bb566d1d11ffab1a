"""The search's copy of each run's input, written by the database.

A run's input never changes after the run starts, yet its search indexes
(run_input_gin and run_input_domains, migration 0027) lived on the run
table, whose row every claim and every run's end rewrites. Such an update
changes indexed columns (status, the timers), so PostgreSQL writes an entry
into every index of the table, these two included: the GIN entries for
every value of the input, and the domains expression, a SQL function with
a regular expression, computed again at each claim and each end. Measured
with bench/engine.py (200 runs of 10 steps, one worker): the database's
CPU a step fell from 0.215 to 0.160 ms without them, the engine's steps a
second rose from 2,041 to about 2,250.

So the input is copied, once, into runs_runinput by triggers on the run
table, and the indexes move there:
- after INSERT, for each statement (a transition table: a bulk load or a
  COPY adds its copies in one INSERT … SELECT);
- after UPDATE OF input, only when the input really changed.
Deleting a run deletes its copy (the foreign key, and Django's cascade).
On SQLite the same triggers keep the copy (SQLite has no GIN: its search
reads the copies with json_each).

Not atomic, so that no lock on the run table is held through the copy
and the index builds: the triggers commit first (every run inserted from
then on is copied by them), then existing runs are copied in batches of
ids, committed one by one (ON CONFLICT: a run the trigger copied
meanwhile is left as it is), then the indexes are built and the old
ones dropped CONCURRENTLY.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

PG_TRIGGERS = r"""
CREATE OR REPLACE FUNCTION bosun_run_input_added() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO runs_runinput (run_id, input) SELECT id, input FROM added;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION bosun_run_input_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE runs_runinput SET input = NEW.input WHERE run_id = NEW.id;
  RETURN NULL;
END $$;
CREATE TRIGGER run_input_added AFTER INSERT ON runs_run
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT
  EXECUTE FUNCTION bosun_run_input_added();
CREATE TRIGGER run_input_changed AFTER UPDATE OF input ON runs_run
  FOR EACH ROW WHEN (OLD.input IS DISTINCT FROM NEW.input)
  EXECUTE FUNCTION bosun_run_input_changed();
"""
PG_DROP_TRIGGERS = """
DROP TRIGGER IF EXISTS run_input_added ON runs_run;
DROP TRIGGER IF EXISTS run_input_changed ON runs_run;
DROP FUNCTION IF EXISTS bosun_run_input_added();
DROP FUNCTION IF EXISTS bosun_run_input_changed();
"""
SQLITE_TRIGGERS = [
    "CREATE TRIGGER run_input_added AFTER INSERT ON runs_run BEGIN"
    " INSERT INTO runs_runinput (run_id, input) VALUES (NEW.id, NEW.input); END",
    "CREATE TRIGGER run_input_changed AFTER UPDATE OF input ON runs_run"
    " WHEN OLD.input IS NOT NEW.input BEGIN"
    " UPDATE runs_runinput SET input = NEW.input WHERE run_id = NEW.id; END",
]
SQLITE_DROP_TRIGGERS = [
    "DROP TRIGGER IF EXISTS run_input_added",
    "DROP TRIGGER IF EXISTS run_input_changed",
]
# name on runs_runinput: (the index on runs_run it replaces, its expression)
PG_INDEXES = {
    "runinput_gin": ("run_input_gin", "input"),
    "runinput_domains": ("run_input_domains", "bosun_json_domains(input)"),
}
BATCH = 10_000  # runs copied per committed statement
COPY_BATCH = (
    "INSERT INTO runs_runinput (run_id, input) SELECT id, input FROM runs_run"
    " WHERE id > %s AND id <= %s ON CONFLICT (run_id) DO NOTHING"
)


def add_triggers(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_TRIGGERS)
    else:
        for statement in SQLITE_TRIGGERS:
            schema_editor.execute(statement)


def drop_triggers(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(PG_DROP_TRIGGERS)
    else:
        for statement in SQLITE_DROP_TRIGGERS:
            schema_editor.execute(statement)


def copy_existing(apps, schema_editor) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM runs_run")
        (last,) = cursor.fetchone()
        for low in range(0, last, BATCH):
            cursor.execute(COPY_BATCH, [low, low + BATCH])


def move_indexes(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (_old, expression) in PG_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON runs_runinput"
            f" USING gin ({expression})"
        )
    for old, _expression in PG_INDEXES.values():
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {old}")


def restore_indexes(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for old, expression in PG_INDEXES.values():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {old} ON runs_run USING gin ({expression})"
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("runs", "0028_dead_letter_summary")]

    operations = [
        migrations.CreateModel(
            name="RunInput",
            fields=[
                (
                    "run",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="search_input",
                        serialize=False,
                        to="runs.run",
                    ),
                ),
                ("input", models.JSONField(default=dict)),
            ],
        ),
        migrations.RunPython(add_triggers, drop_triggers),
        migrations.RunPython(copy_existing, migrations.RunPython.noop),
        migrations.RunPython(move_indexes, restore_indexes),
    ]
