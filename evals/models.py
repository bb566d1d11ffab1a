"""Eval sets, experiments, the publish gate and shadow rollouts.

An `EvalSet` holds a workflow's `EvalCase`s: an input, the recorded run it
came from (whose tool calls answer the case's reads), expectations (checks
on what a run of the case produced, see evals.checks) and whether the case
is critical. An `Experiment` runs every case of a set against one or more
versions (`ExperimentArm`), each case as a sandbox run (`Trial`), through
the real engine and workers. A `PublishGate` says what a new version must
pass before it is published; a `ShadowRollout` runs a candidate beside the
live version on live inputs.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.db.models import Q


class EvalSet(models.Model):
    workflow = models.ForeignKey(
        "runs.Workflow", on_delete=models.CASCADE, related_name="eval_sets"
    )
    name = models.SlugField(max_length=100)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["workflow", "name"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "name"], name="evalset_name_unique")
        ]

    def __str__(self) -> str:
        return f"{self.workflow.slug}/{self.name}"


class CaseOrigin(models.TextChoices):
    MANUAL = "manual", "Entered by hand"
    IMPORT = "import", "Imported (JSONL)"
    APPROVED = "approved", "A reviewer approved the draft"
    EDITED = "edited", "A reviewer edited the draft"
    REJECTED = "rejected", "A reviewer rejected the draft"
    FLAGGED = "flagged", "Flagged in the weekly sample"
    REPLAY = "replay", "From a replay set"


class EvalCase(models.Model):
    """One input and what a run of it must produce.

    `expectations` is a list of checks (evals.checks), e.g.
    `[{"check": "outcome", "equals": "sent"},
      {"check": "condition", "when": {"path": "output.total", "op": ">=", "value": 70}},
      {"check": "draft", "step": "review", "equals": {"subject": "Hi"}},
      {"check": "judge", "rubric": "The email is polite and names the company."}]`.
    A case built from a recorded run is unique per set and run, so building
    again adds only the new ones.
    """

    eval_set = models.ForeignKey(EvalSet, on_delete=models.CASCADE, related_name="cases")
    name = models.CharField(max_length=200)
    input = models.JSONField(default=dict)
    source_run = models.ForeignKey(
        "runs.Run",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="eval_cases",
        help_text="The recorded run the case came from: its tool calls answer the case's reads.",
    )
    expectations = models.JSONField(default=list, blank=True)
    critical = models.BooleanField(
        default=False, help_text="A regression here fails the publish gate whatever the pass rate."
    )
    tags = models.JSONField(default=list, blank=True)
    origin = models.CharField(max_length=12, choices=CaseOrigin.choices, default=CaseOrigin.MANUAL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["eval_set", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["eval_set", "source_run"],
                condition=Q(source_run__isnull=False),
                name="evalcase_one_per_run",
            )
        ]

    def __str__(self) -> str:
        return self.name


class ExperimentStatus(models.TextChoices):
    RUNNING = "running", "Running"
    CANCELLED = "cancelled", "Cancelled"
    DONE = "done", "Done"


class Experiment(models.Model):
    eval_set = models.ForeignKey(EvalSet, on_delete=models.PROTECT, related_name="experiments")
    status = models.CharField(
        max_length=10, choices=ExperimentStatus.choices, default=ExperimentStatus.RUNNING
    )
    started_by = models.CharField(max_length=150, blank=True)
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"experiment {self.pk} on {self.eval_set}"


class ExperimentArm(models.Model):
    """One version an experiment runs every case against."""

    experiment = models.ForeignKey(Experiment, on_delete=models.CASCADE, related_name="arms")
    version = models.ForeignKey("runs.WorkflowVersion", on_delete=models.PROTECT, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)
    baseline = models.BooleanField(default=False, help_text="The live version, compared against.")

    class Meta:
        ordering = ["experiment", "position"]
        constraints = [
            models.UniqueConstraint(fields=["experiment", "version"], name="arm_version_unique")
        ]

    def __str__(self) -> str:
        return self.label

    @property
    def label(self) -> str:
        version = self.version
        return f"draft {version.checksum[:7]}" if version.candidate else f"v{version.number}"


class Verdict(models.TextChoices):
    PENDING = "pending", "Pending"
    PASSED = "passed", "Passed"
    FAILED = "failed", "Failed"
    ERROR = "error", "Run did not finish"
    CANCELLED = "cancelled", "Cancelled"


class Trial(models.Model):
    """One case run against one arm: its sandbox run and, once the run is
    over, the checks' results and what it cost. `attempt` grows when a
    cancelled experiment is resumed (a new run, a new idempotency key)."""

    arm = models.ForeignKey(ExperimentArm, on_delete=models.CASCADE, related_name="trials")
    case = models.ForeignKey(EvalCase, on_delete=models.CASCADE, related_name="trials")
    run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attempt = models.PositiveSmallIntegerField(default=1)
    verdict = models.CharField(max_length=10, choices=Verdict.choices, default=Verdict.PENDING)
    checks = models.JSONField(default=list, blank=True)
    facts = models.JSONField(null=True, blank=True, help_text="What the run produced.")
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    would_cost_usd = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=0,
        help_text="What the stubbed and replayed calls would have cost live.",
    )
    tokens = models.PositiveBigIntegerField(default=0)
    latency_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["arm", "case"]
        constraints = [models.UniqueConstraint(fields=["arm", "case"], name="trial_unique")]
        indexes = [models.Index(fields=["arm", "verdict"], name="trial_arm_verdict")]

    def __str__(self) -> str:
        return f"{self.case} on {self.arm} ({self.verdict})"

    @property
    def live_cost_usd(self) -> Decimal:
        """What the run would have cost live: what it paid plus its stubs."""
        return self.cost_usd + self.would_cost_usd


class PublishGate(models.Model):
    """What a new version of the workflow must pass before it is published
    (evals.gate). Managers edit it in admin."""

    workflow = models.OneToOneField(
        "runs.Workflow", on_delete=models.CASCADE, related_name="publish_gate"
    )
    eval_set = models.ForeignKey(EvalSet, on_delete=models.PROTECT, related_name="+")
    enabled = models.BooleanField(default=True)
    min_pass_rate = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=Decimal("90"),
        help_text="Percent of the cases that must pass.",
    )
    no_critical_regressions = models.BooleanField(
        default=True, help_text="A critical case that passes on the live version must pass."
    )
    max_cost_increase_pct = models.DecimalField(
        max_digits=7,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="The cost per case (as it would be live) may exceed the live version's by "
        "at most this percent. Empty: no limit.",
    )

    def __str__(self) -> str:
        return f"publish gate of {self.workflow.slug}"


class GateOverride(models.Model):
    """A named decision to publish a draft although it fails the gate: who
    and why, for that draft (its checksum) only, used once. Audited when used."""

    workflow = models.ForeignKey("runs.Workflow", on_delete=models.CASCADE, related_name="+")
    checksum = models.CharField(max_length=64, help_text="The draft's checksum it is for.")
    by = models.CharField(max_length=150)
    reason = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"override of {self.workflow.slug} by {self.by}"


class ShadowRollout(models.Model):
    """A candidate version run beside the live one: every live run of the
    workflow started while it is active gets a shadow run of the candidate
    on the same input (evals.shadow). One active rollout per workflow."""

    workflow = models.ForeignKey("runs.Workflow", on_delete=models.CASCADE, related_name="+")
    candidate = models.ForeignKey(
        "runs.WorkflowVersion", on_delete=models.PROTECT, related_name="+"
    )
    active = models.BooleanField(default=True)
    started_by = models.CharField(max_length=150, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    stopped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow"], condition=Q(active=True), name="shadow_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"shadow of {self.candidate} ({'active' if self.active else 'stopped'})"
