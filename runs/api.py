"""The runs API: start, list, read, cancel and retry runs; metrics per
workflow version; inbound webhooks that start runs.

Handlers parse, call the engine's service functions, and shape the answer;
every state change is the engine's. A key bound to workflows sees only
their runs (others answer 404).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.responses import Status

from integrations.kit import (
    IDEMPOTENCY_KEY,
    ApiError,
    ApiKeyAuth,
    DateTime,
    Id,
    IdempotencyKey,
    In,
    JsonObject,
    Slug,
    bound_to,
    errors,
    get_or_404,
    idempotent,
    text,
)
from lib.screening import redact, redact_value
from policies import audit
from policies.models import ApiScope
from runs.engine.service import cancel_run, retry_run, start_run
from runs.metrics import workflow_metrics
from runs.models import Run, RunStatus, StepRun, Workflow

router = Router(tags=["runs"])
READ = ApiKeyAuth(ApiScope.RUNS_READ)
WRITE = ApiKeyAuth(ApiScope.RUNS_WRITE)
Reason = text(max_length=4000)
Outcome = text(max_length=80)


# ---------------------------------------------------------------- schemas


class RunStartIn(In):
    workflow: Slug = Field(description="The workflow's slug.")
    input: JsonObject = Field(default_factory=dict, description="Checked against its entry schema.")


class RunCancelIn(In):
    reason: Reason = ""


class RunOut(Schema):
    id: int
    workflow: str
    version: int
    status: RunStatus
    wait_reason: str
    current_step: str
    outcome: str
    success: bool | None
    stop_reason: str
    tainted: bool
    dead_lettered: bool
    cost_usd: Decimal = Field(description="Model plus vendor spend.")
    model_usd: Decimal
    vendor_usd: Decimal
    credits: dict[str, int] = Field(description='Vendor credits spent, e.g. {"enrichco": 15}.')
    tokens_in: int
    tokens_out: int
    llm_calls: int
    tool_calls: int
    steps_executed: int
    trace_id: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_workflow(run: Run) -> str:
        return run.workflow.slug

    @staticmethod
    def resolve_version(run: Run) -> int:
        return run.version.number

    @staticmethod
    def resolve_dead_lettered(run: Run) -> bool:
        return run.dead_lettered_at is not None


class StepRunOut(Schema):
    """A step's record. Input, output and error are shown PII-redacted:
    an API key does not carry the `view_personal_data` permission."""

    seq: int
    attempt: int
    step_key: str
    kind: str
    status: str
    edge: str
    input: Any
    output: Any
    error: str
    error_type: str
    duration_ms: float
    provider: str
    model_requested: str
    model_answered: str
    tokens_in: int
    tokens_out: int
    cost_usd: Decimal = Field(description="Model plus vendor spend.")
    model_usd: Decimal
    vendor: str
    credits: int
    vendor_usd: Decimal
    cache_hit: bool
    cost_saved_usd: Decimal = Field(
        description="What an answer from the step cache or the ledger did not pay again."
    )
    vendor_saved_usd: Decimal
    credits_saved: int
    started_at: datetime
    finished_at: datetime

    @staticmethod
    def resolve_input(step: StepRun) -> Any:
        return redact_value(step.input)

    @staticmethod
    def resolve_output(step: StepRun) -> Any:
        return redact_value(step.output)

    @staticmethod
    def resolve_error(step: StepRun) -> str:
        return redact(step.error)


class RunDetailOut(RunOut):
    input: Any
    error: str
    steps: list[StepRunOut]

    @staticmethod
    def resolve_input(run: Run) -> Any:
        return redact_value(run.input)

    @staticmethod
    def resolve_error(run: Run) -> str:
        return redact(run.error)

    @staticmethod
    def resolve_steps(run: Run) -> list[StepRun]:
        return list(run.step_runs.order_by("seq", "attempt"))


class RunFilters(Schema):
    workflow: Slug | None = None
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Version number.")
    status: RunStatus | None = None
    outcome: Outcome | None = None
    created_after: DateTime | None = None
    created_before: DateTime | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class RunPageOut(Schema):
    count: int
    limit: int
    offset: int
    items: list[RunOut]


class MetricsFilters(Schema):
    since: DateTime | None = Field(None, description="Default: 7 days before `until`.")
    until: DateTime | None = Field(None, description="Default: now.")
    workflow: Slug | None = None
    version: int | None = Field(None, ge=1, le=2**31 - 1, description="Needs `workflow`.")


class VersionMetricsOut(Schema):
    workflow: str
    version: int
    runs: int
    succeeded: int
    failed: int
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


class MetricsOut(Schema):
    since: datetime
    until: datetime
    versions: list[VersionMetricsOut]


# --------------------------------------------------------------- handlers


def _runs(request: HttpRequest) -> QuerySet[Run]:
    return bound_to(request, Run.objects.select_related("workflow", "version"))


def actor_of(request: HttpRequest) -> str:
    return audit.actor_of(key=request.auth)


def _run(request: HttpRequest, run_id: int) -> Run:
    return get_or_404(_runs(request), f"no run {run_id}", pk=run_id)


@router.post("/runs", response={200: RunOut, 201: RunOut, **errors(404, 409, 429)}, auth=WRITE)
def run_start(
    request: HttpRequest,
    payload: RunStartIn,
    idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY,
):
    """Start a run of the workflow's live version (or, while a canary runs,
    of the version its draw picks): 201, or 200 with the
    run an earlier request with the same `Idempotency-Key` started."""

    def start(work_key: str | None) -> Status:
        workflows = bound_to(request, Workflow.objects.select_related("role", "policy"), "pk")
        workflow = get_or_404(workflows, f"no workflow {payload.workflow!r}", slug=payload.workflow)
        started = start_run(workflow=workflow, input=payload.input, idempotency_key=work_key)
        return Status(201 if started.created else 200, RunOut.from_orm(started.run))

    return idempotent(request, idempotency_key, start)


@router.get("/runs", response={200: RunPageOut, **errors()}, auth=READ)
def run_list(request: HttpRequest, filters: Query[RunFilters]):
    """Runs, newest first, filtered and paginated (limit/offset)."""
    runs = _runs(request)
    lookups = {
        "workflow__slug": filters.workflow,
        "version__number": filters.version,
        "status": filters.status,
        "outcome": filters.outcome,
        "created_at__gte": filters.created_after,
        "created_at__lt": filters.created_before,
    }
    runs = runs.filter(**{k: v for k, v in lookups.items() if v is not None}).order_by("-id")
    page = list(runs[filters.offset : filters.offset + filters.limit])
    return {"count": runs.count(), "limit": filters.limit, "offset": filters.offset, "items": page}


@router.get("/runs/{run_id}", response={200: RunDetailOut, **errors(404)}, auth=READ)
def run_detail(request: HttpRequest, run_id: Id):
    """One run with its step records in order (PII redacted)."""
    return _run(request, run_id)


@router.post("/runs/{run_id}/cancel", response={200: RunOut, **errors(404, 409)}, auth=WRITE)
def run_cancel(
    request: HttpRequest,
    run_id: Id,
    payload: RunCancelIn | None = None,
    idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY,
):
    """Cancel a run that has not finished (409 once it has)."""

    def cancel(_: str | None) -> Status:
        _run(request, run_id)
        reason = payload.reason if payload else ""
        cancel_run(run_id=run_id, reason=reason, actor=actor_of(request))
        return Status(200, RunOut.from_orm(_run(request, run_id)))

    return idempotent(request, idempotency_key, cancel)


@router.post("/runs/{run_id}/retry", response={200: RunOut, **errors(404, 409)}, auth=WRITE)
def run_retry(
    request: HttpRequest, run_id: Id, idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY
):
    """Re-queue a failed run at its failed step; earlier outputs are reused."""

    def retry(_: str | None) -> Status:
        _run(request, run_id)
        retry_run(run_id=run_id, actor=actor_of(request))
        return Status(200, RunOut.from_orm(_run(request, run_id)))

    return idempotent(request, idempotency_key, retry)


@router.get("/metrics", response={200: MetricsOut, **errors(404)}, auth=READ)
def metrics(request: HttpRequest, filters: Query[MetricsFilters]):
    """Volume, outcomes, latency, cost and savings per workflow version over
    [since, until) (by run creation time)."""
    since, until = _period(filters)
    workflows = bound_to(request, Workflow.objects.all(), "pk")
    workflow, version = _metrics_subject(workflows, filters)
    rows = workflow_metrics(since=since, until=until, workflow=workflow, version=version)
    if request.auth.bound_workflow_ids and workflow is None:
        allowed = set(workflows.values_list("slug", flat=True))
        rows = [row for row in rows if row.workflow in allowed]
    return {"since": since, "until": until, "versions": rows}


def _period(filters: MetricsFilters) -> tuple[datetime, datetime]:
    until = filters.until or timezone.now()
    since = filters.since or until - timedelta(days=7)
    if since >= until:
        raise ApiError(
            "since must be before until",
            status=422,
            code="invalid_request",
            fields={"since": "must be before until"},
        )
    return since, until


def _metrics_subject(workflows: QuerySet[Workflow], filters: MetricsFilters):
    """The workflow and version asked for (None: all), among those visible."""
    if filters.workflow is None:
        if filters.version is not None:
            raise ApiError(
                "version needs workflow",
                status=422,
                code="invalid_request",
                fields={"version": "needs workflow"},
            )
        return None, None
    workflow = get_or_404(workflows, f"no workflow {filters.workflow!r}", slug=filters.workflow)
    if filters.version is None:
        return workflow, None
    version = get_or_404(
        workflow.versions.published(),
        f"no version {filters.version}",
        number=filters.version,
    )
    return workflow, version
