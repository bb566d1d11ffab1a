"""On PostgreSQL the audit table refuses UPDATE and DELETE (and TRUNCATE).

The hash chain makes tampering detectable on any database; these triggers
make it impossible for the application's own role. A superuser can still
disable them, which is what the chain is for.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION bosun_audit_refuse() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER policies_auditentry_no_update
    BEFORE UPDATE OR DELETE ON policies_auditentry
    FOR EACH ROW EXECUTE FUNCTION bosun_audit_refuse();
CREATE TRIGGER policies_auditentry_no_truncate
    BEFORE TRUNCATE ON policies_auditentry
    FOR EACH STATEMENT EXECUTE FUNCTION bosun_audit_refuse();
"""

DROP = """
DROP TRIGGER IF EXISTS policies_auditentry_no_update ON policies_auditentry;
DROP TRIGGER IF EXISTS policies_auditentry_no_truncate ON policies_auditentry;
DROP FUNCTION IF EXISTS bosun_audit_refuse();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)  # the SQL holds a literal %


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("policies", "0006_console_api_audit")]
    operations = [migrations.RunPython(forwards, backwards)]
