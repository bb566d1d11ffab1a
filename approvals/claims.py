"""Claims: a reviewer who opens a request in the review flow holds it for a
while, so that two reviewers do not work on the same item.

A claim is one conditional UPDATE (the request is pending and unclaimed,
its claim ran out, or it is already this reviewer's), so two reviewers
opening the same item at once get one claim between them. Others see who
has it and until when; the console's decision honours it
(`engine.decide_approval(..., honour_claims=True)`, in the same UPDATE as
the decision). A claim runs out by itself (`BOSUN_REVIEW_CLAIM_S`), so a
reviewer who walks away blocks nobody for long; the API and the policy's
timeouts are not held by claims.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Now

from approvals.models import ApprovalRequest, ApprovalStatus


def claimable(user: Any) -> Q:
    """Requests this user may claim: unclaimed, claim run out, or theirs."""
    return Q(claimed_until__isnull=True) | Q(claimed_until__lte=Now()) | Q(claimed_by=user)


def claim(approval_id: int, user: Any) -> bool:
    """Hold the request for `BOSUN_REVIEW_CLAIM_S` (again, if already held
    by this user). False when it is decided or someone else holds it."""
    hold = timedelta(seconds=settings.BOSUN_REVIEW_CLAIM_S)
    taken = (
        ApprovalRequest.objects.filter(pk=approval_id, status=ApprovalStatus.PENDING)
        .filter(claimable(user))
        .update(
            claimed_by=user,
            claimed_by_label=user.get_username()[:150],
            claimed_until=Now() + hold,
        )
    )
    return bool(taken)


def release(approval_id: int, user: Any) -> None:
    """Give the request back (the reviewer skipped it)."""
    ApprovalRequest.objects.filter(pk=approval_id, claimed_by=user).update(
        claimed_by=None, claimed_by_label="", claimed_until=None
    )


def held_by_others(queryset: QuerySet[ApprovalRequest], user: Any) -> QuerySet[ApprovalRequest]:
    return queryset.exclude(claimable(user))
