from django.db import migrations

# Managers keep eval sets, cases and publish gates; operators run
# experiments and shadows and may override the gate by name; everyone who
# reads runs reads the results.
_ALL = ("view", "add", "change", "delete")
GRANTS = {
    "manager": [
        *(f"evals.{verb}_{model}" for model in ("evalset", "evalcase", "publishgate") for verb in _ALL),
        *(f"evals.{verb}_{model}" for model in ("experiment", "gateoverride", "shadowrollout") for verb in ("view", "add", "change")),
    ],
    "operator": [
        *(f"evals.view_{model}" for model in ("evalset", "evalcase", "publishgate")),
        *(f"evals.{verb}_{model}" for model in ("experiment", "gateoverride", "shadowrollout") for verb in ("view", "add", "change")),
    ],
    "viewer": [f"evals.view_{model}" for model in ("evalset", "evalcase", "experiment", "shadowrollout")],
}


def seed(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("evals", "0001_initial"),
        ("policies", "0001_role_groups"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
