"""The rollout API: start a canary of a published version, promote it,
roll it back, and read how live and candidate compare.

Changes need the `rollouts:write` scope, reading `runs:read`. A key bound
to workflows reaches only their rollouts (others answer 404). Every change
is the engine's (runs.engine.rollout), audited with the key as the actor.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.responses import Status

from integrations.kit import ApiKeyAuth, Id, In, Slug, bound_to, errors, get_or_404, text
from policies import audit
from policies.models import ApiScope
from runs.engine.rollout import promote_rollout, roll_back_rollout, start_canary
from runs.models import Rollout, RolloutStatus, Workflow
from runs.rollout_metrics import VersionFigures, rollout_comparison

router = Router(tags=["rollouts"])
READ = ApiKeyAuth(ApiScope.RUNS_READ)
WRITE = ApiKeyAuth(ApiScope.ROLLOUTS_WRITE)
Reason = text(max_length=4000)


class CanaryIn(In):
    workflow: Slug = Field(description="The workflow's slug.")
    version: int = Field(ge=1, le=2**31 - 1, description="The published version to try.")
    share_pct: int = Field(ge=1, le=99, description="Share of new runs it takes, in %.")
    reason: Reason = ""


class DecisionIn(In):
    reason: Reason = Field(min_length=1, description="Why: kept in the audit log.")


class RolloutOut(Schema):
    id: int
    workflow: str
    baseline: int
    candidate: int
    share_pct: int
    status: RolloutStatus
    started_at: datetime
    started_by: str
    promoted_at: datetime | None
    promoted_by: str
    rolled_back_at: datetime | None
    rolled_back_by: str

    @staticmethod
    def resolve_workflow(rollout: Rollout) -> str:
        return rollout.workflow.slug

    @staticmethod
    def resolve_baseline(rollout: Rollout) -> int:
        return rollout.baseline.number

    @staticmethod
    def resolve_candidate(rollout: Rollout) -> int:
        return rollout.candidate.number


class VersionFiguresOut(Schema):
    side: str = Field(description='"live" (the baseline) or "candidate".')
    version: int
    runs: int
    finished: int
    succeeded: int
    successes: int
    success_rate: float | None = Field(description="Succeeded over finished runs.")
    escalation_rate: float | None = Field(description="Runs that went to a person, over runs.")
    flagged_rate: float | None = Field(description="Runs with a flagged step, over runs.")
    cost_usd: Decimal
    cost_per_success: Decimal | None


class ComparisonOut(Schema):
    rollout: RolloutOut
    versions: list[VersionFiguresOut]


def _rollouts(request: HttpRequest) -> QuerySet[Rollout]:
    found = Rollout.objects.select_related("workflow", "baseline", "candidate")
    return bound_to(request, found)


def _figures(figures: VersionFigures) -> VersionFiguresOut:
    return VersionFiguresOut(
        side=figures.side,
        version=figures.number,
        runs=figures.runs,
        finished=figures.finished,
        succeeded=figures.succeeded,
        successes=figures.successes,
        success_rate=figures.success_rate,
        escalation_rate=figures.escalation_rate,
        flagged_rate=figures.flagged_rate,
        cost_usd=figures.cost_usd,
        cost_per_success=figures.cost_per_success,
    )


def _actor(request: HttpRequest) -> str:
    return audit.actor_of(key=request.auth)


@router.post("/rollouts", response={201: RolloutOut, **errors(404, 409)}, auth=WRITE)
def canary_start(request: HttpRequest, payload: CanaryIn):
    """Start a canary: `share_pct` % of the workflow's new runs go to a
    published version (409 while another canary runs, or if it is live)."""
    workflows = bound_to(request, Workflow.objects, "pk")
    workflow = get_or_404(workflows, f"no workflow {payload.workflow!r}", slug=payload.workflow)
    version = get_or_404(
        workflow.versions,
        f"{workflow.slug} has no version {payload.version}",
        number=payload.version,
    )
    started = start_canary(
        workflow=workflow,
        candidate=version,
        share_pct=payload.share_pct,
        actor=_actor(request),
        reason=payload.reason,
    )
    return Status(201, _rollouts(request).get(pk=started.pk))


@router.post(
    "/rollouts/{rollout_id}/promote", response={200: RolloutOut, **errors(404, 409)}, auth=WRITE
)
def rollout_promote(request: HttpRequest, rollout_id: Id, payload: DecisionIn):
    """Make the canary's candidate the live version."""
    get_or_404(_rollouts(request), f"no rollout {rollout_id}", pk=rollout_id)
    promote_rollout(rollout_id=rollout_id, actor=_actor(request), reason=payload.reason)
    return _rollouts(request).get(pk=rollout_id)


@router.post(
    "/rollouts/{rollout_id}/rollback", response={200: RolloutOut, **errors(404, 409)}, auth=WRITE
)
def rollout_rollback(request: HttpRequest, rollout_id: Id, payload: DecisionIn):
    """Keep or make the baseline live again (a running canary, or a promote
    while its candidate is still live)."""
    get_or_404(_rollouts(request), f"no rollout {rollout_id}", pk=rollout_id)
    roll_back_rollout(rollout_id=rollout_id, actor=_actor(request), reason=payload.reason)
    return _rollouts(request).get(pk=rollout_id)


@router.get("/rollouts/{rollout_id}", response={200: ComparisonOut, **errors(404)}, auth=READ)
def rollout_detail(request: HttpRequest, rollout_id: Id):
    """The rollout and its comparison: live against candidate, over the runs
    created while the canary ran."""
    rollout = get_or_404(_rollouts(request), f"no rollout {rollout_id}", pk=rollout_id)
    figures = [_figures(f) for f in rollout_comparison(rollout)]
    return {"rollout": rollout, "versions": figures}


class RolloutFilters(Schema):
    workflow: Slug | None = None


@router.get("/rollouts", response={200: list[RolloutOut], **errors(404)}, auth=READ)
def rollout_list(request: HttpRequest, filters: Query[RolloutFilters]):
    """Canaries, newest first (of one workflow with `workflow`), up to 100."""
    found = _rollouts(request)
    if filters.workflow is not None:
        workflows = bound_to(request, Workflow.objects, "pk")
        get_or_404(workflows, f"no workflow {filters.workflow!r}", slug=filters.workflow)
        found = found.filter(workflow__slug=filters.workflow)
    return list(found[:100])
