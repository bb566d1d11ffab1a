"""Telling reviewers about approval requests, and holding requests to their SLA.

A request names a `queue` (a role group), may be due at `due_at`, escalate
to another group once overdue, and be decided by policy at `timeout_after`
(`on_timeout`: "reject" or "approve"). These functions act on those fields:

- `notify_request`: tell the queue's group that a request arrived: one
  email per member with an address (Django's email backend) and, when
  `BOSUN_REVIEW_WEBHOOK_URL` is set, one JSON message to a chat webhook,
  each with an absolute link to the request.
- `sweep_slas`: tell anyone a request's announcement missed, mark overdue
  requests breached and tell their escalation group, and let the policy
  decide requests past their timeout (through `decide_approval`, so the
  decision is audited and the run resumes down that edge).

Each telling happens at most once per request: it is claimed first by a
conditional UPDATE on `notified_at` or `breached_at`, so concurrent sweeps,
a queued task delivered twice and a sweep racing the task send once. A
failure to send is logged, never raised: it must not fail a step or a
sweep, and a claimed telling is not retried (a flood of retries to a broken
mail server helps nobody; the request stays visible in the queue).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.urls import reverse

from approvals.models import ApprovalRequest, ApprovalStatus
from lib.notify import email_group, post_json
from policies.notifications import notify_event, sla_escalation
from runs.models import Run

log = logging.getLogger("bosun.review")


@dataclass
class SweepReport:
    """What one `sweep_slas` did, by approval id."""

    notified: list[int] = field(default_factory=list)
    breached: list[int] = field(default_factory=list)


def item_url(approval_id: int) -> str:
    """The absolute link to one request in the review queue."""
    return settings.BOSUN_BASE_URL + reverse("console-review-detail", args=[approval_id])


def notify_request(*, approval_id: int) -> bool:
    """Tell the request's queue group that it arrived. Returns whether this
    call did the telling (False: someone did already, or it was decided)."""
    # The claim: of every caller (task, redelivered task, sweeps) exactly
    # one changes notified_at from NULL, and only that one sends.
    claimed = ApprovalRequest.objects.filter(
        pk=approval_id, status=ApprovalStatus.PENDING, notified_at__isnull=True
    ).update(notified_at=Now())
    if not claimed:
        return False
    request = ApprovalRequest.objects.select_related("run__workflow").get(pk=approval_id)
    _tell(request, group=request.queue, event="approval.created", subject="Review needed")
    return True


def sweep_slas(*, limit: int = 200) -> SweepReport:
    """One pass over pending requests: announce the unannounced and breach
    the overdue (once each). Deciding those past their timeout acts on runs,
    so the engine does it (`decide_timed_out_approvals`). Safe to run
    anywhere, any number of times at once."""
    report = SweepReport()
    pending = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING)
    for approval_id in _ids(pending.filter(notified_at__isnull=True), limit):
        if notify_request(approval_id=approval_id):
            report.notified.append(approval_id)
    for approval_id in _ids(pending.filter(due_at__lte=Now(), breached_at__isnull=True), limit):
        if _breach(approval_id):
            report.breached.append(approval_id)
    if report.notified or report.breached:
        log.info("sla sweep: %d notified, %d breached", len(report.notified), len(report.breached))
    return report


def _ids(queryset, limit: int) -> list[int]:
    return list(queryset.order_by("created_at", "id").values_list("pk", flat=True)[:limit])


def _breach(approval_id: int) -> bool:
    # The claim: one sweep marks the breach and escalates; the others see
    # breached_at set and do nothing.
    with transaction.atomic():
        claimed = ApprovalRequest.objects.filter(
            pk=approval_id, status=ApprovalStatus.PENDING, breached_at__isnull=True
        ).update(breached_at=Now())
        if not claimed:
            return False
        request = ApprovalRequest.objects.select_related("run__workflow").get(pk=approval_id)
        # The run counts its breaches (the dashboard's), with the claim.
        Run.objects.filter(pk=request.run_id).update(breaches=F("breaches") + 1)
    if request.escalate_to:
        _tell(request, group=request.escalate_to, event="approval.overdue", subject="Overdue")
    # The routes set in admin for SLA escalations (once per request and route).
    notify_event(sla_escalation(request))
    return True


def _tell(request: ApprovalRequest, *, group: str, event: str, subject: str) -> None:
    """Email the group's members and post to the chat webhook; log failures."""
    link = item_url(request.pk)
    what = request.title or request.step_key
    workflow = request.run.workflow.name
    due = f"due {request.due_at:%Y-%m-%d %H:%M} UTC" if request.due_at else "no deadline"
    text = (
        f"{subject}: {what} — {workflow}, run {request.run_id}, step {request.step_key}.\n"
        f"Why: {request.reason_code or 'review required'} ({request.get_kind_display()}), "
        f"{due}.\nOpen it: {link}\n"
    )
    _email(group, f"[Bosun] {subject}: {what}"[:200], text)
    if settings.BOSUN_REVIEW_WEBHOOK_URL:
        _post(
            {
                "text": text.strip(),
                "event": event,
                "approval_id": request.pk,
                "run_id": request.run_id,
                "workflow": request.run.workflow.slug,
                "queue": group,
                "reason_code": request.reason_code,
                "due_at": request.due_at.isoformat() if request.due_at else None,
                "url": link,
            }
        )


def _email(group: str, subject: str, body: str) -> None:
    email_group(group, subject, body, timeout_s=settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S)


def _post(message: dict) -> None:
    post_json(
        settings.BOSUN_REVIEW_WEBHOOK_URL,
        message,
        timeout_s=settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S,
    )
