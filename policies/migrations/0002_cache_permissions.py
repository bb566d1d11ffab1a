"""Operators see and drop cached step results; managers and viewers see them."""

from django.db import migrations

GRANTS = {
    "operator": ["runs.view_stepcacheentry", "runs.delete_stepcacheentry"],
    "manager": ["runs.view_stepcacheentry"],
    "viewer": ["runs.view_stepcacheentry"],
}


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [("policies", "0001_role_groups"), ("runs", "0003_step_cache_and_replay")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
