"""A workflow keeps its slug: the database refuses to change it.

The slug is the workflow's name everywhere outside its row: a workflow's
kill switch names it (policies_killswitch.target), API clients start runs
by it, and every published version's frozen definition carries it. A
rename would quietly disarm an engaged switch (it would name a workflow
that no longer exists) while the runs already going kept the old name in
their definition. So an UPDATE that changes it fails, whatever sends it
(admin, a queryset update, SQL): a trigger on both databases, raising an
integrity error. The engine relies on it: a run's checkpoint reads its
workflow's switch by the slug taken at the claim (runs.engine.store).
"""

from __future__ import annotations

from django.db import migrations

MESSAGE = (
    "a workflow keeps its slug: kill switches, API clients and published versions name it by it"
)
PG_CREATE = f"""
CREATE OR REPLACE FUNCTION bosun_workflow_slug_fixed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '{MESSAGE} (workflow %, slug %)', OLD.id, OLD.slug
    USING ERRCODE = 'integrity_constraint_violation';
END $$;
CREATE TRIGGER workflow_slug_fixed BEFORE UPDATE OF slug ON runs_workflow
  FOR EACH ROW WHEN (OLD.slug IS DISTINCT FROM NEW.slug)
  EXECUTE FUNCTION bosun_workflow_slug_fixed();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS workflow_slug_fixed ON runs_workflow;
DROP FUNCTION IF EXISTS bosun_workflow_slug_fixed();
"""
SQLITE_CREATE = (
    "CREATE TRIGGER workflow_slug_fixed BEFORE UPDATE OF slug ON runs_workflow"
    f" WHEN OLD.slug IS NOT NEW.slug BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
)
SQLITE_DROP = "DROP TRIGGER IF EXISTS workflow_slug_fixed"


def forward(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    # No parameters: the driver leaves the function's `%` placeholders alone.
    schema_editor.execute(PG_CREATE if postgres else SQLITE_CREATE, params=None)


def backward(apps, schema_editor) -> None:
    postgres = schema_editor.connection.vendor == "postgresql"
    schema_editor.execute(PG_DROP if postgres else SQLITE_DROP)


class Migration(migrations.Migration):
    dependencies = [("runs", "0029_search_input")]

    operations = [migrations.RunPython(forward, backward)]
