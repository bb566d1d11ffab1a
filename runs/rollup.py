"""The daily roll-up of runs that the dashboard reads (runs.metrics).

A `RollupDay` row per UTC day of `created_at`, and per (day, workflow
version) a `DailyRollup` row with the figures of the day's runs (and
`DailyRollupDedup` rows for the dedup hits that save what a first run
paid). What a rolled-up day holds is fixed by one rule:

    every rolled-up day that is not stale holds exactly its runs that
    finished before the watermark (`RollupWatermark.finished_before`),
    and its runs that were waiting when it was rolled up, as they stood
    then (each kept in DailyRollupWaiting)

so the dashboard adds, from the runs table, the runs of those days that
finished after the watermark, takes away the kept waiting runs that have
changed since and adds the unfinished runs as they stand (but those kept
unchanged), and everything of the other days.
A run that finishes after its day was rolled up (an approval that waited
days) is read from the runs until the next pass; that pass moves the
watermark on and rolls again every day with a run that finished between
the old watermark and the new one, in the same transaction. A retry makes
a terminal run active again: `engine.retry_run` marks its day stale in its
own transaction (`RollupDay.mark_stale`), and the dashboard reads a stale
day from the runs until a pass rolls it up again.

Concurrency, made safe in the database:

- A pass locks the watermark row first: two workers take turns, and the
  second finds the first's work done (a pass is idempotent).
- A pass rolls a day up only while it holds the day's row (it inserts the
  row if missing, then locks it) and reads the runs after taking the lock.
  A retry's upsert of the same row waits for that pass to commit and then
  marks the day stale; a pass that comes after a retry waits for the
  retry's commit and reads the run as active. Either way no day holds a run
  that is active again.
- The watermark stays SLACK behind the database clock, so a run finished
  by a transaction that has not committed yet (its `finished_at` already
  set) is not left out: it is read from the runs until a later pass.

Today is never rolled up (nor a day until SLACK after its end).
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from time import monotonic
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import TruncDate

from runs import tally
from runs.engine.store import now_sql
from runs.models import (
    DailyRollup,
    DailyRollupDedup,
    DailyRollupWaiting,
    RollupDay,
    RollupWatermark,
    Run,
    StepRun,
    WorkflowVersion,
)
from runs.tally import COUNTED_STEPS, ZERO, Tally, add_credits

SLACK = timedelta(minutes=5)
DAYS_PER_PASS = 7  # days rolled up per transaction (the first pass may find months)


@dataclass(frozen=True)
class RollupPass:
    """What one pass did: the days it rolled up, how many it left for the
    next pass, and the watermark it set."""

    rolled: list[date]
    left: int
    finished_before: datetime


def roll_up_days(*, limit: int = DAYS_PER_PASS) -> RollupPass:
    """One pass, in one transaction: move the watermark to the database
    clock less SLACK and roll up (newest first, at most `limit`) the days
    that need it: days over with no roll-up yet, stale days, and rolled-up
    days with runs that finished since the last pass. Such a day beyond the
    limit is marked stale instead, so the rule holds for the new watermark.
    Safe to run anywhere, any number of times at once."""
    with transaction.atomic():
        # The row exists after its first pass; ignore_conflicts, not
        # get_or_create: two first passes must not both insert it.
        RollupWatermark.objects.bulk_create([RollupWatermark(pk=1)], ignore_conflicts=True)
        mark = RollupWatermark.objects.select_for_update().get(pk=1)
        now = _database_now()
        before = now - SLACK
        if mark.finished_before is not None:
            before = max(before, mark.finished_before)
        late = _late_days(mark.finished_before, before)
        todo = sorted(late | _days_to_roll(before), reverse=True)
        for day in todo[:limit]:
            _roll_up_day(day, before=before, now=now)
        RollupDay.objects.filter(day__in=[day for day in todo[limit:] if day in late]).update(
            stale=True
        )
        mark.finished_before = before
        mark.save(update_fields=["finished_before"])
    return RollupPass(todo[:limit], len(todo[limit:]), before)


def roll_up_all(*, limit: int = DAYS_PER_PASS, within_s: float = 120.0) -> list[RollupPass]:
    """Passes until no day is left to roll up, starting none after
    `within_s` seconds (a long history is rolled up over several calls,
    each pass committed: the task stays well inside its time limit)."""
    started = monotonic()
    done = [roll_up_days(limit=limit)]
    while done[-1].left and monotonic() - started < within_s:
        done.append(roll_up_days(limit=limit))
    return done


def _database_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {now_sql()}", [])
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite answers text, in UTC
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _late_days(since: datetime | None, before: datetime) -> set[date]:
    """Rolled-up days with a run, or a step run the figures read, that
    finished in [since, before): their rows do not hold it yet. Two queries
    on indexes of `finished_at`."""
    if since is None or since >= before:
        return set()
    utc_day = TruncDate("created_at", tzinfo=UTC)
    runs = Run.objects.filter(finished_at__gte=since, finished_at__lt=before)
    steps = StepRun.objects.filter(COUNTED_STEPS, finished_at__gte=since, finished_at__lt=before)
    days = set(runs.annotate(day=utc_day).values_list("day", flat=True).distinct())
    days |= set(
        steps.annotate(day=TruncDate("run__created_at", tzinfo=UTC))
        .values_list("day", flat=True)
        .distinct()
    )
    return set(RollupDay.objects.filter(day__in=days, stale=False).values_list("day", flat=True))


def _days_to_roll(before: datetime) -> set[date]:
    """The days over (ended before `before`) since the first run's that have
    no roll-up or a stale one."""
    first = Run.objects.order_by("created_at").values_list("created_at", flat=True).first()
    if first is None:
        return set()
    start, end = first.astimezone(UTC).date(), before.astimezone(UTC).date()
    done = set(
        RollupDay.objects.filter(day__gte=start, day__lt=end, stale=False).values_list(
            "day", flat=True
        )
    )
    every = {start + timedelta(days=n) for n in range((end - start).days)}
    return every - done


def _roll_up_day(day: date, *, before: datetime, now: datetime) -> None:
    """Replace the day's rows with the figures of its runs finished before
    `before` and of their step runs finished before it, holding the day's
    row (see the module for why)."""
    RollupDay.objects.bulk_create([RollupDay(day=day, stale=True)], ignore_conflicts=True)
    RollupDay.objects.select_for_update().filter(day=day).values_list("pk").get()
    start = datetime.combine(day, time(), UTC)
    created = {"created_at__gte": start, "created_at__lt": start + timedelta(days=1)}
    counted = Q(**created, finished_at__lt=before)
    # A step run is never changed once written: those of the day's runs that
    # finished before the watermark are counted whether their run has
    # finished or not.
    steps = Q(**{f"run__{name}": value for name, value in created.items()})
    steps &= Q(finished_at__lt=before)
    totals: dict[int, Tally] = defaultdict(Tally)
    for (key, _), found in tally.run_tallies(counted).items():
        totals[key].add(found)
    for key, histogram in tally.latency_histograms(counted).items():
        totals[key].latency = histogram
    dedup, references = tally.dedup_references(steps)
    for part in (tally.step_tallies(steps), dedup):
        for key, found in part.items():
            totals[key].add(found)
    _settle(references, totals)
    # The day's runs waiting now, as they stand: counted in the day's rows,
    # and each kept, so the dashboard can tell which have changed since
    # (DailyRollupWaiting).
    waiting = tally.waiting_runs(Q(**created))
    for row in waiting:
        row.day = day
        totals[row.version_id].add(tally.kept_tally(row))
    workflows = dict(WorkflowVersion.objects.filter(pk__in=totals).values_list("id", "workflow_id"))
    DailyRollup.objects.filter(day=day).delete()
    DailyRollupDedup.objects.filter(day=day).delete()
    DailyRollupWaiting.objects.filter(day=day).delete()
    DailyRollup.objects.bulk_create(
        _row(day, key, workflows[key], total) for key, total in totals.items()
    )
    DailyRollupDedup.objects.bulk_create(
        DailyRollupDedup(day=day, **reference) for reference in references
    )
    DailyRollupWaiting.objects.bulk_create(waiting, batch_size=1000)
    RollupDay.objects.filter(day=day).update(stale=False, rolled_at=now)


def _settle(references: list[dict[str, Any]], totals: dict[int, Tally]) -> None:
    """Fold into the day's dedup savings what the first runs that have
    finished paid, and mark their references settled. Those runs are
    locked until the roll-up commits: a retry of one waits, then finds the
    settled reference and marks this day stale (RollupDay.mark_active_again);
    a retry that came first has made the run active, and the reference
    stays unsettled, read when asked for."""
    ids = sorted({ref["first_run_id"] for ref in references if ref["first_run_id"] is not None})
    paid: dict[int, tuple[Decimal, dict[str, int]]] = {}
    for chunk in range(0, len(ids), 500):
        finished = Run.objects.filter(pk__in=ids[chunk : chunk + 500], finished_at__isnull=False)
        for pk, cost, credits in finished.select_for_update(no_key=True).values_list(
            "pk", "cost_usd", "credits"
        ):
            paid[pk] = (cost, json.loads(credits) if isinstance(credits, str) else credits or {})
    for ref in references:
        key = ref["first_run_id"]
        if key is not None and key not in paid:
            continue  # still paying (or retried): read when asked for
        cost, credits = paid.get(key, (ZERO, {})) if key is not None else (ZERO, {})
        tally = totals[ref["version_id"]]
        tally.dedup_saved += cost * ref["usd_hits"]
        for vendor, spent in credits.items():
            add_credits(tally.dedup_saved_credits, vendor, int(spent) * ref["credit_hits"])
        ref["settled"] = True


def _row(day: date, version_id: int, workflow_id: int, total: Tally) -> DailyRollup:
    return DailyRollup(
        day=day,
        workflow_id=workflow_id,
        version_id=version_id,
        runs=total.runs,
        succeeded=total.succeeded,
        failed=total.failed,
        successes=total.successes,
        escalated=total.escalated,
        cost_usd=total.cost,
        vendor_usd=total.vendor,
        calls=total.calls,
        latency=_histogram(total.latency),
        credits=total.credits,
        cache_hits=total.cache_hits,
        cache_saved_usd=total.cache_saved,
        cache_saved_credits=total.cache_saved_credits,
        dedup_hits=total.dedup_hits,
        dedup_saved_usd=total.dedup_saved,
        dedup_saved_credits=total.dedup_saved_credits,
        stopped=total.stopped,
        cancelled=total.cancelled,
        machine_ms=total.machine_ms,
        decisions=total.decisions,
        wait_ms=total.wait_ms,
        breached=total.breached,
        pending=total.pending,
    )


def _histogram(found: dict[int, int]) -> dict[str, int]:
    return {str(index): count for index, count in sorted(found.items())}
