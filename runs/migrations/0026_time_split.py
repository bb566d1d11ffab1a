"""Machine time and time waiting for people on each run, and in the roll-up.

`Run.machine_ms` (the step attempts' durations), `decisions` and `wait_ms`
(approval requests decided, and how long they waited) and `breaches`
(requests past their SLA) are kept on the run where they change; this
fills them for the runs there are. The daily roll-up gains their sums and
the stopped and cancelled counts: every day rolled up before is marked
stale, so the next pass rolls it up again, and the dashboard reads it from
the runs until then (no figure is ever read as zero from an old row).
"""

from django.db import migrations, models

DECIDED = "a.status IN ('approved', 'rejected') AND a.decided_at IS NOT NULL"


def fill_runs(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        waited = "date_part('epoch', a.decided_at - a.created_at) * 1000"
    else:
        waited = "(julianday(a.decided_at) - julianday(a.created_at)) * 86400000.0"
    requests = "FROM approvals_approvalrequest a WHERE a.run_id = runs_run.id"
    schema_editor.execute(
        "UPDATE runs_run SET"
        " machine_ms = COALESCE((SELECT SUM(s.duration_ms) FROM runs_steprun s"
        " WHERE s.run_id = runs_run.id), 0),"
        f" decisions = (SELECT COUNT(*) {requests} AND {DECIDED}),"
        f" wait_ms = COALESCE((SELECT SUM({waited}) {requests} AND {DECIDED}), 0),"
        f" breaches = (SELECT COUNT(*) {requests} AND a.breached_at IS NOT NULL)"
    )


def mark_days_stale(apps, schema_editor):
    apps.get_model("runs", "RollupDay").objects.update(stale=True)


class Migration(migrations.Migration):
    dependencies = [
        ("runs", "0025_rollouts"),
        ("approvals", "0004_review_flow"),
    ]

    operations = [
        migrations.AddField(
            model_name="dailyrollup",
            name="breached",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="cancelled",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="decisions",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="machine_ms",
            field=models.FloatField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="stopped",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="dailyrollup",
            name="wait_ms",
            field=models.FloatField(default=0),
        ),
        migrations.AddField(
            model_name="run",
            name="breaches",
            field=models.PositiveIntegerField(
                db_default=0, default=0, help_text="Approval requests that went past their SLA."
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="decisions",
            field=models.PositiveIntegerField(
                db_default=0,
                default=0,
                help_text="Approval requests decided (approved or rejected).",
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="machine_ms",
            field=models.FloatField(
                db_default=0,
                default=0,
                help_text="Step attempts' durations added up: the machine's time.",
            ),
        ),
        migrations.AddField(
            model_name="run",
            name="wait_ms",
            field=models.FloatField(
                db_default=0,
                default=0,
                help_text="Time the decided requests waited for their decision, added up.",
            ),
        ),
        migrations.RunPython(fill_runs, migrations.RunPython.noop),
        migrations.RunPython(mark_days_stale, migrations.RunPython.noop),
    ]
