"""The dashboard's daily roll-up (runs.rollup), its indexes and its schedule.

- RollupWatermark, RollupDay, DailyRollup, DailyRollupDedup: see runs.models.
- run_unfinished: the runs not finished yet, by `created_at`; and
  run_finished_at: the finished runs by `finished_at`. The dashboard reads
  through them the runs of rolled-up days that the roll-up does not hold
  (not finished, or finished after its watermark), and a roll-up pass finds
  the runs finished since the last one. Both columns change only when a run
  starts or ends (or is retried), never on a step: a step's update of its
  run stays HOT (migration 0020). Plain SQL, CONCURRENTLY on PostgreSQL,
  as in 0009, 0015 and 0020.
- A django-q2 schedule rolls up every 10 minutes (runs.tasks.roll_up).
"""

from django.db import migrations, models
import django.db.models.deletion

INDEXES = {
    # name: (table, key, condition)
    "run_unfinished": ("runs_run", "created_at", "finished_at IS NULL"),
    "run_finished_at": ("runs_run", "finished_at", "finished_at IS NOT NULL"),
    "steprun_counted_finished": (
        "runs_steprun",
        "finished_at",
        "cache_hit OR credits > 0"
        " OR (kind = 'dedup' AND edge = 'duplicate' AND status = 'succeeded')",
    ),
}
SCHEDULE = "bosun-rollup"


def create_indexes(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    for name, (table, key, condition) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX {concurrently}IF NOT EXISTS {name} ON {table} ({key}) WHERE {condition}"
        )


def drop_indexes(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS {name}")


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=SCHEDULE,
        defaults={"func": "runs.tasks.roll_up", "schedule_type": "I", "minutes": 10, "repeats": -1},
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=SCHEDULE).delete()


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("runs", "0020_run_hot_updates"),
        ("django_q", "0018_task_success_index"),
    ]

    operations = [
        migrations.CreateModel(
            name='RollupDay',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField(unique=True)),
                ('stale', models.BooleanField(default=False)),
                ('rolled_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'ordering': ['-day'],
            },
        ),
        migrations.CreateModel(
            name='RollupWatermark',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('finished_before', models.DateTimeField(blank=True, null=True)),
            ],
        ),
        migrations.CreateModel(
            name='DailyRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('runs', models.PositiveIntegerField(default=0)),
                ('succeeded', models.PositiveIntegerField(default=0)),
                ('failed', models.PositiveIntegerField(default=0)),
                ('successes', models.PositiveIntegerField(default=0)),
                ('escalated', models.PositiveIntegerField(default=0)),
                ('cost_usd', models.DecimalField(decimal_places=6, default=0, max_digits=16)),
                ('vendor_usd', models.DecimalField(decimal_places=6, default=0, max_digits=16)),
                ('calls', models.PositiveBigIntegerField(default=0, help_text='Model plus tool calls.')),
                ('latency', models.JSONField(default=dict, help_text='Finished runs per latency bucket.')),
                ('credits', models.JSONField(default=dict)),
                ('cache_hits', models.PositiveIntegerField(default=0)),
                ('cache_saved_usd', models.DecimalField(decimal_places=6, default=0, max_digits=16)),
                ('cache_saved_credits', models.JSONField(default=dict)),
                ('dedup_hits', models.PositiveIntegerField(default=0)),
                ('dedup_saved_usd', models.DecimalField(decimal_places=6, default=0, max_digits=16)),
                ('dedup_saved_credits', models.JSONField(default=dict)),
                ('version', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.workflowversion')),
                ('workflow', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.workflow')),
            ],
            options={
                'constraints': [models.UniqueConstraint(fields=('day', 'version'), name='daily_rollup_unique')],
            },
        ),
        migrations.CreateModel(
            name='DailyRollupDedup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('first_run_id', models.BigIntegerField(db_index=True, null=True)),
                ('usd_hits', models.PositiveIntegerField(default=0)),
                ('credit_hits', models.PositiveIntegerField(default=0)),
                ('settled', models.BooleanField(default=False)),
                ('version', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='runs.workflowversion')),
            ],
            options={
                'indexes': [models.Index(fields=['day'], name='daily_rollup_dedup_day')],
            },
        ),
        migrations.RunPython(create_indexes, drop_indexes),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
