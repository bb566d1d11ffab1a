"""Concurrency caps and rate limits that hold across every worker and machine.

Both live in the database and are taken atomically:

- A cap of N for a key is N `LimitSlot` rows. A call takes a free (or
  expired) seat with one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP
  LOCKED)`, so two workers never take the same seat, and gives it back
  after the call. A seat held by a crashed worker frees itself when its
  hold expires.
- A rate of R per period is a sliding log of `RateGrant` rows. A grant is
  decided under a row lock on the key's `Limit` row: count the grants of
  the last period, insert one if fewer than R. The log is exact: no window
  of one period ever holds more than R grants (a token bucket would let a
  burst of 2R straddle a window).

A call that cannot go now gets `Throttled` with how long to wait; the
caller parks the run (status `waiting`), it never sleeps in a worker.
On SQLite every write transaction is IMMEDIATE, so the same statements are
serialized by the database lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection, transaction

from policies.models import Limit, LimitSlot
from runs.engine.errors import Throttled
from runs.engine.store import later_sql, now_sql

SLOT = "policies_limitslot"
GRANT = "policies_rategrant"
LIMIT = "policies_limit"
# How soon a run waiting for a seat looks again if no release wakes it.
SEAT_POLL_S = 1.0


@dataclass(frozen=True)
class Seat:
    key: str
    slot_id: int
    holder: str


def _pg() -> bool:
    return connection.vendor == "postgresql"


def acquire(*, keys: tuple[str, ...], holder: str, hold_s: float) -> list[Seat]:
    """Take a seat for every capped key and a grant for every rated key.

    Raises Throttled (having given back what it took) when one is not
    available. Keys without a configured `Limit` cost nothing.
    """
    if not keys:
        return []
    limits = list(Limit.objects.filter(key__in=keys).order_by("key"))
    seats: list[Seat] = []
    try:
        for limit in limits:
            if limit.max_in_flight:
                seats.append(_take_seat(limit.key, limit.max_in_flight, holder, hold_s))
        for limit in limits:
            if limit.rate and limit.period_s:
                _take_grant(limit.key, limit.rate, limit.period_s)
    except Throttled:
        release(seats)
        raise
    return seats


def release(seats: list[Seat]) -> list[str]:
    """Give the seats back; returns the keys that now have a free seat."""
    freed: list[str] = []
    if not seats:  # the usual case: no capped key, nothing to open a cursor for
        return freed
    with connection.cursor() as cursor:
        for seat in seats:
            cursor.execute(
                f"UPDATE {SLOT} SET holder = '', expires_at = NULL WHERE id = %s AND holder = %s",
                [seat.slot_id, seat.holder],
            )
            if cursor.rowcount:
                freed.append(seat.key)
    return freed


def in_flight(key: str) -> int:
    """Seats currently held for `key` (for dashboards and tests)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {SLOT} WHERE key = %s AND holder <> ''"
            f" AND expires_at > {now_sql()}",
            [key],
        )
        count: int = cursor.fetchone()[0]
        return count


def _take_seat(key: str, cap: int, holder: str, hold_s: float) -> Seat:
    # Seats beyond the current cap are ignored, so lowering a cap in admin
    # takes effect as the extra seats are given back.
    lock = " FOR UPDATE SKIP LOCKED" if _pg() else ""
    free = f"(holder = '' OR expires_at < {now_sql()})"
    sql = (
        f"UPDATE {SLOT} SET holder = %s, expires_at = {later_sql()}"
        f" WHERE id = (SELECT id FROM {SLOT} WHERE key = %s AND slot < %s AND {free}"
        f" ORDER BY slot LIMIT 1{lock}) AND {free} RETURNING id"
    )
    for _ in range(2):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [holder, hold_s, key, cap])
            row = cursor.fetchone()
        if row is not None:
            return Seat(key, row[0], holder)
        if not _ensure_seats(key, cap):
            break
    raise Throttled(key, SEAT_POLL_S, kind="concurrency")


def _ensure_seats(key: str, cap: int) -> bool:
    """Create missing seat rows; True when some were missing."""
    have = set(LimitSlot.objects.filter(key=key, slot__lt=cap).values_list("slot", flat=True))
    missing = [LimitSlot(key=key, slot=n) for n in range(cap) if n not in have]
    if missing:
        # The unique (key, slot) constraint makes concurrent creators harmless.
        LimitSlot.objects.bulk_create(missing, ignore_conflicts=True)
    return bool(missing)


def _take_grant(key: str, rate: int, period_s: float) -> None:
    pg = _pg()
    with transaction.atomic(), connection.cursor() as cursor:
        if pg:
            # Serialize grants per key; the clock is read after the lock.
            cursor.execute(f"SELECT id FROM {LIMIT} WHERE key = %s FOR UPDATE", [key])
        cursor.execute(f"SELECT {now_sql()}", [])
        now = _as_datetime(cursor.fetchone()[0])
        since = now.timestamp() - period_s
        cursor.execute(
            f"SELECT granted_at FROM {GRANT} WHERE key = %s ORDER BY granted_at DESC LIMIT %s",
            [key, rate],
        )
        recent = [_as_datetime(row[0]) for row in cursor.fetchall()]
        inside = [at for at in recent if at.timestamp() > since]
        if len(inside) >= rate:
            # The oldest of the last R grants leaves the window first.
            wait = inside[-1].timestamp() + period_s - now.timestamp()
            raise Throttled(key, max(wait, 0.01), kind="rate")
        cursor.execute(
            f"INSERT INTO {GRANT} (key, granted_at) VALUES (%s, %s)", [key, _param(now, pg)]
        )
        # Keep the log short: grants older than one period decide nothing
        # (kept longer only when BOSUN_RATE_GRANT_RETENTION_S asks for it).
        keep_s = max(period_s, settings.BOSUN_RATE_GRANT_RETENTION_S)
        cursor.execute(
            f"DELETE FROM {GRANT} WHERE key = %s AND granted_at < %s",
            [key, _param(datetime.fromtimestamp(now.timestamp() - keep_s, tz=UTC), pg)],
        )


def _as_datetime(value: datetime | str) -> datetime:
    """A database time as an aware UTC datetime (SQLite returns text)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def _param(value: datetime, pg: bool) -> datetime | str:
    # SQLite compares times as text: write them in the engine's format.
    return value if pg else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
