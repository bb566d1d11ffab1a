from django.db import migrations


def create_global_switch(apps, schema_editor):
    # The tool gate locks this row FOR SHARE on every call; it must exist.
    KillSwitch = apps.get_model("policies", "KillSwitch")
    KillSwitch.objects.get_or_create(scope="global", target="")


class Migration(migrations.Migration):
    dependencies = [("policies", "0003_guardrails")]

    operations = [migrations.RunPython(create_global_switch, migrations.RunPython.noop)]
