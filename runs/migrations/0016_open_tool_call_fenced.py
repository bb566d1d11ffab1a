"""The ledger's open checks the worker's lease in the same round trip.

`bosun_open_tool_call` gains the caller's fencing token: the row is inserted
only while the run is still that worker's (same fence, running, lease not
run out); otherwise the function returns -1 and the gate stops the worker
before it calls anything. The old signature is dropped.
"""

import importlib

from django.db import migrations

OLD_SIGNATURE = "(bigint, integer, text, text, text, text, jsonb, text, text)"
NEW_SIGNATURE = "(bigint, integer, text, text, text, text, jsonb, text, text, bigint)"

CREATE = """
CREATE OR REPLACE FUNCTION bosun_open_tool_call(
    p_run bigint, p_seq integer, p_step text, p_tool text, p_side text,
    p_key text, p_args jsonb, p_hash text, p_workflow text, p_fence bigint
) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    new_id bigint;
BEGIN
    PERFORM 1 FROM policies_killswitch WHERE scope = 'global' AND target = '' FOR SHARE;
    IF p_fence IS NOT NULL THEN
        -- FOR SHARE: a takeover (which updates the row) waits for this
        -- transaction, so the row below is inserted by the lease holder.
        PERFORM 1 FROM runs_run WHERE id = p_run AND fence = p_fence
            AND status = 'running' AND lease_expires_at > clock_timestamp() FOR SHARE;
        IF NOT FOUND THEN
            RETURN -1;
        END IF;
    END IF;
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


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS bosun_open_tool_call{OLD_SIGNATURE}")
        schema_editor.execute(CREATE)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP FUNCTION IF EXISTS bosun_open_tool_call{NEW_SIGNATURE}")
        # The function of migration 0007.
        earlier = importlib.import_module("runs.migrations.0007_open_tool_call_function")
        schema_editor.execute(earlier.CREATE)


class Migration(migrations.Migration):
    dependencies = [("runs", "0015_tool_price_indexes")]
    operations = [migrations.RunPython(forward, backward)]
