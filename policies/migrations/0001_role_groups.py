"""The four role groups and what each may do.

Permissions are created here explicitly (Django would otherwise add them
only after all migrations ran), so the groups are complete on a fresh
database as soon as `migrate` finishes.
"""

from django.db import migrations

ROLES = {
    # Defines workflows, publishes versions, retries and cancels runs.
    "operator": [
        "runs.view_workflow", "runs.add_workflow", "runs.change_workflow",
        "runs.view_step", "runs.add_step", "runs.change_step", "runs.delete_step",
        "runs.publish_workflow", "runs.view_workflowversion",
        "runs.view_run", "runs.retry_run", "runs.cancel_run", "runs.view_steprun",
        "approvals.view_approvalrequest",
    ],
    # Edits rubrics, thresholds and routes; reads runs and their costs.
    "manager": [
        "runs.view_workflow", "runs.view_step", "runs.view_workflowversion",
        "runs.view_run", "runs.view_steprun", "approvals.view_approvalrequest",
    ],
    # Works the review queue.
    "reviewer": [
        "runs.view_run", "runs.view_steprun", "approvals.view_approvalrequest",
        "approvals.decide_approval",
    ],
    # Reads everything, changes nothing.
    "viewer": [
        "runs.view_workflow", "runs.view_step", "runs.view_workflowversion",
        "runs.view_run", "runs.view_steprun", "approvals.view_approvalrequest",
    ],
}


def create_groups(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, ROLES)


def remove_groups(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLES).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("runs", "0001_initial"),
        ("approvals", "0001_initial"),
    ]
    operations = [migrations.RunPython(create_groups, remove_groups)]
