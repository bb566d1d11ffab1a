"""Approval requests: a run waits on one until a human (or policy) decides."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    REJECTED = "rejected", "Rejected"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalKind(models.TextChoices):
    DRAFT = "draft", "Draft review"
    TOOL_CALL = "tool_call", "Tool call"


class ApprovalRequest(models.Model):
    """A draft put in front of a reviewer by an `approval` step.

    One request per (run, seq): the step may be executed again after a crash
    and must find the request it created, not create a second one. The
    decision is a conditional UPDATE from `pending`, so of two reviewers
    deciding at once exactly one wins.
    """

    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="approvals")
    seq = models.PositiveIntegerField()
    step_key = models.CharField(max_length=100)
    title = models.CharField(max_length=300, blank=True)
    draft = models.JSONField(null=True, blank=True)
    reason_code = models.CharField(max_length=80, blank=True)
    kind = models.CharField(max_length=12, choices=ApprovalKind.choices, default=ApprovalKind.DRAFT)
    # A tool-call approval binds the exact arguments (their hash) and is
    # consumed by one call (its ledger key), never reused for another.
    args_hash = models.CharField(max_length=64, blank=True)
    consumed_by = models.CharField(max_length=200, blank=True)
    consumed_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(
        max_length=12, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING
    )
    edited_draft = models.JSONField(null=True, blank=True)
    decision_reason = models.TextField(blank=True)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    decided_by_label = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("decide_approval", "Can decide an approval request")]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="approval_one_per_run_step"),
        ]
        indexes = [models.Index(fields=["status", "created_at"], name="approval_status_created")]

    def __str__(self) -> str:
        return f"approval {self.pk} for run {self.run_id} ({self.status})"
