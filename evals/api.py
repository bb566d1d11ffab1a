"""The evaluation API: start an experiment and read its verdicts; start and
stop a shadow rollout. Runs scopes: `runs:write` to start or stop,
`runs:read` to read. A key bound to workflows reaches only theirs (others
answer 404). Errors are the engine's, mapped once in config/api.py.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.responses import Status

from evals import experiments, shadow
from evals.models import EvalSet, Experiment, ShadowRollout, Trial
from integrations.kit import ApiKeyAuth, Id, In, Slug, bound_to, errors, get_or_404
from policies import audit
from policies.models import ApiScope
from runs.models import Workflow

router = Router(tags=["evaluation"])
READ = ApiKeyAuth(ApiScope.RUNS_READ)
WRITE = ApiKeyAuth(ApiScope.RUNS_WRITE)


class ExperimentIn(In):
    workflow: Slug
    eval_set: Slug = Field(description="The eval set's name.")
    versions: list[int] = Field(default_factory=list, max_length=10, description="Version numbers.")
    draft: bool = Field(False, description="Also run the draft, frozen as a candidate version.")


class TrialOut(Schema):
    case: str
    case_id: int
    critical: bool
    verdict: str
    run: int | None
    checks: list[dict[str, Any]]
    cost_usd: Decimal
    would_cost_usd: Decimal = Field(description="What the stubbed calls would have cost live.")
    tokens: int
    latency_ms: float | None


class ArmOut(Schema):
    version: int
    candidate: bool
    baseline: bool
    passed: int
    failed: int
    errors: int
    pending: int
    pass_rate: float | None
    cost_usd: Decimal
    would_cost_usd: Decimal
    trials: list[TrialOut]


class ExperimentOut(Schema):
    id: int
    workflow: str
    eval_set: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    arms: list[ArmOut]


class ShadowIn(In):
    workflow: Slug
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Default: the draft.")


class ShadowOut(Schema):
    id: int
    workflow: str
    candidate_version: int
    candidate: bool
    active: bool
    started_at: datetime
    stopped_at: datetime | None


def _workflow(request: HttpRequest, slug: str) -> Workflow:
    return get_or_404(
        bound_to(request, Workflow.objects.all(), "pk"), f"no workflow {slug!r}", slug=slug
    )


def _experiment_out(experiment: Experiment) -> dict[str, Any]:
    report = experiments.experiment_report(experiment=experiment)
    trials: dict[int, list[Trial]] = {}
    for trial in (
        Trial.objects.filter(arm__experiment=experiment).select_related("case").order_by("case_id")
    ):
        trials.setdefault(trial.arm_id, []).append(trial)
    return {
        "id": experiment.pk,
        "workflow": experiment.eval_set.workflow.slug,
        "eval_set": experiment.eval_set.name,
        "status": experiment.status,
        "created_at": experiment.created_at,
        "finished_at": experiment.finished_at,
        "arms": [
            {
                "version": s.arm.version.number,
                "candidate": s.arm.version.candidate,
                "baseline": s.arm.baseline,
                "passed": s.passed,
                "failed": s.failed,
                "errors": s.errors,
                "pending": s.pending,
                "pass_rate": s.pass_rate,
                "cost_usd": s.cost_usd,
                "would_cost_usd": s.would_cost_usd,
                "trials": [
                    {
                        "case": t.case.name,
                        "case_id": t.case_id,
                        "critical": t.case.critical,
                        "verdict": t.verdict,
                        "run": t.run_id,
                        "checks": t.checks,
                        "cost_usd": t.cost_usd,
                        "would_cost_usd": t.would_cost_usd,
                        "tokens": t.tokens,
                        "latency_ms": t.latency_ms,
                    }
                    for t in trials.get(s.arm.pk, [])
                ],
            }
            for s in report.arms
        ],
    }


@router.post("/experiments", response={201: ExperimentOut, **errors(404, 409)}, auth=WRITE)
def experiment_start(request: HttpRequest, payload: ExperimentIn):
    """Run the eval set against the versions (and the draft): each case a
    sandbox run, executed by the workers. 201 with the experiment."""
    workflow = _workflow(request, payload.workflow)
    eval_set = get_or_404(
        EvalSet.objects.filter(workflow=workflow),
        f"no eval set {payload.eval_set!r}",
        name=payload.eval_set,
    )
    versions = list(workflow.versions.published().filter(number__in=payload.versions))
    missing = set(payload.versions) - {v.number for v in versions}
    if missing:
        get_or_404(workflow.versions.none(), f"no version {min(missing)} of {workflow.slug}")
    experiment = experiments.start_experiment(
        eval_set=eval_set,
        versions=versions,
        draft=payload.draft,
        actor=audit.actor_of(key=request.auth),
    )
    return Status(201, _experiment_out(experiment))


@router.get("/experiments/{experiment_id}", response={200: ExperimentOut, **errors(404)}, auth=READ)
def experiment_detail(request: HttpRequest, experiment_id: Id):
    """The experiment's verdicts per version and case (trials whose run is
    over are scored as they are read)."""
    found = get_or_404(
        bound_to(request, Experiment.objects.all(), "eval_set__workflow_id"),
        f"no experiment {experiment_id}",
        pk=experiment_id,
    )
    experiment = experiments.refresh_experiment(experiment_id=found.pk)
    return _experiment_out(experiment)


def _shadow_out(rollout: ShadowRollout) -> dict[str, Any]:
    return {
        "id": rollout.pk,
        "workflow": rollout.workflow.slug,
        "candidate_version": rollout.candidate.number,
        "candidate": rollout.candidate.candidate,
        "active": rollout.active,
        "started_at": rollout.started_at,
        "stopped_at": rollout.stopped_at,
    }


@router.post("/shadows", response={201: ShadowOut, **errors(404, 409)}, auth=WRITE)
def shadow_start(request: HttpRequest, payload: ShadowIn):
    """Run a version (default: the draft, frozen as a candidate) in shadow
    beside every new live run of the workflow. 409 when one is active."""
    from runs.engine.definition import freeze_candidate

    workflow = _workflow(request, payload.workflow)
    if payload.version is None:
        candidate = freeze_candidate(workflow=workflow)
    else:
        candidate = get_or_404(
            workflow.versions.published(),
            f"no version {payload.version} of {workflow.slug}",
            number=payload.version,
        )
    rollout = shadow.start_shadow(
        workflow=workflow, candidate=candidate, actor=audit.actor_of(key=request.auth)
    )
    return Status(201, _shadow_out(rollout))


@router.post(
    "/shadows/{rollout_id}/stop", response={200: ShadowOut, **errors(404, 409)}, auth=WRITE
)
def shadow_stop(request: HttpRequest, rollout_id: Id):
    found = get_or_404(
        bound_to(request, ShadowRollout.objects.all()),
        f"no shadow rollout {rollout_id}",
        pk=rollout_id,
    )
    rollout = shadow.stop_shadow(rollout_id=found.pk, actor=audit.actor_of(key=request.auth))
    return _shadow_out(rollout)
