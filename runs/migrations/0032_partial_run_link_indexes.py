"""Index a run's links to other runs only where there is one.

`replay_of`, `tools_from` and `shadow_of` name another run on replays,
sandbox runs and shadow runs; an ordinary run has none. Django's index on
each foreign key still took an entry for every run, written at its insert
and again at its claim and its end (updates PostgreSQL cannot write in
place, runs 0029). Partial indexes (`… IS NOT NULL`) serve the same
lookups, a given run's replays or shadows, and the deletes that clear the
links, and cost an ordinary run nothing.

As in runs 0031 the database change is written by hand: CONCURRENTLY on
PostgreSQL (built before the old index goes, outside a transaction), and
without rebuilding the run table on SQLite, which would lose its triggers.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models

# column, the partial index's name, the full index Django gave it (runs 0001)
LINKS = [
    ("replay_of_id", "run_replay_of", "runs_run_replay_of_id_7b879e88"),
    ("tools_from_id", "run_tools_from", "runs_run_tools_from_id_04f89921"),
    ("shadow_of_id", "run_shadow_of", "runs_run_shadow_of_id_a4386ad1"),
]


def _concurrently(schema_editor) -> str:
    return " CONCURRENTLY" if schema_editor.connection.vendor == "postgresql" else ""


def forward(apps, schema_editor) -> None:
    how = _concurrently(schema_editor)
    for column, partial, full in LINKS:
        schema_editor.execute(
            f"CREATE INDEX{how} IF NOT EXISTS {partial} ON runs_run ({column})"
            f" WHERE {column} IS NOT NULL"
        )
        schema_editor.execute(f"DROP INDEX{how} IF EXISTS {full}")


def backward(apps, schema_editor) -> None:
    how = _concurrently(schema_editor)
    for column, partial, full in LINKS:
        schema_editor.execute(f"CREATE INDEX{how} IF NOT EXISTS {full} ON runs_run ({column})")
        schema_editor.execute(f"DROP INDEX{how} IF EXISTS {partial}")


def _link(help_text: str, related_name: str) -> models.ForeignKey:
    return models.ForeignKey(
        blank=True,
        db_index=False,
        help_text=help_text,
        null=True,
        on_delete=django.db.models.deletion.SET_NULL,
        related_name=related_name,
        to="runs.run",
    )


class Migration(migrations.Migration):
    atomic = False  # CREATE and DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("runs", "0031_drop_covered_fk_indexes")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="run",
                    name="replay_of",
                    field=_link(
                        "LLM steps of this run answer from that run's recorded outputs.", "replays"
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="tools_from",
                    field=_link(
                        "A sandbox run's reads are answered from this recorded run's calls.", "+"
                    ),
                ),
                migrations.AlterField(
                    model_name="run",
                    name="shadow_of",
                    field=_link(
                        "The live run this shadow run ran beside, on the same input.", "shadows"
                    ),
                ),
                *(
                    migrations.AddIndex(
                        model_name="run",
                        index=models.Index(
                            condition=models.Q((f"{field}__isnull", False)),
                            fields=[field],
                            name=f"run_{field}",
                        ),
                    )
                    for field in ("replay_of", "tools_from", "shadow_of")
                ),
            ],
            database_operations=[migrations.RunPython(forward, backward)],
        )
    ]
