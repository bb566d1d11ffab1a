"""Operators run canaries: start one, promote it, roll it back."""

from django.db import migrations

GRANTS = {
    "operator": ["runs.manage_rollout", "runs.view_rollout"],
    "manager": ["runs.view_rollout"],
}


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0016_breakers"),
        ("runs", "0025_rollouts"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
