"""The dead-letter queue reads the dead runs only, not their step runs.

`Run.dead_error_type` and `Run.dead_retryable` hold the error type of the
failed attempt that dead-lettered a run and whether that error was worth
another attempt; the engine writes them in the same statement as
`dead_lettered_at` (runs.engine.worker, and the breaker sweep for an
outage). The queue groups the dead runs by workflow, failed step and error
type and counts the ones not retryable: it read both from each dead run's
failed step run, one probe of the ten million step runs per dead run (40,000
at a million runs: 403 ms p95 in bench/console.py); now from the dead runs'
own rows, found through their partial index (run_dead_letter).

This fills both for the runs dead-lettered now, from the attempt their
`seq` and `attempt` still point at (what the page read until now), 500
runs a statement, each committed on its own: on PostgreSQL no statement
holds more than a batch of rows, and the columns are added without a
table rewrite (a constant default) and without an index: a step's update
of its run stays HOT (migration 0020).
"""

from __future__ import annotations

from django.db import migrations, models
from django.db.models import OuterRef, Subquery, Value
from django.db.models.functions import Coalesce

BATCH = 500  # runs per UPDATE: within SQLite's bound on a statement's parameters


def fill_dead_runs(apps, schema_editor) -> None:
    Run = apps.get_model("runs", "Run")
    StepRun = apps.get_model("runs", "StepRun")
    # One row by the unique (run, seq, attempt).
    failed = StepRun.objects.filter(
        run=OuterRef("pk"), seq=OuterRef("seq"), attempt=OuterRef("attempt")
    ).order_by()
    # A dead-lettered run has failed (a retry clears `dead_lettered_at`):
    # the status lets PostgreSQL find them through run_dead_letter.
    dead = list(
        Run.objects.filter(status="failed", dead_lettered_at__isnull=False)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for start in range(0, len(dead), BATCH):
        Run.objects.filter(pk__in=dead[start : start + BATCH]).update(
            dead_error_type=Coalesce(Subquery(failed.values("error_type")[:1]), Value("")),
            dead_retryable=Subquery(failed.values("retryable")[:1]),
        )


class Migration(migrations.Migration):
    atomic = False  # each batch commits on its own; no lock held over the whole fill

    dependencies = [("runs", "0027_search_and_start")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="dead_error_type",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="Error type of the failed attempt that dead-lettered the run.",
                max_length=80,
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="dead_retryable",
            field=models.BooleanField(
                blank=True,
                help_text="Whether that attempt's error was worth another attempt (unset: not recorded).",
                null=True,
            ),
        ),
        migrations.RunPython(fill_dead_runs, migrations.RunPython.noop),
    ]
