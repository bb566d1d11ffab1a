"""Who may do what with rubrics, samples, API keys, webhooks and the audit log.

Managers edit rubrics; reviewers work the weekly sample and keep replay sets;
operators hold API keys and webhook sources; everyone reads the audit log
except reviewers, who need only their queue.
"""

from django.db import migrations

VIEW = [
    "policies.view_rubric",
    "policies.view_rubricversion",
    "runs.view_score",
    "approvals.view_samplereview",
    "approvals.view_sampleitem",
    "approvals.view_replayset",
]
GRANTS = {
    "operator": [
        *VIEW,
        "policies.view_auditentry",
        "policies.view_apikey", "policies.add_apikey", "policies.change_apikey",
        "runs.view_webhooksource", "runs.add_webhooksource", "runs.change_webhooksource",
        "runs.view_webhookdelivery",
        "approvals.add_replayset", "approvals.change_replayset",
    ],
    "manager": [
        *VIEW,
        "policies.add_rubric", "policies.change_rubric",
        "policies.view_auditentry",
    ],
    "reviewer": [
        *VIEW,
        "approvals.change_sampleitem",
        "approvals.add_replayset", "approvals.change_replayset",
    ],
    "viewer": [*VIEW, "policies.view_auditentry"],
}


def grant(apps, schema_editor):
    from policies.migrations import _util

    _util.grant(apps, GRANTS)


class Migration(migrations.Migration):
    dependencies = [
        ("policies", "0007_audit_append_only"),
        ("runs", "0008_console_api_audit"),
        ("approvals", "0003_console_api_audit"),
    ]
    operations = [migrations.RunPython(grant, migrations.RunPython.noop)]
