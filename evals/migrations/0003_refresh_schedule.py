"""A django-q2 schedule that scores the running experiments once a minute,
so an experiment nobody looks at still closes when its runs are over (the
result page, the API and eval_gate score them as they read)."""

from django.db import migrations


def add_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name="bosun-experiments",
        defaults={
            "func": "evals.tasks.refresh_running",
            "schedule_type": "I",
            "minutes": 1,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="bosun-experiments").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evals", "0002_grants"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
