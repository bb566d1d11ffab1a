"""Tallies: the figures of a set of runs in a form that adds up.

runs.metrics reports figures over a period; runs.rollup keeps them per
(workflow version, UTC day) for the days that are over. Both read the runs
through the functions here, so a day rolled up and the same day read from
the runs give the same sums: counts and money per (version, day), credits
per vendor, cache and dedup savings per version, and latency as a
histogram (BUCKET) or, over the runs themselves, exact percentiles.

A set of runs is a `Q` on Run; a set of step runs a `Q` on StepRun
(`prefixed(q, "run__")` is the step runs of the runs `q`). Only live runs
are counted: a sandbox run (an experiment, a shadow) is no part of what
the workflow did or spent, whatever set is asked for (LIVE).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    Aggregate,
    BigIntegerField,
    BooleanField,
    Count,
    DecimalField,
    Exists,
    ExpressionWrapper,
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
from django.db.models.functions import (
    Cast,
    Coalesce,
    Floor,
    Greatest,
    Least,
    Ln,
    NullIf,
    RowNumber,
    TruncDate,
)

from approvals.models import ApprovalRequest
from runs.models import (
    DailyRollupDedup,
    DailyRollupWaiting,
    Run,
    RunMode,
    RunStatus,
    StepKind,
    StepRun,
    StepRunStatus,
)

MONEY: DecimalField[Decimal, Decimal] = DecimalField(max_digits=16, decimal_places=6)
ZERO = Decimal(0)
# The latency histogram: bucket k holds the runs whose latency is in
# [BUCKET**k, BUCKET**(k+1)) ms, each bucket 5 % wider than the one before
# (latencies under 1 ms count in bucket 0). 445 buckets reach 30 days; a
# histogram keeps only the buckets it has runs in.
BUCKET = 1.05
# The runs every figure counts, and their step runs.
LIVE = Q(mode=RunMode.LIVE)
LIVE_STEPS = Q(run__mode=RunMode.LIVE)


@dataclass
class Tally:
    """Sums over some runs (see runs.metrics for each figure). `latency`:
    finished runs per histogram bucket; the credit maps are per vendor."""

    runs: int = 0
    succeeded: int = 0
    failed: int = 0
    successes: int = 0
    escalated: int = 0
    cost: Decimal = ZERO
    vendor: Decimal = ZERO
    calls: int = 0
    latency: dict[int, int] = field(default_factory=dict)
    credits: dict[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    cache_saved: Decimal = ZERO
    cache_saved_credits: dict[str, int] = field(default_factory=dict)
    dedup_hits: int = 0
    dedup_saved: Decimal = ZERO
    dedup_saved_credits: dict[str, int] = field(default_factory=dict)
    # Machine time and time waiting for people (see runs.metrics).
    stopped: int = 0
    cancelled: int = 0
    machine_ms: float = 0.0
    decisions: int = 0
    wait_ms: float = 0.0
    pending: int = 0
    breached: int = 0

    def negated(self) -> Tally:
        """The same sums taken away (added, they cancel these out)."""
        out = Tally()
        for name, value in vars(self).items():
            if isinstance(value, dict):
                setattr(out, name, {key: -count for key, count in value.items()})
            else:
                setattr(out, name, -value)
        return out

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            if isinstance(value, dict):
                mine = getattr(self, name)
                for key, count in value.items():
                    mine[key] = mine.get(key, 0) + count
            else:
                setattr(self, name, getattr(self, name) + value)


def add_credits(into: dict[str, int], vendor: str, credits: int) -> None:
    if vendor and credits:
        into[vendor] = into.get(vendor, 0) + int(credits)


def prefixed(q: Q, prefix: str) -> Q:
    """The same condition on the run seen from a row that points at it."""
    if not prefix:
        return q
    out = Q(_connector=q.connector, _negated=q.negated)
    children: list[Any] = list(q.children)
    for child in children:
        if isinstance(child, Q):
            out.children.append(prefixed(child, prefix))
        else:
            name, value = child
            out.children.append((f"{prefix}{name}", value))
    return out


# --- the runs themselves ----------------------------------------------------------


def run_tallies(runs: Q) -> dict[tuple[int, date], Tally]:
    """Counts and money per (version, day of `created_at`): one pass over
    the runs."""
    # Escalated: one probe of the approval requests' run index per run. An
    # `id IN (requests since ...)` set is hashed only while it fits in
    # work_mem: past a few hundred thousand requests PostgreSQL scanned it
    # again for every run.
    # A run waiting on a person has a request: its status answers without
    # the probe (PostgreSQL evaluates OR left to right and stops at true),
    # which spares the probe for most of the unfinished runs read directly.
    asked = _asked()
    rows = (
        Run.objects.filter(runs, LIVE)
        .annotate(day=TruncDate("created_at"))
        .values("version_id", "day")
        .annotate(
            runs=Count("*"),
            succeeded=Count("id", filter=Q(status=RunStatus.SUCCEEDED)),
            failed=Count("id", filter=Q(status=RunStatus.FAILED)),
            stopped=Count("id", filter=Q(status=RunStatus.STOPPED)),
            cancelled=Count("id", filter=Q(status=RunStatus.CANCELLED)),
            successes=Count("id", filter=Q(success=True)),
            cost=Sum("cost_usd"),
            vendor=Sum("vendor_usd"),
            calls=Sum(F("llm_calls") + F("tool_calls")),
            escalated=Count("id", filter=asked),
            machine_ms=Sum("machine_ms"),
            decisions=Sum("decisions"),
            wait_ms=Sum("wait_ms"),
            pending=Count("id", filter=Q(status=RunStatus.WAITING, wait_reason="approval")),
            breached=Sum("breaches"),
        )
        .order_by()
    )
    return {
        (row["version_id"], row["day"]): _summed(
            row,
            succeeded=row["succeeded"],
            failed=row["failed"],
            stopped=row["stopped"],
            cancelled=row["cancelled"],
        )
        for row in rows
    }


def _summed(
    row: dict[str, Any],
    *,
    succeeded: int = 0,
    failed: int = 0,
    stopped: int = 0,
    cancelled: int = 0,
) -> Tally:
    """A Tally of an aggregate row's counts and sums (a sum over no row is
    None: zero), with the counts by status when it has them."""
    return Tally(
        runs=row["runs"],
        successes=row["successes"],
        escalated=row["escalated"],
        pending=row["pending"],
        cost=row["cost"] or ZERO,
        vendor=row["vendor"] or ZERO,
        calls=row["calls"] or 0,
        machine_ms=row["machine_ms"] or 0.0,
        decisions=row["decisions"] or 0,
        wait_ms=row["wait_ms"] or 0.0,
        breached=row["breached"] or 0,
        succeeded=succeeded,
        failed=failed,
        stopped=stopped,
        cancelled=cancelled,
    )


# --- waiting runs of rolled-up days (DailyRollupWaiting) -----------------------------

# What a waiting run's row keeps of it, and must still match for its figures
# to be read from there (see DailyRollupWaiting).
WAITING_KEY = ("wait_reason", "fence", "decisions", "breaches")


def _asked() -> Q:
    """The run put a request in front of a person (see run_tallies)."""
    return Q(status=RunStatus.WAITING, wait_reason="approval") | Q(
        Exists(ApprovalRequest.objects.filter(run_id=OuterRef("pk")))
    )


def waiting_runs(runs: Q) -> list[DailyRollupWaiting]:
    """The live runs among `runs` that are waiting, as a roll-up keeps them
    (unsaved rows, without their day): one query."""
    rows = (
        Run.objects.filter(runs, LIVE, status=RunStatus.WAITING, finished_at__isnull=True)
        .annotate(
            asked=ExpressionWrapper(_asked(), output_field=BooleanField()),
            calls=F("llm_calls") + F("tool_calls"),
        )
        .values(
            "id",
            "workflow_id",
            "version_id",
            *WAITING_KEY,
            "success",
            "asked",
            "cost_usd",
            "vendor_usd",
            "calls",
            "machine_ms",
            "wait_ms",
        )
        .order_by()
    )
    return [
        DailyRollupWaiting(run_id=row.pop("id"), escalated=bool(row.pop("asked")), **row)
        for row in rows
    ]


def _unchanged_from_row() -> dict[str, Any]:
    """The run still waits as its kept row (at OuterRef) recorded it."""
    return {
        "finished_at__isnull": True,
        "status": RunStatus.WAITING,
        **{name: OuterRef(name) for name in WAITING_KEY},
    }


def kept_tally(row: DailyRollupWaiting) -> Tally:
    """The run-level figures of a kept waiting run (what the roll-up row of
    its day holds of it)."""
    return Tally(
        runs=1,
        successes=int(row.success is True),
        escalated=int(row.escalated),
        pending=int(row.wait_reason == "approval"),
        cost=row.cost_usd,
        vendor=row.vendor_usd,
        calls=row.calls,
        machine_ms=row.machine_ms,
        decisions=row.decisions,
        wait_ms=row.wait_ms,
        breached=row.breaches,
    )


def changed_waiting_tallies(
    rows: Q, *, created: tuple[datetime, datetime]
) -> dict[tuple[int, date], Tally]:
    """What the roll-up rows hold of the kept waiting runs (`rows`, a Q on
    DailyRollupWaiting) that have changed since (or finished), per
    (version, day), to be taken away: one query. Whether a run is unchanged
    is read from its entry in run_unfinished_cover alone (an anti-join),
    never from its run row; usually none has changed. `created`: the
    bounds of the days asked for, which keep that read to their range."""
    unchanged = Run.objects.filter(
        pk=OuterRef("run_id"),
        created_at__gte=created[0],
        created_at__lt=created[1],
        **_unchanged_from_row(),
    )
    found = (
        DailyRollupWaiting.objects.filter(rows)
        .exclude(Exists(unchanged))
        .values("version_id", "day")
        .annotate(
            runs=Count("*"),
            successes=Count("id", filter=Q(success=True)),
            escalated=Count("id", filter=Q(escalated=True)),
            pending=Count("id", filter=Q(wait_reason="approval")),
            cost=Sum("cost_usd"),
            vendor=Sum("vendor_usd"),
            calls=Sum("calls"),
            machine_ms=Sum("machine_ms"),
            decisions=Sum("decisions"),
            wait_ms=Sum("wait_ms"),
            breached=Sum("breaches"),
        )
        .order_by()
    )
    return {(row["version_id"], row["day"]): _summed(row).negated() for row in found}


def not_kept_unchanged(runs: Q, rows: Q) -> Q:
    """Those of the unfinished `runs` that no kept row (of `rows`, a Q on
    DailyRollupWaiting) stands for as they are now (not waiting then, or
    changed since): their ids, found in the narrow index of unfinished
    runs, so that only their rows are read."""
    kept = DailyRollupWaiting.objects.filter(
        rows, run_id=OuterRef("pk"), **{name: OuterRef(name) for name in WAITING_KEY}
    )
    changed = (
        Run.objects.filter(runs, LIVE, finished_at__isnull=True)
        .exclude(Q(status=RunStatus.WAITING) & Exists(kept))
        .values("pk")
    )
    return Q(pk__in=Subquery(changed))


class LatencyMs(Func):
    """`finished_at - created_at` of a run in milliseconds (NULL while it
    runs), or the same of two other fields (`end - start`)."""

    output_field = FloatField()

    def __init__(self, end: str = "finished_at", start: str = "created_at") -> None:
        super().__init__(F(end), F(start))

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


def latency_histograms(runs: Q) -> dict[int, dict[int, int]]:
    """Finished runs per latency bucket (BUCKET), per version: one query."""
    bucket = Floor(Ln(Greatest(LatencyMs(), Value(1.0))) / Value(math.log(BUCKET)))
    rows = (
        Run.objects.filter(runs, LIVE, finished_at__isnull=False)
        .annotate(bucket=Cast(bucket, BigIntegerField()))
        .values_list("version_id", "bucket")
        .annotate(count=Count("*"))
        .order_by()
    )
    found: dict[int, dict[int, int]] = defaultdict(dict)
    for version_id, index, count in rows:
        found[version_id][int(index)] = count
    return dict(found)


def histogram_percentile(histogram: dict[int, int], fraction: float) -> float | None:
    """The continuous percentile (as percentile_cont) of a latency
    histogram: the runs of a bucket are taken as spread evenly across it,
    so the answer is within one bucket (5 %) of the exact one."""
    total = sum(histogram.values())
    if not total:
        return None
    ordered = sorted((index, count) for index, count in histogram.items() if count)
    position = fraction * (total - 1)
    low, high = math.floor(position), math.ceil(position)

    def value_at(rank: int) -> float:
        start = 0
        for index, count in ordered:
            if rank < start + count:
                bottom = 0.0 if index == 0 else BUCKET**index
                top = BUCKET ** (index + 1)
                return bottom + (top - bottom) * (rank - start + 0.5) / count
            start += count
        raise AssertionError("rank beyond the histogram")

    lower = value_at(low)
    return lower + (value_at(high) - lower) * (position - low)


class PercentileCont(Aggregate):
    """PostgreSQL's ordered-set aggregate: the median and the 95th
    percentile in one call, `percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP`."""

    function = "percentile_cont"
    template = "%(function)s(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY %(expressions)s)"


def exact_latencies(runs: Q, versions: list[int]) -> dict[int, tuple[float, float]]:
    """p50 and p95 of the finished runs' latencies per version, exact: one query."""
    finished = Run.objects.filter(runs, LIVE, finished_at__isnull=False)
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


def _latency_by_window(runs: QuerySet[Run]) -> dict[int, tuple[float, float]]:
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


# --- their step runs ----------------------------------------------------------------


def step_tallies(steps: Q) -> dict[int, Tally]:
    """Credits spent, and cache hits and what they saved, per version: two
    queries, each over only the step runs it needs, through its own partial
    index (migrations 0009 and 0015): those answered from the cache, and
    those that spent credits. (One query for both, `cache_hit OR credits >
    0`, cannot probe either index per run.) Rows per (version, vendor)."""
    found: dict[int, Tally] = defaultdict(Tally)
    hits = (
        StepRun.objects.filter(steps, LIVE_STEPS)
        .filter(cache_hit=True)
        .values("run__version_id", "vendor")
        .annotate(hits=Count("*"), saved=Sum("cost_saved_usd"), saved_credits=Sum("credits_saved"))
        .order_by()
    )
    for row in hits:
        tally = found[row["run__version_id"]]
        tally.cache_hits += row["hits"]
        tally.cache_saved += row["saved"] or ZERO
        add_credits(tally.cache_saved_credits, row["vendor"], row["saved_credits"])
    spent = (
        StepRun.objects.filter(steps, LIVE_STEPS)
        .filter(credits__gt=0)
        .values("run__version_id", "vendor")
        .annotate(credits=Sum("credits"))
        .order_by()
    )
    for row in spent:
        add_credits(found[row["run__version_id"]].credits, row["vendor"], row["credits"])
    return dict(found)


# The step runs the figures read: answered from the cache, spent credits,
# or a dedup duplicate. A partial index on their `finished_at` (migration
# 0021) holds exactly these.
COUNTED_STEPS = (
    Q(cache_hit=True)
    | Q(credits__gt=0)
    | Q(kind=StepKind.DEDUP, edge="duplicate", status=StepRunStatus.SUCCEEDED)
)


def _duplicates(steps: Q) -> QuerySet[StepRun]:
    """The dedup gates among these step runs that took the `duplicate` edge
    (a partial index holds them, migration 0009)."""
    return (
        StepRun.objects.filter(steps, LIVE_STEPS)
        .filter(kind=StepKind.DEDUP, edge="duplicate", status=StepRunStatus.SUCCEEDED)
        .annotate(first_run_id=Cast(KT("output__first_run"), BigIntegerField()))
    )


def dedup_tallies(steps: Q) -> dict[int, Tally]:
    """Dedup hits and what they saved, per version: one query, its rows per
    (version, the first run's credits, what the step recorded), a handful
    of shapes. A hit saves what the step recorded, else what its first run
    (`output.first_run`) has paid, as that run stands now."""
    first_run = Run.objects.filter(pk=OuterRef("first_run_id"))
    rows = (
        _duplicates(steps)
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
    found: dict[int, Tally] = defaultdict(Tally)
    for row in rows:
        tally = found[row["run__version_id"]]
        tally.dedup_hits += row["hits"]
        tally.dedup_saved += row["saved"] or ZERO
        _add_dedup_credits(tally, row, row["hits"])
    return dict(found)


def _add_dedup_credits(tally: Tally, row: dict[str, Any], hits: int) -> None:
    # The credits the step recorded as saved, else what the first run spent.
    if row["credits_saved"]:
        add_credits(tally.dedup_saved_credits, row["vendor"], row["credits_saved"] * hits)
        return
    first = row["first_credits"]
    if isinstance(first, str):
        first = json.loads(first)
    for vendor, credits in (first or {}).items():
        add_credits(tally.dedup_saved_credits, vendor, int(credits) * hits)


def dedup_references(steps: Q) -> tuple[dict[int, Tally], list[dict[str, Any]]]:
    """What a roll-up keeps of the dedup hits: per version the hits and
    what the steps recorded as saved; and per (version, first run) how many
    hits save that run's dollars (they recorded none) and its credits (they
    recorded none), to be read from the first run when asked for (it may
    still be paying). One query."""
    rows = (
        _duplicates(steps)
        .values("run__version_id", "first_run_id", "vendor", "credits_saved")  # type: ignore[misc]
        .annotate(
            hits=Count("*"),
            saved=Sum("cost_saved_usd"),
            usd_hits=Count("id", filter=Q(cost_saved_usd=ZERO)),
        )
        .order_by()
    )
    found: dict[int, Tally] = defaultdict(Tally)
    refs: dict[tuple[int, int | None], dict[str, Any]] = {}
    for row in rows:
        key = (row["run__version_id"], row["first_run_id"])
        tally = found[key[0]]
        tally.dedup_hits += row["hits"]
        tally.dedup_saved += row["saved"] or ZERO
        ref = refs.setdefault(
            key, {"version_id": key[0], "first_run_id": key[1], "usd_hits": 0, "credit_hits": 0}
        )
        ref["usd_hits"] += row["usd_hits"]
        if row["credits_saved"]:
            add_credits(
                tally.dedup_saved_credits, row["vendor"], row["credits_saved"] * row["hits"]
            )
        else:
            ref["credit_hits"] += row["hits"]
    return dict(found), [ref for ref in refs.values() if ref["usd_hits"] or ref["credit_hits"]]


def referenced_savings(references: QuerySet[DailyRollupDedup]) -> dict[int, Tally]:
    """What the kept dedup references save now, per version: their first
    runs' dollars and credits, read in one query (rows per (version, the
    first run's credits))."""
    first_run = Run.objects.filter(pk=OuterRef("first_run_id"))
    paid = Coalesce(Subquery(first_run.values("cost_usd")[:1], output_field=MONEY), Value(ZERO))
    rows = (
        references.values(
            "version_id",
            first_credits=Subquery(first_run.values("credits")[:1], output_field=JSONField()),
        )
        .annotate(
            saved=Sum(F("usd_hits") * paid, output_field=MONEY), credit_hits=Sum("credit_hits")
        )
        .order_by()
    )
    found: dict[int, Tally] = defaultdict(Tally)
    for row in rows:
        tally = found[row["version_id"]]
        tally.dedup_saved += row["saved"] or ZERO
        _add_dedup_credits(tally, {**row, "credits_saved": 0}, row["credit_hits"] or 0)
    return dict(found)
