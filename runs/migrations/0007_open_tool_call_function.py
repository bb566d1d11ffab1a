"""A PostgreSQL function that starts a tool call in one round trip.

It locks the global kill switch row FOR SHARE (a switch change, which locks
it FOR UPDATE, waits for this transaction) and then, in a statement with a
fresh snapshot (the function is VOLATILE), inserts the ledger row only if
no switch stops the call and no row exists for its key. On SQLite the gate
runs the same two steps in an IMMEDIATE transaction instead.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION bosun_open_tool_call(
    p_run bigint, p_seq integer, p_step text, p_tool text, p_side text,
    p_key text, p_args jsonb, p_hash text, p_workflow text
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM 1 FROM policies_killswitch WHERE scope = 'global' AND target = '' FOR SHARE;
    INSERT INTO runs_toolcallrecord (run_id, seq, step_key, tool, side_effect,
        idempotency_key, args, args_hash, status, calls, error, started_at,
        reconciled_by, reconcile_note)
    SELECT p_run, p_seq, p_step, p_tool, p_side, p_key, p_args, p_hash, 'started', 1, '',
        clock_timestamp(), '', ''
    WHERE NOT EXISTS (
        SELECT 1 FROM policies_killswitch WHERE engaged AND (scope = 'global'
            OR (scope = 'workflow' AND target = p_workflow)
            OR (scope = 'tool' AND target = p_tool)))
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO new_id;
    RETURN new_id;
END
$$;
"""


def create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            "DROP FUNCTION IF EXISTS bosun_open_tool_call"
            "(bigint, integer, text, text, text, text, jsonb, text, text)"
        )


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_guardrail_permissions"), ("policies", "0004_global_switch")]
    operations = [migrations.RunPython(create, drop)]
