"""Run.wall_from: the wall-time budget counts from the first claim, or from
the first claim after a retry, so time spent dead-lettered does not count.
Runs that have started keep their allowance: wall_from = started_at."""

from django.db import migrations, models
from django.db.models import F


def from_started_at(apps, schema_editor):
    Run = apps.get_model("runs", "Run")
    Run.objects.filter(started_at__isnull=False).update(wall_from=F("started_at"))


class Migration(migrations.Migration):
    dependencies = [("runs", "0016_open_tool_call_fenced")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="wall_from",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(from_started_at, migrations.RunPython.noop),
    ]
