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
    edit_diff = models.TextField(
        blank=True, help_text="What the reviewer's edit changed (field by field for an object)."
    )
    # A rejection's reason code, from the managed list (ReasonCode).
    decision_code = models.CharField(max_length=60, blank=True)
    # While a reviewer has the request open (the review flow), others see
    # who has it and cannot decide it from the console until the claim runs
    # out (approvals.claims).
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    claimed_by_label = models.CharField(max_length=150, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Service level, copied from the approval step's config when the request
    # is created: the role group whose members review it, when it is due,
    # whom it escalates to once overdue, and what a timeout decides
    # ("reject" for outbound sends and spending; "approve" only where the
    # step says so; "" waits for a person however long it takes).
    queue = models.CharField(max_length=80, default="reviewer")
    due_at = models.DateTimeField(null=True, blank=True)
    escalate_to = models.CharField(max_length=80, blank=True)
    on_timeout = models.CharField(max_length=10, blank=True)
    timeout_after = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    breached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        permissions = [("decide_approval", "Can decide an approval request")]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="approval_one_per_run_step"),
        ]
        indexes = [
            models.Index(fields=["status", "created_at"], name="approval_status_created"),
            # The SLA sweep: pending requests by due time.
            models.Index(
                fields=["due_at"],
                name="approval_pending_due",
                condition=models.Q(status="pending"),
            ),
        ]

    def __str__(self) -> str:
        return f"approval {self.pk} for run {self.run_id} ({self.status})"


class ReasonCode(models.Model):
    """Why a reviewer rejects: a managed list, so rejections can be counted
    by cause (free text stays optional beside the code)."""

    code = models.SlugField(max_length=60, unique=True)
    label = models.CharField(max_length=120)
    position = models.PositiveSmallIntegerField(default=0)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["position", "code"]

    def __str__(self) -> str:
        return self.label


class SampleReview(models.Model):
    """The weekly random sample of one workflow's finished runs."""

    workflow = models.ForeignKey("runs.Workflow", on_delete=models.CASCADE, related_name="samples")
    week = models.CharField(max_length=8, help_text='ISO week, e.g. "2026-W47".')
    size = models.PositiveIntegerField(default=20)
    seed = models.CharField(max_length=64, help_text="Seed of the draw, so it can be re-done.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-week", "workflow"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "week"], name="sample_one_per_week"),
        ]

    def __str__(self) -> str:
        return f"{self.workflow} {self.week}"


class SampleVerdict(models.TextChoices):
    PENDING = "pending", "Not reviewed"
    OK = "ok", "OK"
    FLAGGED = "flagged", "Flagged"


class SampleItem(models.Model):
    review = models.ForeignKey(SampleReview, on_delete=models.CASCADE, related_name="items")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="sample_items")
    stratum = models.CharField(max_length=120, help_text='e.g. "outreach / 70+".')
    verdict = models.CharField(
        max_length=10, choices=SampleVerdict.choices, default=SampleVerdict.PENDING
    )
    category = models.CharField(max_length=80, blank=True)
    note = models.TextField(blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["review", "id"]
        constraints = [
            models.UniqueConstraint(fields=["review", "run"], name="sample_item_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.review} run {self.run_id} ({self.verdict})"


class ReplaySet(models.Model):
    """Runs kept to replay against a new workflow version (regression set)."""

    name = models.SlugField(max_length=100, unique=True)
    workflow = models.ForeignKey(
        "runs.Workflow", on_delete=models.CASCADE, related_name="replay_sets"
    )
    runs = models.ManyToManyField("runs.Run", blank=True, related_name="replay_sets")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
