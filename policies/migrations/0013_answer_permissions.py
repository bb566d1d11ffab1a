"""Managers set how long a bought answer is reused; operators see and drop
shared answers (the next run then buys again)."""

from django.db import migrations

GRANTS = {
    "manager": [
        "policies.view_answerreuse", "policies.add_answerreuse", "policies.change_answerreuse",
        "runs.view_toolanswer",
    ],
    "operator": [
        "policies.view_answerreuse",
        "runs.view_toolanswer", "runs.delete_toolanswer",
    ],
}  # fmt: skip


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0012_answer_reuse"),
        ("runs", "0013_tool_answers"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
