"""Who may do what with the guardrails.

Operators define roles, policies, limits and kill switches, settle tool
calls of unknown outcome and see step records unredacted; managers edit
policies and word lists; reviewers and viewers may look.
"""

from django.db import migrations

VIEW = [
    "policies.view_agentrole",
    "policies.view_policy",
    "policies.view_wordlist",
    "policies.view_limit",
    "policies.view_killswitch",
    "runs.view_toolcallrecord",
]
GRANTS = {
    "operator": [
        *VIEW,
        *(f"policies.{verb}_{model}" for verb in ("add", "change")
          for model in ("agentrole", "policy", "wordlist", "limit", "killswitch")),
        "runs.reconcile_toolcall",
        "runs.view_personal_data",
    ],
    "manager": [*VIEW, "policies.change_policy", "policies.add_wordlist", "policies.change_wordlist"],
    "reviewer": ["policies.view_wordlist"],
    "viewer": VIEW,
}


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [("policies", "0004_global_switch"), ("runs", "0006_guardrail_permissions")]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
