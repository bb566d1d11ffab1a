"""Finding runs by the values they touched, and starting runs from the console.

- run_input_gin / toolcall_args_gin (PostgreSQL only): GIN indexes
  (jsonb_ops, which indexes values apart from their keys) on a run's input
  and a tool call's arguments, for the search's `input @@ '$.* == "…"'`
  and `input @> {...}` predicates (runs.search). Measured with
  bench/console.py's 100,000 runs: a search for one account read every run
  row, 47 ms (linear in runs); with the index 0.1 ms. Built CONCURRENTLY,
  hence not atomic. SQLite has no GIN: it reads the rows (`json_each`).
- Operators may start runs from the console (`runs.add_run`), as the API's
  write keys may.
"""

from __future__ import annotations

from django.db import migrations

INDEXES = {
    "run_input_gin": ("runs_run", "input"),
    "toolcall_args_gin": ("runs_toolcallrecord", "args"),
}
GRANTS = {"operator": ["runs.add_run"]}


def create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING gin ({column})"
        )


def drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


def grant(apps, schema_editor) -> None:
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


def revoke(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, codes in GRANTS.items():
        for code in codes:
            app_label, codename = code.split(".")
            permission = Permission.objects.filter(
                content_type__app_label=app_label, codename=codename
            ).first()
            group = Group.objects.filter(name=role).first()
            if permission is not None and group is not None:
                group.permissions.remove(permission)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [("runs", "0021_daily_rollup"), ("policies", "0001_role_groups")]

    operations = [migrations.RunPython(create, drop), migrations.RunPython(grant, revoke)]
