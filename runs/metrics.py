"""Run metrics per workflow version: volume, outcomes, latency, cost, savings.

Everything is aggregated in the database with GROUP BY, in a fixed number
of queries whatever the number of runs (runs.tally holds them). A run
belongs to a period by its `created_at`.

The days that are over are read from their daily roll-up (runs.rollup):
per (version, UTC day), the figures of the day's runs that had finished
before the roll-up's watermark and of those that were waiting when it was
rolled up, and of their step runs written before the watermark.
Everything else is read from the runs themselves: the parts of the period
that are not whole rolled-up days (today, the first day's hours, a day not
rolled up yet or marked stale by a retry) and, of the rolled-up days, the
runs not counted there (finished after the watermark, through an index on
`finished_at`; not finished and not kept unchanged since the roll-up, see
below) and the step runs written after the watermark (a partial index on
their `finished_at`). A run of a rolled-up day that was waiting then (on a
person, often for days) is kept with what would tell that it changed
(DailyRollupWaiting); while it is unchanged, which the covering index of
unfinished runs answers without its row, the roll-up's figures of it
stand; one that changed is taken away there and read as it stands. So the
figures are those of the runs as they stand, with
or without a roll-up, but for latency: over rolled-up days the
percentiles come from a latency histogram whose buckets are 5 % wide
(runs.tally.BUCKET), so they are within one bucket (5 %) of the exact
ones; a period without a rolled-up day gets exact percentiles
(PostgreSQL's `percentile_cont`; on SQLite one window query returns the
rows next to each percentile's rank). All of a report's queries read one
snapshot (REPEATABLE READ on PostgreSQL), so a roll-up or a retry
committing meanwhile is seen entirely or not at all.

The queries: one pass over the runs read directly, grouped by (version,
day), gives the counts, costs and escalations (per version by summing the
days, and the daily trend); one the latency percentiles (or histogram);
per part of the period not rolled up, one for the lowest and highest run
id; per such part, and for the step runs written after the watermark, one
each for cache hits, credits spent and dedup hits (each through its own
partial index, read by range); one the versions' names. With whole days
in the period, one more for which are rolled up, and with rolled-up days
four more: their rows, what the first runs of their dedup hits that were
still paying have paid, the kept waiting runs that changed since, and the
other unfinished runs not kept unchanged. Their number depends on how the
period falls on days, never on the number of runs: 7 for 24 hours, 19 for
30 days rolled up. Machine time and time waiting for people come with the runs'
pass (below).

Definitions (all per workflow version, over the runs created in
[since, until)):

* `runs`: runs created; `succeeded` / `failed`: runs with that status;
  `successes`: runs whose outcome counted as a success (`Run.success`).
* `success_rate` = succeeded / runs; `error_rate` = failed / runs.
* `escalation_rate`: share of runs that put at least one approval request
  in front of a person (draft review or tool call).
* `latency_p50_ms` / `latency_p95_ms`: `finished_at - created_at` of the
  finished runs, continuous percentiles (linear interpolation between the
  two nearest ranks); within 5 % when the period has rolled-up days (see
  above). None when no run finished.
* `cost_usd`: what the runs paid, model plus vendor spend (`model_usd`,
  `vendor_usd` apart); `cost_per_run` = cost / runs; `cost_per_success` =
  the cost of ALL runs / successes, i.e. what one successful outcome costs
  including the runs that did not get there (None without a success). The
  same per run and per success for the model's and the vendors' shares.
* `credits`: vendor credits spent, per vendor ({"enrichco": 150}).
* `cache_hits`, `cache_saved_usd`: step runs answered from the step cache
  and the cost recorded as saved by them (model and vendor dollars);
  `cache_saved_credits` the vendor credits they did not spend, per vendor;
  `cache_hit_rate` = hits / (hits + model calls + tool calls): the share of
  paid-or-cached answers that the cache served (a hit makes no call, so it
  is not among the calls).
* `dedup_hits`: dedup gates that took the `duplicate` edge; each reused a
  first run's results instead of paying again. `dedup_saved_usd` sums, per
  hit, the saving the step recorded if it recorded one, else what the first
  run (`output.first_run`) paid: the work the duplicate did not repeat;
  `dedup_saved_credits` the same in credits, per vendor.
* `stopped` / `cancelled`: runs with that status (beside succeeded/failed).
* Machine time and time waiting for people, which a run's latency mixes:
  `machine_ms`, the durations of the runs' step attempts added up (each
  started → finished; a step waiting for an approval records its attempt
  when it resumes), and `machine_per_run_ms` its mean per run;
  `decisions`, the approval requests decided by a person or a policy,
  `wait_ms` the time they waited (created → decided) added up and
  `wait_per_decision_ms` its mean; `pending`, runs waiting on a request
  now; `breached`, requests that went past their SLA (approvals.sla);
  `human_share` = wait / (wait + machine). Each run keeps its own sums
  (`Run.machine_ms`, `decisions`, `wait_ms`, `breaches`), written where
  they change: a step's checkpoint, a decision (engine.decide_approval,
  the only way a request is decided), a breach. So they come with the one
  pass over the runs and the roll-up keeps their sums per day like every
  other figure. Sums and means add up across days; percentiles would not
  without a histogram per run, so there are none (the SLA breaches count
  the waits' long tail).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import reduce
from operator import or_

from django.db import connection, transaction
from django.db.models import F, Max, Min, Q, Subquery
from django.utils import timezone

from runs import tally
from runs.models import (
    DailyRollup,
    DailyRollupDedup,
    RollupDay,
    RollupWatermark,
    Run,
    Workflow,
    WorkflowVersion,
)
from runs.tally import ZERO, Tally

CENT = Decimal("0.000001")


@dataclass(frozen=True)
class VersionMetrics:
    """The figures of one workflow version over a period (see the module)."""

    workflow: str
    version: int
    runs: int
    succeeded: int
    failed: int
    successes: int
    success_rate: float
    error_rate: float
    escalation_rate: float
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_usd: Decimal
    cost_per_run: Decimal
    cost_per_success: Decimal | None
    model_usd: Decimal
    model_per_run: Decimal
    model_per_success: Decimal | None
    vendor_usd: Decimal
    vendor_per_run: Decimal
    vendor_per_success: Decimal | None
    credits: dict[str, int]
    cache_hits: int
    cache_hit_rate: float
    cache_saved_usd: Decimal
    cache_saved_credits: dict[str, int]
    dedup_hits: int
    dedup_saved_usd: Decimal
    dedup_saved_credits: dict[str, int]
    version_id: int = 0
    stopped: int = 0
    cancelled: int = 0
    machine_ms: float = 0.0
    machine_per_run_ms: float | None = None
    decisions: int = 0
    wait_ms: float = 0.0
    wait_per_decision_ms: float | None = None
    pending: int = 0
    breached: int = 0

    @property
    def human_share(self) -> float | None:
        """Time waiting for people / (that + machine time); None without either."""
        whole = self.machine_ms + self.wait_ms
        return self.wait_ms / whole if whole else None


@dataclass(frozen=True)
class TrendPoint:
    """One day of the trend: volume, error rate and cost per success."""

    day: date
    runs: int
    failed: int
    successes: int
    cost_usd: Decimal
    error_rate: float
    cost_per_success: Decimal | None


@dataclass(frozen=True)
class PeriodReport:
    """The figures per version and the daily trend of one period."""

    versions: list[VersionMetrics]
    trend: list[TrendPoint]


def _ratio(part: int | Decimal, whole: int) -> float:
    return float(part) / whole if whole else 0.0


def _money(value: Decimal | None) -> Decimal:
    return (value or ZERO).quantize(CENT)


def _per(value: Decimal, count: int) -> Decimal | None:
    return (value / count).quantize(CENT) if count else None


def workflow_metrics(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> list[VersionMetrics]:
    """The figures of every workflow version with runs created in
    [since, until), ordered by workflow slug then version number. Optionally
    only one workflow's, or one version's. A fixed number of queries (none
    more for more runs, see the module); one when the period has no run
    and no whole day, two with whole days but none rolled up."""
    return period_report(since=since, until=until, workflow=workflow, version=version).versions


@dataclass(frozen=True)
class _Split:
    """A period cut in two: its whole days read from their roll-up, and the
    runs read from the runs table (`raw`, a condition on Run)."""

    rolled: list[date]
    raw: Q
    raw_finished: Q  # the finished runs among them, without the arm of the unfinished
    subject: Q  # the workflow or version asked for, on a row with both
    version_subject: Q  # the same on a row with only the version
    # The parts of the period not rolled up, and the rolled-up days, as
    # [start, end) ranges of `created_at`; the roll-up's watermark.
    unrolled: list[tuple[datetime, datetime]]
    rolled_ranges: list[tuple[datetime, datetime]]
    watermark: datetime | None
    # The runs of the rolled-up days not finished (a condition on Run):
    # their kept waiting rows where unchanged, the runs table otherwise.
    unfinished: Q | None = None


def period_report(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> PeriodReport:
    """`workflow_metrics` and `workflow_trend` of one period, from the same
    pass over the runs (and the roll-up of its whole days)."""
    with _snapshot(_whole_days(since, until)):
        split = _split(since, until, workflow, version)
        days, rolled = _days(split)
        trend = _trend(days, since, until)
        if not days:
            return PeriodReport([], trend)
        totals: dict[int, Tally] = {}
        for (key, _), found in days.items():
            totals.setdefault(key, Tally()).add(found)
        latency = _latency(split, totals, rolled)
        for part in _savings(split, rolled):
            for key, found in part.items():
                if key in totals:
                    totals[key].add(found)
        names = {
            row["id"]: (row["workflow__slug"], row["number"])
            for row in WorkflowVersion.objects.filter(pk__in=totals).values(
                "id", "number", "workflow__slug"
            )
        }
    versions = [
        _version_metrics(names[key], total, latency.get(key, (None, None)), key)
        for key, total in totals.items()
    ]
    versions.sort(key=lambda row: (row.workflow, row.version))
    return PeriodReport(versions, trend)


def _days(split: _Split) -> tuple[dict[tuple[int, date], Tally], list[DailyRollup]]:
    """Counts and money per (version, day): the one pass over the runs read
    directly, plus the rows of the rolled-up days (one query more)."""
    days = tally.run_tallies(split.raw)
    rolled = []
    if split.rolled:
        rolled = list(DailyRollup.objects.filter(split.subject, day__in=split.rolled))
    for row in rolled:
        days.setdefault((row.version_id, row.day), Tally()).add(_runs_of(row))
    for part in _unfinished(split):
        for key, found in part.items():
            days.setdefault(key, Tally()).add(found)
    return days, rolled


def _unfinished(split: _Split) -> list[dict[tuple[int, date], Tally]]:
    """The runs of the rolled-up days not finished yet, per (version, day),
    beyond what the roll-up rows hold of them: two queries. Those rows count
    the runs that were waiting when the day was rolled up (most of these:
    runs waiting on a person for days); those that have changed since are
    taken away, and every unfinished run not kept unchanged is read from the
    runs table by id (running, changed, or waiting since). Neither query
    reads the row of a run that waits unchanged."""
    if split.unfinished is None:
        return []
    kept = Q(day__in=split.rolled) & split.subject
    created = (split.rolled_ranges[0][0], split.rolled_ranges[-1][1])
    return [
        tally.changed_waiting_tallies(kept, created=created),
        tally.run_tallies(tally.not_kept_unchanged(split.unfinished, kept)),
    ]


def _whole_days(since: datetime, until: datetime) -> list[date]:
    """The UTC days wholly inside [since, until) that may be rolled up:
    none unless days are counted in UTC (the trend's days are the current
    time zone's; the roll-up's are UTC days)."""
    if timezone.localtime(since).utcoffset() or timezone.localtime(until).utcoffset():
        return []
    first = since.astimezone(UTC).date()
    if datetime.combine(first, time(), UTC) < since:
        first += timedelta(days=1)
    last = until.astimezone(UTC).date()  # the day `until` falls in is not whole
    return [first + timedelta(days=n) for n in range((last - first).days)]


@contextmanager
def _snapshot(whole_days: list[date]) -> Iterator[None]:
    """Read the roll-up and the runs in one snapshot (PostgreSQL, REPEATABLE
    READ): a roll-up, or a retry that marks a day stale, commits entirely
    before the report's reads or after them. Not needed without whole days
    (no roll-up is read); not possible inside a transaction already begun."""
    if not whole_days or connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # Compiling these queries (JIT, for their cost estimates) takes
            # longer than it saves: 10-15 ms each at a million runs.
            cursor.execute("SET LOCAL jit = off")
        yield


def _split(
    since: datetime, until: datetime, workflow: Workflow | None, version: WorkflowVersion | None
) -> _Split:
    """Which whole days of the period are rolled up (one query, none without
    a whole day), and the condition on the runs that are not counted there:
    the other parts of the period, and the runs of the rolled-up days that
    finished after the watermark. Each arm of the condition has an index:
    `created_at` (run_created_cover) and `finished_at` (run_finished_at), so
    PostgreSQL can OR their bitmaps. The runs of the rolled-up days not
    finished are apart (`unfinished`, see `_unfinished`)."""
    if since >= until:
        raise ValueError("since must be before until")
    subject, version_subject = Q(), Q()
    if workflow is not None:
        subject &= Q(workflow=workflow)
        version_subject &= Q(version__workflow=workflow)
    if version is not None:
        subject &= Q(version=version)
        version_subject &= Q(version=version)
    whole = _whole_days(since, until)
    found = list(
        RollupDay.objects.filter(stale=False, day__in=whole)
        .annotate(before=Subquery(RollupWatermark.objects.values("finished_before")[:1]))
        .values_list("day", "before")
        .order_by("day")
        if whole
        else []
    )
    rolled = [day for day, _ in found]
    watermark = found[0][1] if found else None
    ranges: list[list[datetime]] = []
    for day in rolled:
        start = datetime.combine(day, time(), UTC)
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + timedelta(days=1)
        else:
            ranges.append([start, start + timedelta(days=1)])
    arms, unfinished, unrolled = [], [], []
    cursor = since
    for start, end in ranges:
        if cursor < start:
            unrolled.append((cursor, start))
        within = Q(created_at__gte=start, created_at__lt=end)
        unfinished.append(within & Q(finished_at__isnull=True))
        arms.append(within & Q(finished_at__gte=watermark))
        cursor = end
    if cursor < until:
        unrolled.append((cursor, until))
    arms += [Q(created_at__gte=start, created_at__lt=end) for start, end in unrolled]
    return _Split(
        rolled=rolled,
        raw=reduce(or_, arms) & subject,
        raw_finished=reduce(or_, arms) & Q(finished_at__isnull=False) & subject,
        subject=subject,
        version_subject=version_subject,
        unrolled=unrolled,
        rolled_ranges=[(start, end) for start, end in ranges],
        watermark=watermark,
        unfinished=reduce(or_, unfinished) & subject if unfinished else None,
    )


def _step_parts(split: _Split) -> list[Q]:
    """The step runs the roll-up does not hold, in parts that each read one
    narrow slice of the step runs' partial indexes: per part of the period
    not rolled up, the step runs of its runs, bounded by the lowest and the
    highest id of those runs (true of every such step run, and what lets the
    partial indexes on `run_id` be read by range instead of whole); and of
    the rolled-up days, the step runs finished after the watermark (a
    partial index on `finished_at`). One query for the bounds of each part
    not rolled up."""
    subject = tally.prefixed(split.subject, "run__")
    parts = []
    for start, end in split.unrolled:
        # One query a part: each reads its own range of run_created_cover
        # (an OR of the ranges is read as a scan of the whole index). `id + 0`:
        # a plain min(id) is planned as a walk of the primary key from its
        # end, past every run of the other days.
        bounds = Run.objects.filter(
            split.subject, created_at__gte=start, created_at__lt=end
        ).aggregate(low=Min(F("id") + 0), high=Max(F("id") + 0))
        if bounds["low"] is None:
            continue  # no run there
        parts.append(
            Q(run__created_at__gte=start, run__created_at__lt=end)
            & Q(run_id__gte=bounds["low"], run_id__lte=bounds["high"])
            & subject
        )
    if split.rolled_ranges:
        within = reduce(
            or_,
            [
                Q(run__created_at__gte=start, run__created_at__lt=end)
                for start, end in split.rolled_ranges
            ],
        )
        parts.append(within & Q(finished_at__gte=split.watermark) & subject)
    return parts


def _runs_of(row: DailyRollup) -> Tally:
    """The run-level figures of a roll-up row (what the trend adds up)."""
    return Tally(
        runs=row.runs,
        succeeded=row.succeeded,
        failed=row.failed,
        stopped=row.stopped,
        cancelled=row.cancelled,
        machine_ms=row.machine_ms,
        decisions=row.decisions,
        wait_ms=row.wait_ms,
        breached=row.breached,
        pending=row.pending,
        successes=row.successes,
        escalated=row.escalated,
        cost=row.cost_usd,
        vendor=row.vendor_usd,
        calls=row.calls,
    )


def _latency(
    split: _Split, totals: dict[int, Tally], rolled: list[DailyRollup]
) -> dict[int, tuple[float | None, float | None]]:
    """p50 and p95 per version: exact over the runs alone, from the merged
    histograms when rolled-up days are in the period. One query."""
    if not split.rolled:
        return dict(tally.exact_latencies(split.raw_finished, list(totals)))
    histograms: dict[int, dict[int, int]] = {}
    for row in rolled:
        merged = histograms.setdefault(row.version_id, {})
        for index, count in row.latency.items():
            merged[int(index)] = merged.get(int(index), 0) + count
    for key, found in tally.latency_histograms(split.raw_finished).items():
        merged = histograms.setdefault(key, {})
        for index, count in found.items():
            merged[index] = merged.get(index, 0) + count
    return {
        key: (
            tally.histogram_percentile(histogram, 0.5),
            tally.histogram_percentile(histogram, 0.95),
        )
        for key, histogram in histograms.items()
    }


def _savings(split: _Split, rolled: list[DailyRollup]) -> list[dict[int, Tally]]:
    """Credits, cache and dedup figures per version: three queries (cache
    hits, credits, dedup hits) per part of the step runs read directly (see
    `_step_parts`), and with rolled-up days their rows plus one query for
    what their dedup hits' first runs that were still paying have paid."""
    parts = []
    for steps in _step_parts(split):
        parts += [tally.step_tallies(steps), tally.dedup_tallies(steps)]
    if not split.rolled:
        return parts
    from_rows: dict[int, Tally] = {}
    for row in rolled:
        from_rows.setdefault(row.version_id, Tally()).add(
            Tally(
                credits=row.credits,
                cache_hits=row.cache_hits,
                cache_saved=row.cache_saved_usd,
                cache_saved_credits=row.cache_saved_credits,
                dedup_hits=row.dedup_hits,
                dedup_saved=row.dedup_saved_usd,
                dedup_saved_credits=row.dedup_saved_credits,
            )
        )
    references = DailyRollupDedup.objects.filter(
        split.version_subject, day__in=split.rolled, settled=False
    )
    return [*parts, from_rows, tally.referenced_savings(references)]


def _version_metrics(
    name: tuple[str, int],
    total: Tally,
    latency: tuple[float | None, float | None],
    version_id: int = 0,
) -> VersionMetrics:
    runs, successes = total.runs, total.successes
    cost, vendor = _money(total.cost), _money(total.vendor)
    model = cost - vendor
    p50, p95 = latency
    return VersionMetrics(
        workflow=name[0],
        version=name[1],
        runs=runs,
        succeeded=total.succeeded,
        failed=total.failed,
        successes=successes,
        success_rate=_ratio(total.succeeded, runs),
        error_rate=_ratio(total.failed, runs),
        escalation_rate=_ratio(total.escalated, runs),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        cost_usd=cost,
        cost_per_run=(cost / runs).quantize(CENT),
        cost_per_success=_per(cost, successes),
        model_usd=model,
        model_per_run=(model / runs).quantize(CENT),
        model_per_success=_per(model, successes),
        vendor_usd=vendor,
        vendor_per_run=(vendor / runs).quantize(CENT),
        vendor_per_success=_per(vendor, successes),
        credits=total.credits,
        cache_hits=total.cache_hits,
        cache_hit_rate=_ratio(total.cache_hits, total.cache_hits + total.calls),
        cache_saved_usd=_money(total.cache_saved),
        cache_saved_credits=total.cache_saved_credits,
        dedup_hits=total.dedup_hits,
        dedup_saved_usd=_money(total.dedup_saved),
        dedup_saved_credits=total.dedup_saved_credits,
        version_id=version_id,
        stopped=total.stopped,
        cancelled=total.cancelled,
        machine_ms=total.machine_ms,
        machine_per_run_ms=total.machine_ms / runs if runs else None,
        decisions=total.decisions,
        wait_ms=total.wait_ms,
        wait_per_decision_ms=total.wait_ms / total.decisions if total.decisions else None,
        pending=total.pending,
        breached=total.breached,
    )


def workflow_trend(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> list[TrendPoint]:
    """One point per day from `since` to `until` (days without runs
    included, with zeros): runs, error rate and cost per successful outcome
    of the runs created that day. One query; with whole days one more, and
    with rolled-up days two more."""
    with _snapshot(_whole_days(since, until)):
        split = _split(since, until, workflow, version)
        days, _ = _days(split)
    return _trend(days, since, until)


def _trend(
    days: dict[tuple[int, date], Tally], since: datetime, until: datetime
) -> list[TrendPoint]:
    by_day: dict[date, Tally] = {}
    for (_, day), found in days.items():
        by_day.setdefault(day, Tally()).add(found)
    empty = Tally()
    points = []
    # TruncDate counts days in the current time zone: so do the bounds.
    day = timezone.localtime(since).date()
    last = timezone.localtime(until - timedelta(microseconds=1)).date()
    while day <= last:
        row = by_day.get(day, empty)
        cost = _money(row.cost)
        points.append(
            TrendPoint(
                day=day,
                runs=row.runs,
                failed=row.failed,
                successes=row.successes,
                cost_usd=cost,
                error_rate=_ratio(row.failed, row.runs),
                cost_per_success=_per(cost, row.successes),
            )
        )
        day += timedelta(days=1)
    return points
