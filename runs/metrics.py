"""Run metrics per workflow version: volume, outcomes, latency, cost, savings.

Everything is aggregated in the database with GROUP BY, in a fixed number
of queries whatever the number of runs: one pass over the runs of the
period grouped by (version, day) gives the counts, costs and escalations
(per version by summing the days, and the daily trend); one query gives
the latency percentiles (PostgreSQL's `percentile_cont`; on SQLite one
window query returns the rows next to each percentile's rank); one the
credits spent and the cache's savings, one the dedup's savings; one the
versions' names. Five in all, on both databases. A run belongs to a period by its `created_at`. On
PostgreSQL the pass over the runs can be an index-only scan of the
covering index of migration 0014 (the planner picks it when random page
reads are priced for SSDs, see bench/console.py), and the credits and the
savings read only the step runs that spent or saved something (partial
indexes).

Definitions (all per workflow version, over the runs created in
[since, until)):

* `runs`: runs created; `succeeded` / `failed`: runs with that status;
  `successes`: runs whose outcome counted as a success (`Run.success`).
* `success_rate` = succeeded / runs; `error_rate` = failed / runs.
* `escalation_rate`: share of runs that put at least one approval request
  in front of a person (draft review or tool call).
* `latency_p50_ms` / `latency_p95_ms`: `finished_at - created_at` of the
  finished runs, continuous percentiles (linear interpolation between the
  two nearest ranks). None when no run finished.
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
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    BigIntegerField,
    Count,
    DecimalField,
    F,
    FloatField,
    Func,
    JSONField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.fields.json import KT
from django.db.models.functions import Cast, Coalesce, Least, NullIf, RowNumber, TruncDate
from django.utils import timezone

from approvals.models import ApprovalRequest
from runs.models import Run, RunStatus, StepKind, StepRun, StepRunStatus, Workflow, WorkflowVersion

CENT = Decimal("0.000001")
MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=16, decimal_places=6)
ZERO = Decimal(0)


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


class LatencyMs(Func):
    """`finished_at - created_at` of a run in milliseconds (NULL while it runs)."""

    output_field = FloatField()

    def __init__(self) -> None:
        super().__init__(F("finished_at"), F("created_at"))

    def as_sql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            # date_part is double precision; EXTRACT is numeric (slower) since PG 14.
            template="(date_part('epoch', %(expressions)s) * 1000)",
            arg_joiner=" - ",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        # julianday() keeps the stored fractional seconds: a day is 86,400,000 ms.
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400000.0)",
            arg_joiner=") - julianday(",
            **extra_context,
        )


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: the median and the 95th
    percentile in one call, `percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP`."""

    function = "percentile_cont"
    template = "%(function)s(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY %(expressions)s)"


def _runs(
    since: datetime, until: datetime, workflow: Workflow | None, version: WorkflowVersion | None
) -> QuerySet[Run]:
    if since >= until:
        raise ValueError("since must be before until")
    runs = Run.objects.filter(created_at__gte=since, created_at__lt=until)
    if workflow is not None:
        runs = runs.filter(workflow=workflow)
    if version is not None:
        runs = runs.filter(version=version)
    return runs


def _prefixed(
    since: datetime, until: datetime, workflow: Workflow | None, version: WorkflowVersion | None
) -> Q:
    """The same period and filters, seen from a row that points at a run."""
    q = Q(run__created_at__gte=since, run__created_at__lt=until)
    if workflow is not None:
        q &= Q(run__workflow=workflow)
    if version is not None:
        q &= Q(run__version=version)
    return q


def _ratio(part: int | Decimal, whole: int) -> float:
    return float(part) / whole if whole else 0.0


def _money(value: Decimal | None) -> Decimal:
    return (value or ZERO).quantize(CENT)


def _per(value: Decimal, count: int) -> Decimal | None:
    return (value / count).quantize(CENT) if count else None


def _add_credits(into: dict[str, int], vendor: str, credits: int) -> None:
    if vendor and credits:
        into[vendor] = into.get(vendor, 0) + int(credits)


@dataclass(frozen=True)
class PeriodReport:
    """The figures per version and the daily trend of one period."""

    versions: list[VersionMetrics]
    trend: list[TrendPoint]


def workflow_metrics(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> list[VersionMetrics]:
    """The figures of every workflow version with runs created in
    [since, until), ordered by workflow slug then version number. Optionally
    only one workflow's, or one version's. Five queries (none more for more
    runs); one when the period has no run."""
    return period_report(since=since, until=until, workflow=workflow, version=version).versions


def period_report(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> PeriodReport:
    """`workflow_metrics` and `workflow_trend` of one period, from the same
    pass over the runs (five queries in all)."""
    runs = _runs(since, until, workflow, version)
    days = _day_rows(runs, since)
    trend = _trend(days, since, until)
    if not days:
        return PeriodReport([], trend)
    totals: dict[int, dict[str, Any]] = {}
    for row in days:
        total = totals.setdefault(row["version_id"], dict.fromkeys(_SUMMED, 0))
        for name in _SUMMED:
            total[name] += row[name] or 0
    latency = _latency(runs, list(totals))
    savings = _savings(since, until, workflow, version)
    names = {
        row["id"]: (row["workflow__slug"], row["number"])
        for row in WorkflowVersion.objects.filter(pk__in=totals).values(
            "id", "number", "workflow__slug"
        )
    }
    versions = [
        _version_metrics(key, names[key], total, latency, savings) for key, total in totals.items()
    ]
    versions.sort(key=lambda row: (row.workflow, row.version))
    return PeriodReport(versions, trend)


_SUMMED = ("runs", "succeeded", "failed", "successes", "cost", "vendor", "calls", "escalated")


def _day_rows(runs: QuerySet[Run], since: datetime) -> list[dict[str, Any]]:
    """Counts and costs per (version, day): the one pass over the runs."""
    # An approval request is created after its run, so the requests since
    # the period began (an hour of slack for clocks) hold every request of
    # its runs: a bounded set, hashed once, not one look-up per run.
    asked = ApprovalRequest.objects.filter(created_at__gte=since - timedelta(hours=1))
    return list(
        runs.annotate(day=TruncDate("created_at"))
        .values("version_id", "day")
        .annotate(
            runs=Count("*"),
            succeeded=Count("id", filter=Q(status=RunStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(status=RunStatus.FAILED)),
            successes=Count("id", filter=Q(success=True)),
            cost=Sum("cost_usd"),
            vendor=Sum("vendor_usd"),
            calls=Sum(F("llm_calls") + F("tool_calls")),
            escalated=Count("id", filter=Q(id__in=asked.values("run_id"))),
        )
        .order_by()
    )


def _version_metrics(
    key: int,
    name: tuple[str, int],
    total: dict[str, Any],
    latency: dict[int, tuple[float | None, float | None]],
    savings: dict[str, dict[int, dict[str, Any]]],
) -> VersionMetrics:
    runs, successes = total["runs"], total["successes"]
    cost, vendor = _money(total["cost"]), _money(total["vendor"])
    model = cost - vendor
    cached = savings["cache"].get(key, {})
    deduped = savings["dedup"].get(key, {})
    cache_hits = cached.get("hits", 0)
    p50, p95 = latency.get(key, (None, None))
    return VersionMetrics(
        workflow=name[0],
        version=name[1],
        runs=runs,
        succeeded=total["succeeded"],
        failed=total["failed"],
        successes=total["successes"],
        success_rate=_ratio(total["succeeded"], runs),
        error_rate=_ratio(total["failed"], runs),
        escalation_rate=_ratio(total["escalated"], runs),
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
        credits=savings["credits"].get(key, {}),
        cache_hits=cache_hits,
        cache_hit_rate=_ratio(cache_hits, cache_hits + total["calls"]),
        cache_saved_usd=_money(cached.get("saved")),
        cache_saved_credits=cached.get("credits", {}),
        dedup_hits=deduped.get("hits", 0),
        dedup_saved_usd=_money(deduped.get("saved")),
        dedup_saved_credits=deduped.get("credits", {}),
    )


def _latency(
    runs: QuerySet[Run], versions: list[int]
) -> dict[int, tuple[float | None, float | None]]:
    finished = runs.filter(finished_at__isnull=False)
    if connection.vendor != "postgresql":
        return _latency_by_window(finished)
    from django.contrib.postgres.fields import ArrayField

    # One ordered-set aggregate per version, each over its own runs (FILTER):
    # the period's runs are read once and never sorted as a whole (a GROUP BY
    # would sort them all by version first), and each aggregate sorts only
    # its version's latencies, once for both percentiles.
    found = finished.aggregate(
        **{
            f"v{key}": PercentileCont(
                LatencyMs(), filter=Q(version_id=key), output_field=ArrayField(FloatField())
            )
            for key in versions
        }
    )
    return {key: tuple(found[f"v{key}"]) for key in versions if found[f"v{key}"] is not None}


def _latency_by_window(runs: QuerySet[Run]) -> dict[int, tuple[float | None, float | None]]:
    """p50 and p95 per version without `percentile_cont`: one query ranks the
    finished runs by latency within their version and returns only the rows
    next to each percentile's fractional rank (at most four per version);
    the interpolation between them is done here, as percentile_cont does."""
    ranked = (
        runs.annotate(
            ms=LatencyMs(),
            rank=Window(RowNumber(), partition_by=[F("version_id")], order_by=LatencyMs().asc()),
            size=Window(Count("id"), partition_by=[F("version_id")]),
        )
        # The 0-based rank r is needed for a percentile p when |r - p(n-1)| < 1.
        .annotate(
            near=Least(
                Func(F("rank") - 1 - 0.5 * (F("size") - 1), function="ABS"),
                Func(F("rank") - 1 - 0.95 * (F("size") - 1), function="ABS"),
            )
        )
        .filter(near__lt=1)
        .values_list("version_id", "rank", "size", "ms")
    )
    found: dict[int, dict[int, float]] = defaultdict(dict)
    sizes: dict[int, int] = {}
    for version_id, rank, size, ms in ranked:
        found[version_id][rank - 1] = ms
        sizes[version_id] = size
    return {
        key: (_interpolate(found[key], sizes[key], 0.5), _interpolate(found[key], sizes[key], 0.95))
        for key in found
    }


def _interpolate(values: dict[int, float], size: int, fraction: float) -> float:
    position = fraction * (size - 1)
    low, high = math.floor(position), math.ceil(position)
    return values[low] + (values[high] - values[low]) * (position - low)


def _savings(
    since: datetime, until: datetime, workflow: Workflow | None, version: WorkflowVersion | None
) -> dict[str, dict[int, dict[str, Any]]]:
    """Credits spent, and cache hits and dedup duplicates and what they
    saved, per version: two queries over only the step runs that spent
    credits or saved something (partial indexes hold exactly those rows,
    see migrations 0009 and 0014). Credits are per vendor: the first query's
    rows come per (version, vendor), the dedup's per (version, the first
    run's credits), a handful of shapes."""
    period = StepRun.objects.filter(_prefixed(since, until, workflow, version))
    cache_rows = (
        period.filter(Q(cache_hit=True) | Q(credits__gt=0))
        .values("run__version_id", "vendor", "cache_hit")
        .annotate(
            hits=Count("*"),
            saved=Sum("cost_saved_usd"),
            saved_credits=Sum("credits_saved"),
            credits=Sum("credits"),
        )
        .order_by()
    )
    first_run = Run.objects.filter(pk=OuterRef("first_run_id"))
    dedup_rows = (
        period.filter(kind=StepKind.DEDUP, edge="duplicate", status=StepRunStatus.SUCCEEDED)
        .annotate(first_run_id=Cast(KT("output__first_run"), BigIntegerField()))
        .values(
            "run__version_id",
            "vendor",
            "credits_saved",
            first_credits=Subquery(first_run.values("credits")[:1], output_field=JSONField()),
        )
        .annotate(
            hits=Count("*"),
            saved=Sum(
                Coalesce(
                    NullIf("cost_saved_usd", Value(ZERO)),
                    Subquery(first_run.values("cost_usd")[:1], output_field=MONEY),
                    Value(ZERO),
                ),
                output_field=MONEY,
            ),
        )
        .order_by()
    )
    spent: dict[int, dict[str, int]] = defaultdict(dict)
    cache: dict[int, dict[str, Any]] = {}
    for row in cache_rows:
        version_id = row["run__version_id"]
        _add_credits(spent[version_id], row["vendor"], row["credits"])
        if not row["cache_hit"]:
            continue
        found = cache.setdefault(version_id, {"hits": 0, "saved": ZERO, "credits": {}})
        found["hits"] += row["hits"]
        found["saved"] += row["saved"] or ZERO
        _add_credits(found["credits"], row["vendor"], row["saved_credits"])
    dedup: dict[int, dict[str, Any]] = {}
    for row in dedup_rows:
        found = dedup.setdefault(row["run__version_id"], {"hits": 0, "saved": ZERO, "credits": {}})
        found["hits"] += row["hits"]
        found["saved"] += row["saved"] or ZERO
        # The credits the step recorded as saved, else what the first run spent.
        if row["credits_saved"]:
            _add_credits(found["credits"], row["vendor"], row["credits_saved"] * row["hits"])
            continue
        first = row["first_credits"]
        if isinstance(first, str):
            first = json.loads(first)
        for vendor, credits in (first or {}).items():
            _add_credits(found["credits"], vendor, int(credits) * row["hits"])
    return {"cache": cache, "dedup": dedup, "credits": dict(spent)}


def workflow_trend(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None = None,
    version: WorkflowVersion | None = None,
) -> list[TrendPoint]:
    """One point per day from `since` to `until` (days without runs
    included, with zeros): runs, error rate and cost per successful outcome
    of the runs created that day. One query."""
    return _trend(_day_rows(_runs(since, until, workflow, version), since), since, until)


def _trend(rows: list[dict[str, Any]], since: datetime, until: datetime) -> list[TrendPoint]:
    by_day: dict[date, dict[str, Any]] = {}
    for row in rows:
        totals = by_day.setdefault(row["day"], dict.fromkeys(_SUMMED, 0))
        for name in _SUMMED:
            totals[name] += row[name] or 0
    empty = dict.fromkeys(_SUMMED, 0)
    points = []
    # TruncDate counts days in the current time zone: so do the bounds.
    day = timezone.localtime(since).date()
    last = timezone.localtime(until - timedelta(microseconds=1)).date()
    while day <= last:
        row = by_day.get(day, empty)
        cost = _money(row["cost"])
        points.append(
            TrendPoint(
                day=day,
                runs=row["runs"],
                failed=row["failed"],
                successes=row["successes"],
                cost_usd=cost,
                error_rate=_ratio(row["failed"], row["runs"]),
                cost_per_success=(cost / row["successes"]).quantize(CENT)
                if row["successes"]
                else None,
            )
        )
        day += timedelta(days=1)
    return points
