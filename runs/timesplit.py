"""Machine time and time waiting for people, per workflow version.

A run's latency (created → finished, runs.metrics) mixes two clocks: the
time the machine spent in its steps and the time the run waited for a
person to decide. An operator tuning prompts wants the first, a manager
staffing the review queue the second. Per workflow version, over the runs
created in [since, until) (the dashboard's period, as runs.metrics):

* `stopped` / `cancelled`: runs with that status (beside succeeded/failed).
* `steps`, `step_p50_ms`, `step_p95_ms`, `step_total_ms`: the step
  attempts of those runs and their durations (`StepRun.duration_ms`, the
  attempt's started → finished: machine time only; a step waiting for an
  approval records its attempt when it resumes).
* `decisions`, `wait_p50_ms`, `wait_p95_ms`, `wait_total_ms`: the approval
  requests decided by a person or a policy (approved or rejected) and the
  time each waited, `created_at → decided_at`.
* `pending`: requests still waiting; `breached`: requests that went past
  their SLA (`breached_at`, set once by approvals.sla).
* `human_share`: wait / (wait + machine), None without either.

Percentiles come from a histogram computed in the database (buckets 5 %
wide, runs.tally.BUCKET), so they are within 5 % of the exact ones and the
query returns a few hundred rows at most whatever the number of steps.

Three queries, whatever the number of runs: runs by status, step attempts
by bucket, approval requests by bucket. They read the runs, step runs and
approval requests themselves, not the daily roll-up (runs.rollup): the
roll-up holds none of these figures, so it is unaffected and a report
with or without a roll-up gives the same figures. The reads use
`run_created_cover` for the period and the foreign keys for the rest.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import (
    BigIntegerField,
    Case,
    Count,
    F,
    FloatField,
    Func,
    Q,
    Sum,
    Value,
    When,
)
from django.db.models.functions import Cast, Floor, Greatest, Ln

from approvals.models import ApprovalRequest, ApprovalStatus
from runs.models import Run, RunStatus, StepRun, Workflow
from runs.tally import BUCKET, histogram_percentile

DECIDED = (ApprovalStatus.APPROVED, ApprovalStatus.REJECTED)


class ElapsedMs(Func):
    """`end - start` in milliseconds (as runs.tally.LatencyMs, for any two fields)."""

    output_field = FloatField()

    def __init__(self, end: str, start: str) -> None:
        super().__init__(F(end), F(start))

    def as_sql(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            template="(date_part('epoch', %(expressions)s) * 1000)",
            arg_joiner=" - ",
            **extra_context,
        )

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(
            compiler,
            connection,
            template="((julianday(%(expressions)s)) * 86400000.0)",
            arg_joiner=") - julianday(",
            **extra_context,
        )


def _bucket(ms) -> Cast:
    return Cast(Floor(Ln(Greatest(ms, Value(1.0))) / Value(math.log(BUCKET))), BigIntegerField())


@dataclass
class TimeSplit:
    """The figures of one workflow version (see the module)."""

    version_id: int
    workflow: str
    version: int
    runs: int = 0
    stopped: int = 0
    cancelled: int = 0
    steps: int = 0
    step_total_ms: float = 0.0
    decisions: int = 0
    wait_total_ms: float = 0.0
    pending: int = 0
    breached: int = 0
    step_histogram: dict[int, int] = field(default_factory=dict)
    wait_histogram: dict[int, int] = field(default_factory=dict)

    @property
    def step_p50_ms(self) -> float | None:
        return histogram_percentile(self.step_histogram, 0.5)

    @property
    def step_p95_ms(self) -> float | None:
        return histogram_percentile(self.step_histogram, 0.95)

    @property
    def wait_p50_ms(self) -> float | None:
        return histogram_percentile(self.wait_histogram, 0.5)

    @property
    def wait_p95_ms(self) -> float | None:
        return histogram_percentile(self.wait_histogram, 0.95)

    @property
    def human_share(self) -> float | None:
        whole = self.step_total_ms + self.wait_total_ms
        return self.wait_total_ms / whole if whole else None


def time_split(
    *, since: datetime, until: datetime, workflow: Workflow | None = None
) -> list[TimeSplit]:
    """The figures of every workflow version with runs created in
    [since, until), ordered by workflow slug then version number. Three
    queries (see the module)."""
    if since >= until:
        raise ValueError("since must be before until")
    runs = Q(created_at__gte=since, created_at__lt=until)
    of_runs = Q(run__created_at__gte=since, run__created_at__lt=until)
    if workflow is not None:
        runs &= Q(workflow=workflow)
        of_runs &= Q(run__workflow=workflow)
    found: dict[int, TimeSplit] = {}
    rows = (
        Run.objects.filter(runs)
        .values("version_id", "version__number", "workflow__slug")
        .annotate(
            runs=Count("*"),
            stopped=Count("id", filter=Q(status=RunStatus.STOPPED)),
            cancelled=Count("id", filter=Q(status=RunStatus.CANCELLED)),
        )
        .order_by()
    )
    for row in rows:
        found[row["version_id"]] = TimeSplit(
            version_id=row["version_id"],
            workflow=row["workflow__slug"],
            version=row["version__number"],
            runs=row["runs"],
            stopped=row["stopped"],
            cancelled=row["cancelled"],
        )
    if not found:
        return []
    _add_steps(found, of_runs)
    _add_waits(found, of_runs)
    return sorted(found.values(), key=lambda row: (row.workflow, row.version))


def _add_steps(found: dict[int, TimeSplit], of_runs: Q) -> None:
    rows = (
        StepRun.objects.filter(of_runs)
        .annotate(bucket=_bucket(F("duration_ms")))
        .values_list("run__version_id", "bucket")
        .annotate(count=Count("*"), total=Sum("duration_ms"))
        .order_by()
    )
    for version_id, bucket, count, total in rows:
        row = found.get(version_id)
        if row is None:  # a run created between the two reads
            continue
        row.steps += count
        row.step_total_ms += total or 0.0
        row.step_histogram[int(bucket)] = row.step_histogram.get(int(bucket), 0) + count


def _add_waits(found: dict[int, TimeSplit], of_runs: Q) -> None:
    decided = Q(status__in=DECIDED, decided_at__isnull=False)
    waited = ElapsedMs("decided_at", "created_at")
    rows = (
        ApprovalRequest.objects.filter(of_runs)
        .annotate(bucket=Case(When(decided, then=_bucket(waited)), default=None))
        .values_list("run__version_id", "bucket")
        .annotate(
            count=Count("*"),
            total=Sum(Case(When(decided, then=waited), default=None)),
            pending=Count("id", filter=Q(status=ApprovalStatus.PENDING)),
            breached=Count("id", filter=Q(breached_at__isnull=False)),
        )
        .order_by()
    )
    sums: dict[int, float] = defaultdict(float)
    for version_id, bucket, count, total, pending, breached in rows:
        row = found.get(version_id)
        if row is None:
            continue
        row.pending += pending
        row.breached += breached
        if bucket is not None:
            row.decisions += count
            sums[version_id] += total or 0.0
            row.wait_histogram[int(bucket)] = row.wait_histogram.get(int(bucket), 0) + count
    for version_id, total in sums.items():
        found[version_id].wait_total_ms = total
