"""Live against candidate: a canary's figures, version by version.

Over the runs of each version created while the canary ran (from its
start to its promote or rollback, or now), read from the runs and their
steps in one grouped query, whatever the number of runs:

* `runs`: runs created; `finished`: of them, the ones that ended
  (succeeded, failed, stopped, cancelled); `succeeded`: ended `succeeded`;
  `successes`: their outcome counted as a success (`Run.success`).
* `success_rate` = succeeded / finished (a canary is judged on the runs
  that got somewhere; runs still going count once they end).
* `escalation_rate` = runs that put an approval request in front of a
  person (a draft review or a tool call) / runs.
* `flagged_rate` = runs with a step whose output checks held (the step
  took its `flagged` edge) / runs.
* `cost_usd` what the runs paid (model plus vendor); `cost_per_success`
  = cost of ALL the runs / successes (None without a success), as the
  dashboard counts it (runs.metrics).

Both sides run over the same hours, so a time-of-day mix does not favour
one. Sandbox runs (experiments, shadows, dry runs) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import Count, Exists, OuterRef, Q, Sum

from approvals.models import ApprovalRequest
from runs.models import (
    TERMINAL_STATUSES,
    Rollout,
    Run,
    RunMode,
    RunStatus,
    StepRun,
    WorkflowVersion,
)


@dataclass(frozen=True)
class VersionFigures:
    version_id: int
    number: int
    side: str  # "live" or "candidate"
    runs: int
    finished: int
    succeeded: int
    successes: int
    escalated: int
    flagged: int
    cost_usd: Decimal

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None

    @property
    def escalation_rate(self) -> float | None:
        return self.escalated / self.runs if self.runs else None

    @property
    def flagged_rate(self) -> float | None:
        return self.flagged / self.runs if self.runs else None

    @property
    def cost_per_success(self) -> Decimal | None:
        return self.cost_usd / self.successes if self.successes else None


def version_figures(
    *, versions: dict[str, WorkflowVersion], since: datetime, until: datetime | None = None
) -> list[VersionFigures]:
    """The figures of each version (keyed by its side) over [since, until)."""
    # Sandbox runs (experiments, shadows, dry runs) touch nothing real and
    # are no part of the canary's traffic: live runs only.
    runs = Run.objects.filter(
        version_id__in=[version.pk for version in versions.values()],
        created_at__gte=since,
        mode=RunMode.LIVE,
    )
    if until is not None:
        runs = runs.filter(created_at__lt=until)
    escalated = Exists(ApprovalRequest.objects.filter(run_id=OuterRef("pk")))
    flagged = Exists(StepRun.objects.filter(run_id=OuterRef("pk"), edge="flagged"))
    rows = {
        row["version_id"]: row
        for row in runs.annotate(escalated=escalated, flagged=flagged)
        .values("version_id")
        .annotate(
            runs=Count("pk"),
            finished=Count("pk", filter=Q(status__in=TERMINAL_STATUSES)),
            succeeded=Count("pk", filter=Q(status=RunStatus.SUCCEEDED)),
            successes=Count("pk", filter=Q(success=True)),
            escalated_runs=Count("pk", filter=Q(escalated=True)),
            flagged_runs=Count("pk", filter=Q(flagged=True)),
            cost=Sum("cost_usd"),
        )
        .order_by()
    }
    figures = []
    for side, version in versions.items():
        row = rows.get(version.pk, {})
        figures.append(
            VersionFigures(
                version_id=version.pk,
                number=version.number,
                side=side,
                runs=row.get("runs", 0),
                finished=row.get("finished", 0),
                succeeded=row.get("succeeded", 0),
                successes=row.get("successes", 0),
                escalated=row.get("escalated_runs", 0),
                flagged=row.get("flagged_runs", 0),
                cost_usd=Decimal(row.get("cost") or 0),
            )
        )
    return figures


def rollout_comparison(rollout: Rollout) -> list[VersionFigures]:
    """The baseline (live) and the candidate over the canary's time."""
    return version_figures(
        versions={"live": rollout.baseline, "candidate": rollout.candidate},
        since=rollout.started_at,
        until=rollout.ended_at,
    )
