"""The dead-letter queue reads the dead runs only, not their step runs.

`Run.dead_error_type` and `Run.dead_retryable` hold the error type of the
failed attempt that dead-lettered a run and whether that error was worth
another attempt; the engine writes them in the same statement as
`dead_lettered_at` (runs.engine.worker, and the breaker sweep for an
outage). The queue groups the dead runs by workflow, failed step and error
type and counts the ones not retryable: it read both from each dead run's
failed step run, one probe of the ten million step runs per dead run (40,000
at a million runs: 403 ms p95 in bench/console.py); now from the dead runs'
own rows.

`Run.dead_step` is the failed step (`current_step` when the run was
dead-lettered): run_dead_letter_cover replaces run_dead_letter (same key
and condition) and carries the run's id, workflow, mode and these three,
so the queue's groups are an index-only read of the dead runs (40,000 of
them: 30,000 pages of the run table otherwise). `current_step` itself is
not in it: it changes on every step, and an indexed column would keep a
step's update of its run from being HOT (migration 0020); the dead_*
columns change only when a run is dead-lettered or retried, with its
status, which is indexed already.

This fills the three for the runs dead-lettered now, from the attempt
their `seq` and `attempt` still point at (what the page read until now),
500 runs a statement, each committed on its own: on PostgreSQL no
statement holds more than a batch of rows, and the columns are added
without a table rewrite (a constant default).

The dashboard, likewise, no longer reads the rows of the runs of its
rolled-up days that are still waiting (about 30,000 at a million runs,
most waiting on a person; 115 ms of the 30-day page's 150 ms query):

- DailyRollupWaiting: each such run as a roll-up pass found it (see
  runs.models), counted in the day's roll-up rows (DailyRollup gains the
  count of runs waiting on a person, `pending`); every day rolled up so far
  is marked stale, so the next pass rolls it up again with its waiting runs
  (the dashboard reads it from the runs until then);
- run_unfinished_cover replaces run_unfinished (same key and condition):
  it also carries the run's id, workflow, version, mode, status,
  wait_reason, fence, decisions and breaches, so the dashboard tells an
  unchanged waiting run from its index entry alone. None of these changes
  on a step's update of its run (money, counters and position), which stays
  HOT: the claim changes fence and wait_reason with the status (indexed
  already), a decision and a breach each change their count once.
"""

from __future__ import annotations

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import F, OuterRef, Subquery, Value
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
            dead_step=F("current_step"),
            dead_error_type=Coalesce(Subquery(failed.values("error_type")[:1]), Value("")),
            dead_retryable=Subquery(failed.values("retryable")[:1]),
        )


COVER = (
    "CREATE INDEX {concurrently}IF NOT EXISTS run_unfinished_cover ON runs_run (created_at)"
    "{include} WHERE finished_at IS NULL"
)
INCLUDE = (
    " INCLUDE (id, workflow_id, version_id, mode, status, wait_reason, fence, decisions, breaches)"
)
PLAIN = (
    "CREATE INDEX {concurrently}IF NOT EXISTS run_unfinished ON runs_run (created_at)"
    " WHERE finished_at IS NULL"
)


DEAD = "status = 'failed' AND dead_lettered_at IS NOT NULL"
DEAD_COVER = (
    "CREATE INDEX {concurrently}IF NOT EXISTS run_dead_letter_cover ON runs_run"
    " (dead_lettered_at){include} WHERE " + DEAD
)
DEAD_INCLUDE = " INCLUDE (id, workflow_id, mode, dead_step, dead_error_type, dead_retryable)"
DEAD_PLAIN = (
    "CREATE INDEX {concurrently}IF NOT EXISTS run_dead_letter ON runs_run (dead_lettered_at)"
    " WHERE " + DEAD
)


def cover_dead(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    concurrently = _concurrently(schema_editor)
    schema_editor.execute(
        DEAD_COVER.format(concurrently=concurrently, include=DEAD_INCLUDE if postgres else "")
    )
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS run_dead_letter")


def uncover_dead(apps, schema_editor) -> None:
    concurrently = _concurrently(schema_editor)
    schema_editor.execute(DEAD_PLAIN.format(concurrently=concurrently))
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS run_dead_letter_cover")


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def cover_unfinished(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    concurrently = _concurrently(schema_editor)
    schema_editor.execute(
        COVER.format(concurrently=concurrently, include=INCLUDE if postgres else "")
    )
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS run_unfinished")


def uncover_unfinished(apps, schema_editor) -> None:
    concurrently = _concurrently(schema_editor)
    schema_editor.execute(PLAIN.format(concurrently=concurrently))
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS run_unfinished_cover")


def mark_days_stale(apps, schema_editor) -> None:
    """Every day rolled up so far is rolled up again by the next pass, which
    counts its waiting runs and keeps them (the dashboard reads such a day
    from the runs until then, as in migration 0026)."""
    apps.get_model("runs", "RollupDay").objects.update(stale=True)


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
            name="dead_step",
            field=models.CharField(
                blank=True,
                db_default="",
                default="",
                help_text="The step whose failed attempt dead-lettered the run.",
                max_length=100,
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
        migrations.RunPython(cover_dead, uncover_dead),
        migrations.CreateModel(
            name="DailyRollupWaiting",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("wait_reason", models.CharField(blank=True, max_length=40)),
                ("fence", models.PositiveBigIntegerField(default=0)),
                ("decisions", models.PositiveIntegerField(default=0)),
                ("breaches", models.PositiveIntegerField(default=0)),
                ("success", models.BooleanField(null=True)),
                ("escalated", models.BooleanField(default=False)),
                ("cost_usd", models.DecimalField(decimal_places=6, default=0, max_digits=12)),
                ("vendor_usd", models.DecimalField(decimal_places=6, default=0, max_digits=12)),
                ("calls", models.PositiveBigIntegerField(default=0)),
                ("machine_ms", models.FloatField(default=0)),
                ("wait_ms", models.FloatField(default=0)),
                (
                    "run",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="runs.run",
                    ),
                ),
                (
                    "version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="runs.workflowversion",
                    ),
                ),
                (
                    "workflow",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="runs.workflow",
                    ),
                ),
            ],
            options={
                "indexes": [models.Index(fields=["day"], name="daily_rollup_waiting_day")],
            },
        ),
        migrations.RunPython(cover_unfinished, uncover_unfinished),
        migrations.AddField(
            model_name="dailyrollup",
            name="pending",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.RunPython(mark_days_stale, migrations.RunPython.noop),
    ]
