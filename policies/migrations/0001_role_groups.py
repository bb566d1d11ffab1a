"""The four role groups and what each may do.

Permissions are created here explicitly (Django would otherwise add them
only after all migrations ran), so the groups are complete on a fresh
database as soon as `migrate` finishes.
"""

from django.contrib.auth.management import create_permissions
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
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codes in ROLES.items():
        group, _ = Group.objects.get_or_create(name=role)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


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
