"""Controlled time: a test makes a deadline already past instead of sleeping.

The engine keeps its deadlines in the database and compares them with the
database clock (`store.now_sql()`): a run's lease (`lease_expires_at`), its
`not_before` (a retry's backoff, a wait for a limit) and `ring_at` (the
sweeper's timer), a seat's hold under a cap (`expires_at`), the grants in a
rate window (`granted_at`). These helpers move such times back in the
database, measured against that same clock, so what a test sees next does
not depend on how busy the machine is:

    lapse_lease(run_id)             # its worker is gone: the lease has ended
    let_wait_pass(run_id)           # the backoff (or the wait for a limit) is over
    expire_hold("vendor:x", "dead") # the seat's hold has run out
    let_rate_period_pass("api")     # the grants so far have left the window
    lapse_answer_claim(tool, key)   # a shared answer's buyer ran out of time
    expire_answer(tool, key)        # a shared answer's reuse time is over
    age_dedup_key("lead", "ana@acme.com", days=29)  # the key was seen 29 days earlier
    lapse_review_claim(approval_id) # the reviewer's claim on a request has run out
    age_wall_time(run_id, seconds=61) # its wall-time budget began 61 s earlier
    let_cooldown_pass("vendor:x")   # an open circuit breaker's cool-down is over
    expire_probe("vendor:x")        # its probe's holder ran out of time
    age_breaker_failures("vendor:x", seconds=61)  # its failures began 61 s earlier

A run's timers move back together, by the same amount, as if its clock had
moved on: their order is kept (a `ring_at` that followed the lease falls due
with it, one that did not stays in the future).
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection

from policies.models import Limit
from runs.engine.store import now_sql

# How far past the deadline the database clock stands afterwards.
PAST_BY_S = 0.01
RUN_TIMERS = ("lease_expires_at", "not_before", "ring_at")


def lapse_lease(run_id: int) -> None:
    """The lease on the run ends, as if its worker had been gone that long."""
    seconds = _seconds_until("runs_run", "lease_expires_at", "id = %s", [run_id])
    _rewind("runs_run", RUN_TIMERS, "id = %s", [run_id], seconds + PAST_BY_S)


def let_wait_pass(run_id: int) -> None:
    """The waiting run falls due: its retry's backoff, or its wait for a
    limit, is over."""
    seconds = _seconds_until("runs_run", "not_before", "id = %s", [run_id])
    _rewind("runs_run", RUN_TIMERS, "id = %s", [run_id], seconds + PAST_BY_S)


def expire_hold(key: str, holder: str) -> None:
    """The seat `holder` took under the cap `key` reaches the end of its hold."""
    where, params = "key = %s AND holder = %s", [key, holder]
    seconds = _seconds_until("policies_limitslot", "expires_at", where, params)
    _rewind("policies_limitslot", ("expires_at",), where, params, seconds + PAST_BY_S)


def let_rate_period_pass(key: str) -> None:
    """A whole period of the rate limit `key` goes by: every grant so far
    leaves the sliding window."""
    period_s = Limit.objects.get(key=key).period_s
    _rewind("policies_rategrant", ("granted_at",), "key = %s", [key], period_s + PAST_BY_S)


def age_dedup_key(scope: str, key: str, *, days: float) -> None:
    """The dedup record of `key` in `scope` was made `days` earlier: its
    first sighting and its window's end move back together."""
    where, params = "scope = %s AND key = %s", [scope, key]
    _rewind("knowledge_deduprecord", ("first_seen_at", "expires_at"), where, params, days * 86400)


def _seconds_until(table: str, column: str, where: str, params: list) -> float:
    """How long until the latest `column` of the rows, by the database clock."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT max({column}), {now_sql()} FROM {table} WHERE {where}", params)
        deadline, now = cursor.fetchone()
    assert deadline is not None, f"no {column} in {table} where {where} {params}"
    return max(0.0, (_aware(deadline) - _aware(now)).total_seconds())


def _rewind(table: str, columns: tuple[str, ...], where: str, params: list, seconds: float):
    """Move the times in `columns` of the rows `seconds` into the past
    (NULLs stay NULL), written in the format the engine writes."""
    if connection.vendor == "postgresql":
        earlier = "{} - make_interval(secs => %s)"
    else:
        earlier = "strftime('%%Y-%%m-%%d %%H:%%M:%%f', {}, printf('%%+.3f seconds', %s))"
        seconds = -seconds
    sets = ", ".join(f"{column} = {earlier.format(column)}" for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {sets} WHERE {where}", [seconds] * len(columns) + params
        )
        assert cursor.rowcount, f"no row in {table} where {where} {params}"


def _aware(value: datetime | str) -> datetime:
    """A database time as an aware UTC datetime (SQLite returns text)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def lapse_answer_claim(tool: str, key: str) -> None:
    """The buyer holding the shared answer `(tool, key)` runs out of time
    (it died mid-call): the next caller may take the purchase over."""
    where, params = "tool = %s AND key = %s", [tool, key]
    seconds = _seconds_until("runs_toolanswer", "filler_until", where, params)
    _rewind("runs_toolanswer", ("filler_until",), where, params, seconds + PAST_BY_S)


def expire_answer(tool: str, key: str) -> None:
    """The shared answer `(tool, key)` reaches the end of its reuse time."""
    where, params = "tool = %s AND key = %s", [tool, key]
    seconds = _seconds_until("runs_toolanswer", "expires_at", where, params)
    _rewind("runs_toolanswer", ("expires_at", "bought_at"), where, params, seconds + PAST_BY_S)


def lapse_review_claim(approval_id: int) -> None:
    """The reviewer who opened the request walked away: their claim ran out."""
    where, params = "id = %s", [approval_id]
    seconds = _seconds_until("approvals_approvalrequest", "claimed_until", where, params)
    _rewind("approvals_approvalrequest", ("claimed_until",), where, params, seconds + PAST_BY_S)


def let_cooldown_pass(key: str) -> None:
    """The open circuit breaker `key` reaches the end of its cool-down."""
    where, params = "key = %s", [key]
    seconds = _seconds_until("policies_breaker", "open_until", where, params)
    _rewind("policies_breaker", ("open_until",), where, params, seconds + PAST_BY_S)


def expire_probe(key: str) -> None:
    """The call probing the breaker `key` runs out of time (its holder died)."""
    where, params = "key = %s", [key]
    seconds = _seconds_until("policies_breaker", "probe_expires_at", where, params)
    _rewind("policies_breaker", ("probe_expires_at",), where, params, seconds + PAST_BY_S)


def age_breaker_failures(key: str, *, seconds: float) -> None:
    """The failures the breaker `key` counts began `seconds` earlier."""
    _rewind("policies_breaker", ("first_failure_at",), "key = %s", [key], seconds)


def age_wall_time(run_id: int, *, seconds: float) -> None:
    """The run's wall-time budget started counting `seconds` earlier."""
    _rewind("runs_run", ("wall_from",), "id = %s", [run_id], seconds)
