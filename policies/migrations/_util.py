"""Helpers for the data migrations that grant role permissions."""

from django.contrib.auth.management import create_permissions


def grant(apps, grants: dict[str, list[str]]) -> None:
    """Give each role group its permissions, creating them first (Django
    would otherwise add them only after every migration has run), from the
    models as they were at this migration, not as they are today: a model
    that later moves to another app keeps its permissions here."""
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codes in grants.items():
        group, _ = Group.objects.get_or_create(name=role)
        for code in codes:
            app_label, codename = code.split(".")
            group.permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
