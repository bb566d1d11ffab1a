"""A django-q2 schedule that checkpoints the audit chain's head every ten
minutes (a checkpoint is written only when the log has grown), and who may
read the checkpoints: whoever may read the audit log."""

from django.db import migrations

GRANTS = {
    "operator": ["policies.view_auditcheckpoint"],
    "manager": ["policies.view_auditcheckpoint"],
    "viewer": ["policies.view_auditcheckpoint"],
}


def add_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.get_or_create(
        name="bosun-audit-checkpoint",
        defaults={
            "func": "policies.tasks.audit_checkpoint",
            "schedule_type": "I",
            "minutes": 10,
            "repeats": -1,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name="bosun-audit-checkpoint").delete()


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0010_audit_checkpoint"),
        ("django_q", "0018_task_success_index"),
    ]
    operations = [
        migrations.RunPython(add_schedule, remove_schedule),
        migrations.RunPython(grant, migrations.RunPython.noop),
    ]
