"""Shared answers of paid reads: bought once per thing they describe.

A read tool that defines `answer_key(args)` (enrich.company: the company's
domain) shares its answers across runs, contacts and workflows for the
reuse time a manager sets (policies.AnswerReuse, else the tool's default).
The row `(tool, key)` is the purchase lock, filled the way the step cache is
(runs.engine.cache): one `INSERT … ON CONFLICT … DO UPDATE … WHERE`
statement claims it for a buyer; everyone else waits for the fill.

The vendor is asked under a request key made of the row's generation, not
of the run: a buyer that died after the vendor charged and whoever takes
over its claim ask with the same key, and a vendor that honours request
keys answers without charging again. Only an expired answer starts a new
generation (a new purchase).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from django.db import connection

from policies.models import AnswerReuse
from runs.engine import store

TABLE = "runs_toolanswer"


@dataclass(frozen=True)
class Claim:
    """This caller buys the answer: ask the vendor under `request_key`."""

    generation: int
    request_key: str


def reuse_s(tool: str, default_s: int) -> int:
    """Seconds an answer of `tool` is reused (a manager's setting wins)."""
    configured = AnswerReuse.objects.filter(tool=tool).values_list("ttl_s", flat=True).first()
    return default_s if configured is None else int(configured)


@dataclass(frozen=True)
class Answer:
    result: dict[str, Any]
    buyer: str  # the ledger key of the call that bought it


def lookup(tool: str, key: str) -> Answer | None:
    """A filled, unexpired answer, counted as a hit; None otherwise."""
    now = store.now_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET hits = hits + 1 WHERE tool = %s AND key = %s"
            f" AND filled = %s AND expires_at > {now} RETURNING result, filler",
            [tool, key, True],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    result, buyer = row
    loaded: dict[str, Any] = json.loads(result) if isinstance(result, str) else result
    return Answer(loaded, buyer)


def claim(tool: str, key: str, *, buyer: str, hold_s: float) -> Claim | None:
    """Become the buyer of `(tool, key)`, or None while a live answer
    exists or another buyer holds the claim.

    Taken over: an expired answer (a new generation: a new purchase), a
    claim whose holder's time ran out (the same generation: the same
    request key), or this buyer's own earlier claim (a retry)."""
    now, later = store.now_sql(), store.later_sql()
    sql = (
        f"INSERT INTO {TABLE} (tool, key, generation, filled, filler, filler_until, hits)"
        f" VALUES (%s, %s, 1, %s, %s, {later}, 0)"
        " ON CONFLICT (tool, key) DO UPDATE SET"
        f" generation = {TABLE}.generation"
        f" + CASE WHEN {TABLE}.filled = %s THEN 1 ELSE 0 END,"
        " filled = excluded.filled, filler = excluded.filler,"
        " filler_until = excluded.filler_until"
        f" WHERE ({TABLE}.filled = %s AND {TABLE}.expires_at <= {now})"
        f" OR ({TABLE}.filled = %s AND ({TABLE}.filler_until < {now} OR {TABLE}.filler = %s))"
        " RETURNING filler, generation"
    )
    params: list[str | bool | float] = [tool, key, False, buyer, hold_s, True, True, False, buyer]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None or row[0] != buyer:
        return None
    generation = int(row[1])
    digest = hashlib.sha256(f"{tool}\x1f{key}".encode()).hexdigest()[:24]
    return Claim(generation, f"bosun-answer-{digest}-g{generation}")


def fill(
    tool: str, key: str, *, buyer: str, result: dict[str, Any], ttl_s: float, run_id: int
) -> None:
    now, later = store.now_sql(), store.later_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET filled = %s, result = {store.json_param()}, bought_at = {now},"
            f" expires_at = {later}, source_run_id = %s, filler_until = NULL"
            " WHERE tool = %s AND key = %s AND filler = %s AND filled = %s",
            [True, store.dump(result), ttl_s, run_id, tool, key, buyer, False],
        )


def release(tool: str, key: str, *, buyer: str) -> None:
    """Give up a claim whose purchase failed cleanly (nothing was charged):
    the next buyer may claim at once, under the same generation."""
    now = store.now_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET filler_until = {now}"
            " WHERE tool = %s AND key = %s AND filler = %s AND filled = %s",
            [tool, key, buyer, False],
        )
