"""Signed checkpoints of the audit chain's head, append-only like the log.

On PostgreSQL the checkpoint table refuses UPDATE, DELETE and TRUNCATE with
the audit log's own trigger function (0007).
"""

from django.db import migrations, models

CREATE = """
CREATE TRIGGER policies_auditcheckpoint_no_update
    BEFORE UPDATE OR DELETE ON policies_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION bosun_audit_refuse();
CREATE TRIGGER policies_auditcheckpoint_no_truncate
    BEFORE TRUNCATE ON policies_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION bosun_audit_refuse();
"""

DROP = """
DROP TRIGGER IF EXISTS policies_auditcheckpoint_no_update ON policies_auditcheckpoint;
DROP TRIGGER IF EXISTS policies_auditcheckpoint_no_truncate ON policies_auditcheckpoint;
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):

    dependencies = [
        ('policies', '0009_destinations_and_guards'),
    ]

    operations = [
        migrations.CreateModel(
            name='AuditCheckpoint',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('at', models.DateTimeField()),
                ('last_id', models.BigIntegerField(help_text='id of the newest audit entry (0: none yet)')),
                ('last_hash', models.CharField(max_length=64)),
                ('count', models.BigIntegerField(help_text='audit entries up to and including last_id')),
                ('key_id', models.CharField(help_text='fingerprint of the signing key', max_length=16)),
                ('mac', models.CharField(help_text='HMAC-SHA256 of the fields above', max_length=64)),
            ],
            options={
                'ordering': ['id'],
            },
        ),
        migrations.RunPython(forwards, backwards),
    ]
