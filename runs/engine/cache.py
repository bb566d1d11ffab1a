"""The step cache: one computation per (step, model, rendered input) and TTL.

The unique `key` column is both the index and the fill lock. A worker that
misses inserts a pending entry (or takes over an expired one) in a single
`INSERT … ON CONFLICT … DO UPDATE … WHERE` statement; whoever gets the row
back computes the value, everyone else waits for it to be filled. So two
concurrent misses make one model call, and there is never a second row.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import connection

from runs.engine import store
from runs.models import StepCacheEntry

TABLE = "runs_stepcacheentry"
POLL_S = 0.05


@dataclass(frozen=True)
class Hit:
    output: Any
    edge: str
    model: str
    cost_usd: Decimal


def cache_key(
    *, workflow_id: int, step_key: str, kind: str, config: dict[str, Any], material: Any
) -> str:
    """Hash of everything that determines the step's answer."""
    blob = json.dumps(
        [workflow_id, step_key, kind, config, material], sort_keys=True, default=str
    ).encode()
    return hashlib.sha256(blob).hexdigest()


def lookup(key: str) -> Hit | None:
    """The live entry for `key`, if one is filled and not expired."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT output, edge, model, cost_usd FROM {TABLE}"
            f" WHERE key = %s AND filled = %s AND expires_at > {store.now_sql()}",
            [key, True],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    output, edge, model, cost = row
    if isinstance(output, str):
        output = json.loads(output)
    return Hit(output, edge, model, Decimal(str(cost)))


def claim(key: str, *, workflow_id: int, step_key: str, token: str, hold_s: float) -> bool:
    """Become the one filler of `key`. False when a live entry exists or
    another worker is filling it (and its hold has not run out)."""
    now, later = store.now_sql(), store.later_sql()
    sql = (
        f"INSERT INTO {TABLE} (key, workflow_id, step_key, filled, filler, filler_until,"
        " edge, model, cost_usd, created_at, hits)"
        f" VALUES (%s, %s, %s, %s, %s, {later}, '', '', 0, {now}, 0)"
        " ON CONFLICT (key) DO UPDATE SET filled = excluded.filled, filler = excluded.filler,"
        " filler_until = excluded.filler_until, output = NULL, expires_at = NULL"
        f" WHERE ({TABLE}.filled = %s AND {TABLE}.expires_at <= {now})"
        f" OR ({TABLE}.filled = %s AND {TABLE}.filler_until < {now})"
        " RETURNING filler"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [key, workflow_id, step_key, False, token, hold_s, True, False])
        row = cursor.fetchone()
    return row is not None and row[0] == token


def fill(
    key: str,
    *,
    token: str,
    output: Any,
    edge: str,
    model: str,
    cost_usd: Decimal,
    ttl_s: float,
    run_id: int,
) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET filled = %s, output = {store.json_param()}, edge = %s, model = %s,"
            f" cost_usd = %s, source_run_id = %s, expires_at = {store.later_sql()}"
            " WHERE key = %s AND filler = %s",
            [True, store.dump(output), edge, model, str(cost_usd), run_id, ttl_s, key, token],
        )


def release(key: str, *, token: str) -> None:
    """Give up a fill that failed, so the next miss can claim at once."""
    StepCacheEntry.objects.filter(key=key, filler=token, filled=False).delete()


def wait_for(key: str, *, timeout_s: float) -> Hit | None:
    """Wait for another worker's fill; None if it did not come in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(POLL_S)
        hit = lookup(key)
        if hit is not None:
            return hit
        if not StepCacheEntry.objects.filter(key=key, filled=False).exists():
            return lookup(key)
    return None


def invalidate_step_cache(*, workflow_id: int, step_key: str | None = None) -> int:
    """Drop cached results of a workflow (or one of its steps)."""
    entries = StepCacheEntry.objects.filter(workflow_id=workflow_id)
    if step_key is not None:
        entries = entries.filter(step_key=step_key)
    return entries.delete()[0]
