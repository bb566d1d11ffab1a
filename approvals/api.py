"""The approvals API: the pending queue and decisions on it.

A decision goes through `decide_approval`, like the console's: of
concurrent deciders one wins (the others get 409), and the decision is
audited as the API key (`key:<prefix>`). Drafts are shown as they are: a
reviewer cannot judge a redacted draft.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.responses import Status

from approvals.models import ApprovalRequest, ApprovalStatus
from integrations.kit import (
    IDEMPOTENCY_KEY,
    ApiError,
    ApiKeyAuth,
    Id,
    IdempotencyKey,
    In,
    JsonValue,
    Slug,
    bound_to,
    errors,
    get_or_404,
    idempotent,
    text,
)
from policies import audit
from policies.models import ApiScope
from runs.engine.service import decide_approval

router = Router(tags=["approvals"])
DECIDE = ApiKeyAuth(ApiScope.APPROVALS_WRITE)
Reason = text(max_length=4000)


class ApprovalOut(Schema):
    id: int
    run_id: int
    workflow: str
    seq: int
    step_key: str
    kind: str
    title: str
    draft: Any
    reason_code: str
    status: str
    queue: str
    due_at: datetime | None
    created_at: datetime
    edited_draft: Any
    decision_reason: str
    decided_by: str
    decided_at: datetime | None

    @staticmethod
    def resolve_workflow(request: ApprovalRequest) -> str:
        return request.run.workflow.slug

    @staticmethod
    def resolve_decided_by(request: ApprovalRequest) -> str:
        return request.decided_by_label


class ApprovalPageOut(Schema):
    count: int
    limit: int
    offset: int
    items: list[ApprovalOut]


class ApprovalFilters(Schema):
    workflow: Slug | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class DecisionIn(In):
    decision: Literal["approve", "edit", "reject"]
    edited_draft: JsonValue = Field(None, description="The edited draft (decision=edit).")
    reason: Reason = Field("", description="Required to reject.")


def _approvals(request: HttpRequest) -> QuerySet[ApprovalRequest]:
    queryset = ApprovalRequest.objects.select_related("run__workflow")
    return bound_to(request, queryset, "run__workflow_id")


def _problems(decision: DecisionIn) -> dict[str, str]:
    problems = {}
    if decision.decision == "edit" and decision.edited_draft is None:
        problems["edited_draft"] = "an edit needs the edited draft"
    if decision.decision != "edit" and decision.edited_draft is not None:
        problems["edited_draft"] = "only an edit carries a draft"
    if decision.decision == "reject" and not decision.reason.strip():
        problems["reason"] = "a rejection needs a reason"
    return problems


@router.get("/approvals", response={200: ApprovalPageOut, **errors()}, auth=DECIDE)
def approval_list(request: HttpRequest, filters: Query[ApprovalFilters]):
    """Pending approval requests, oldest first."""
    pending = _approvals(request).filter(status=ApprovalStatus.PENDING)
    if filters.workflow:
        pending = pending.filter(run__workflow__slug=filters.workflow)
    pending = pending.order_by("created_at", "id")
    page = list(pending[filters.offset : filters.offset + filters.limit])
    return {
        "count": pending.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": page,
    }


@router.post(
    "/approvals/{approval_id}/decision",
    response={200: ApprovalOut, **errors(404, 409)},
    auth=DECIDE,
)
def approval_decide(
    request: HttpRequest,
    approval_id: Id,
    payload: DecisionIn,
    idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY,
):
    """Approve, edit (approve with the edited draft) or reject (with a
    reason); 409 when it was decided already."""
    problems = _problems(payload)
    if problems:
        raise ApiError("invalid decision", status=422, code="invalid_request", fields=problems)

    def decide(_: str | None) -> Status:
        get_or_404(_approvals(request), f"no approval request {approval_id}", pk=approval_id)
        decide_approval(
            approval_id=approval_id,
            approve=payload.decision != "reject",
            actor_label=audit.actor_of(key=request.auth),
            edited_draft=payload.edited_draft,
            reason=payload.reason,
        )
        return Status(200, ApprovalOut.from_orm(_approvals(request).get(pk=approval_id)))

    return idempotent(request, idempotency_key, decide)
