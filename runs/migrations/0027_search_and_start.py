"""Finding runs by the values they touched, and starting runs from the console.

- run_input_gin / toolcall_args_gin (PostgreSQL only): GIN indexes
  (jsonb_ops, which indexes values apart from their keys) on a run's input
  and a tool call's arguments, for the search's `input @@ '$.* == "…"'`
  and `input @> {...}` predicates (runs.search). Measured with
  bench/console.py's 100,000 runs: a search for one account read every run
  row, 47 ms (linear in runs); with the index 0.1 ms. Built CONCURRENTLY,
  hence not atomic. SQLite has no GIN: it reads the rows (`json_each`).
- bosun_json_domains(jsonb) (PostgreSQL only): the domains a JSON object's
  top-level strings name by an email address (`bob@acme.com`) or a URL
  (`https://www.acme.com/x`), lower-cased, without `www.`; with GIN
  indexes on it for a run's input and a tool call's arguments
  (run_input_domains, toolcall_args_domains), so a search for an account
  finds the runs that name it only by an address or a website. It is
  IMMUTABLE (a pure function of its argument), as an index expression
  must be, and costed high (COST 1000) so that the planner reads the index
  rather than computing it row by row. SQLite matches the values with LIKE instead.
- toolcall_tool_run, approval_decision_code_run: the search by tool called
  and by a reviewer's reason code reads the matching rows only. Measured
  on the same data with 437,980 tool calls and 34,834 approvals: a tool no
  run called took 49 ms (a pass over every call), 2.5 ms with the index;
  a reason code no decision used 16 ms, 4 ms. The reason-code index is
  partial (only decisions with a code: rejections) and is created here,
  with the search it serves.
- Operators may start runs from the console (`runs.add_run`), as the API's
  write keys may.
"""

from __future__ import annotations

from django.db import migrations

INDEXES = {
    "run_input_gin": ("runs_run", "input"),
    "toolcall_args_gin": ("runs_toolcallrecord", "args"),
}
DOMAINS_FUNCTION = r"""
CREATE OR REPLACE FUNCTION bosun_json_domains(value jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE COST 1000 AS $$
  SELECT coalesce(array_agg(DISTINCT d) FILTER (WHERE d <> ''), '{}'::text[])
  FROM (
    SELECT rtrim(regexp_replace(lower(substring(e.value #>> '{}'
             FROM '(?:@|://)([^/?#:@<>[:space:]]+)')), '^www\.', ''), '.') AS d
    FROM jsonb_each(CASE WHEN jsonb_typeof(value) = 'object' THEN value ELSE '{}'::jsonb END) AS e
    WHERE jsonb_typeof(e.value) = 'string'
  ) AS found
$$
"""
# name: (table, column), GIN on bosun_json_domains(column); PostgreSQL only.
DOMAIN_INDEXES = {
    "run_input_domains": ("runs_run", "input"),
    "toolcall_args_domains": ("runs_toolcallrecord", "args"),
}
# name: (table, columns, condition); on every database.
BTREE = {
    "toolcall_tool_run": ("runs_toolcallrecord", "tool, run_id", ""),
    "approval_decision_code_run": (
        "approvals_approvalrequest",
        "decision_code, run_id",
        "decision_code <> ''",
    ),
}
GRANTS = {"operator": ["runs.add_run"]}


def create(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for name, (table, columns, condition) in BTREE.items():
        sql = "CREATE INDEX {}IF NOT EXISTS {} ON {} ({})".format(
            "CONCURRENTLY " if postgres else "", name, table, columns
        )
        schema_editor.execute(sql + (f" WHERE {condition}" if condition else ""))
    if not postgres:
        return
    for name, (table, column) in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING gin ({column})"
        )
    schema_editor.execute(DOMAINS_FUNCTION)
    for name, (table, column) in DOMAIN_INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table}"
            f" USING gin (bosun_json_domains({column}))"
        )


def drop(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    for name in BTREE:
        schema_editor.execute(f"DROP INDEX {'CONCURRENTLY ' if postgres else ''}IF EXISTS {name}")
    if not postgres:
        return
    for name in [*INDEXES, *DOMAIN_INDEXES]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
    schema_editor.execute("DROP FUNCTION IF EXISTS bosun_json_domains(jsonb)")


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

    dependencies = [
        ("runs", "0026_time_split"),
        ("policies", "0001_role_groups"),
        ("approvals", "0004_review_flow"),
    ]

    operations = [migrations.RunPython(create, drop), migrations.RunPython(grant, revoke)]
