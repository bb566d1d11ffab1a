"""The lanes API: list autonomy lane proposals (brought up to date from
the evidence first), accept or dismiss one.

Listing needs `runs:read`, deciding `lanes:write`. A key bound to
workflows reaches the proposals of their policies only. Accepting saves
the policy as a new version (policies.lanes), audited with the key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from ninja import Field, Query, Router, Schema

from integrations.kit import ApiKeyAuth, Id, In, errors, get_or_404, text
from policies import audit, lanes
from policies.models import ApiScope, LaneDirection, LaneProposal, LaneProposalStatus

router = Router(tags=["lanes"])
READ = ApiKeyAuth(ApiScope.RUNS_READ)
WRITE = ApiKeyAuth(ApiScope.LANES_WRITE)
Note = text(max_length=4000)


class ProposalFilters(Schema):
    status: LaneProposalStatus | None = LaneProposalStatus.OPEN


class AcceptIn(In):
    note: Note = ""
    bound_arg: str | None = Field(
        None,
        max_length=100,
        pattern=r"^[A-Za-z0-9_]+$",
        description="To auto only while args.<bound_arg> <= bound_max.",
    )
    bound_max: float | None = None


class DismissIn(In):
    note: Note = Field(min_length=1)


class ProposalOut(Schema):
    id: int
    policy: str
    tool: str
    direction: LaneDirection
    status: LaneProposalStatus
    evidence: dict[str, Any]
    created_at: datetime
    decided_at: datetime | None
    decided_by: str
    new_version: int | None

    @staticmethod
    def resolve_policy(proposal: LaneProposal) -> str:
        return proposal.policy.name

    @staticmethod
    def resolve_new_version(proposal: LaneProposal) -> int | None:
        return proposal.new_version.number if proposal.new_version else None


def _proposals(request: HttpRequest) -> QuerySet[LaneProposal]:
    found = LaneProposal.objects.select_related("policy", "new_version")
    ids = request.auth.bound_workflow_ids
    return found.filter(policy__workflow__in=ids).distinct() if ids else found


@router.get("/lanes/proposals", response={200: list[ProposalOut], **errors()}, auth=READ)
def proposal_list(request: HttpRequest, filters: Query[ProposalFilters]):
    """Lane proposals, newest first (open ones by default)."""
    lanes.refresh_proposals()
    found = _proposals(request)
    if filters.status is not None:
        found = found.filter(status=filters.status)
    return list(found[:200])


@router.post(
    "/lanes/proposals/{proposal_id}/accept",
    response={200: ProposalOut, **errors(404, 409)},
    auth=WRITE,
)
def proposal_accept(request: HttpRequest, proposal_id: Id, payload: AcceptIn):
    """Move the lane: a new policy version with the rule changed."""
    get_or_404(_proposals(request), f"no lane proposal {proposal_id}", pk=proposal_id)
    bound = None
    if payload.bound_arg and payload.bound_max is not None:
        bound = lanes.Bound(arg=payload.bound_arg, max=payload.bound_max)
    lanes.accept_proposal(
        proposal_id=proposal_id,
        actor=audit.actor_of(key=request.auth),
        note=payload.note,
        bound=bound,
    )
    return _proposals(request).get(pk=proposal_id)


@router.post(
    "/lanes/proposals/{proposal_id}/dismiss",
    response={200: ProposalOut, **errors(404, 409)},
    auth=WRITE,
)
def proposal_dismiss(request: HttpRequest, proposal_id: Id, payload: DismissIn):
    """Leave the lane as it is; the evidence counted is spent."""
    get_or_404(_proposals(request), f"no lane proposal {proposal_id}", pk=proposal_id)
    lanes.dismiss_proposal(
        proposal_id=proposal_id, actor=audit.actor_of(key=request.auth), note=payload.note
    )
    return _proposals(request).get(pk=proposal_id)
