"""Workflows (editable drafts), their published versions, runs and step runs.

A run binds one immutable `WorkflowVersion` forever. Its progress is the
`Run` row (where it is, who holds it, totals) plus one `StepRun` row per
executed attempt; the engine (`runs.engine`) owns every state change.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from django.conf import settings
from django.db import models
from django.db.models import Q


class StepKind(models.TextChoices):
    LLM = "llm", "LLM"
    TOOL = "tool", "Tool"
    BRANCH = "branch", "Branch"
    APPROVAL = "approval", "Approval"
    END = "end", "End"
    DEDUP = "dedup", "Dedup gate"
    KNOWLEDGE_CHECK = "knowledge_check", "Knowledge check"
    KNOWLEDGE_WRITE = "knowledge_write", "Knowledge write"
    SCORE = "score", "Score"


class Workflow(models.Model):
    """The editable draft of a workflow; publishing freezes a version."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    entry_step = models.SlugField(max_length=100, help_text="Key of the first step.")
    role = models.ForeignKey(
        "policies.AgentRole",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        help_text="The identity runs act as: the tools they may call. None: no tools.",
    )
    policy = models.ForeignKey(
        "policies.Policy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        help_text="Budgets and autonomy rules. None: the default budgets from settings.",
    )
    input_schema = models.JSONField(
        null=True,
        blank=True,
        help_text="JSON Schema a run's input must match; a run with invalid input is refused.",
    )
    sensitive_fields = models.JSONField(
        default=list,
        blank=True,
        help_text='Input fields holding personal data, e.g. ["email", "phone"]: redacted '
        "in prompts when the policy says so, and always in logs and traces.",
    )
    untrusted_fields = models.JSONField(
        default=list,
        blank=True,
        help_text='Input fields with text from outside, e.g. ["message"]: screened for '
        "prompt injection before any model sees them.",
    )
    max_active_runs = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Backpressure: new runs are refused while this many are queued, running "
        "or waiting on a machine (not on a human). Empty: no limit.",
    )
    # The version new runs bind (a canary sends a share of them elsewhere,
    # see runs.engine.rollout). Empty: the newest published version.
    live_version = models.ForeignKey(
        "WorkflowVersion",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        editable=False,
        help_text="The version new runs start on. Empty: the newest published version.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("publish_workflow", "Can publish a workflow version"),
            ("manage_rollout", "Can start, promote and roll back a canary"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def current_version(self) -> WorkflowVersion | None:
        """The latest published version; a candidate (a draft frozen for an
        experiment) is never current."""
        return self.versions.published().order_by("-number").first()

    @property
    def serving_version(self) -> WorkflowVersion | None:
        """The live version: the one pinned, else the newest published."""
        return self.live_version if self.live_version_id else self.current_version


class Step(models.Model):
    """One step of a draft workflow, edited inline in admin.

    `edges` maps an outcome label of the step (`next`, `approved`,
    `rejected`, `escape`, or a branch rule's edge) to the key of the step it
    leads to. The kind's pydantic model validates `config` at publish.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField(max_length=100)
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    position = models.PositiveIntegerField(default=0)
    config = models.JSONField(default=dict, blank=True)
    edges = models.JSONField(default=dict, blank=True, help_text='e.g. {"next": "score"}')
    max_attempts = models.PositiveSmallIntegerField(default=3)
    backoff_base_s = models.FloatField(default=1.0)
    backoff_cap_s = models.FloatField(default=60.0)
    timeout_s = models.FloatField(default=60.0)
    max_visits = models.PositiveSmallIntegerField(
        default=1, help_text="How often one run may enter this step (bounds loops)."
    )
    cache_ttl_s = models.PositiveIntegerField(
        default=0,
        help_text="Reuse this step's result for the same input for this many seconds "
        "(0 = off). Only for llm steps and read-only tools.",
    )
    output_checks = models.JSONField(
        default=list,
        blank=True,
        help_text='Checks on the output; one that holds takes the "flagged" edge, e.g. '
        '[{"name": "competitor_mention", "when": {"path": "output.body", '
        '"op": "contains_any", "value": {"word_list": "competitors"}}}]',
    )

    class Meta:
        ordering = ["workflow", "position", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="step_key_unique_per_workflow")
        ]

    def __str__(self) -> str:
        return f"{self.workflow.slug}:{self.key}"


class VersionQuerySet(models.QuerySet["WorkflowVersion"]):
    def published(self) -> VersionQuerySet:
        """The versions that were published: not the candidates (drafts
        frozen for experiments, shadows and dry runs)."""
        return self.filter(candidate=False)


class WorkflowVersion(models.Model):
    """An immutable, validated snapshot of a workflow. Runs bind one forever."""

    objects = VersionQuerySet.as_manager()

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    definition = models.JSONField()
    checksum = models.CharField(max_length=64)
    published_at = models.DateTimeField(auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    candidate = models.BooleanField(
        default=False,
        help_text="The draft frozen to be tried in experiments and shadow runs: never the "
        "current version, never counted in the numbering (its number is 0, below every "
        "published version's).",
    )

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            # Published versions only: every candidate is number 0.
            models.UniqueConstraint(
                fields=["workflow", "number"],
                condition=Q(candidate=False),
                name="version_number_unique",
            )
        ]

    def __str__(self) -> str:
        # Read without loading it: a list that defers the field (`only`)
        # names its versions without a query each.
        if self.__dict__.get("candidate"):
            return f"{self.workflow.slug} candidate {self.checksum[:7]}"
        return f"{self.workflow.slug} v{self.number}"

    def save(self, *args, **kwargs) -> None:
        # A version is a frozen record: refuse to rewrite it in place.
        if self.pk is not None and not kwargs.pop("allow_update", False):
            raise ValueError("a published WorkflowVersion is immutable")
        super().save(*args, **kwargs)


class RolloutStatus(models.TextChoices):
    ACTIVE = "active", "Canary running"
    PROMOTED = "promoted", "Promoted"
    ROLLED_BACK = "rolled_back", "Rolled back"


class Rollout(models.Model):
    """A candidate version tried on a share of a workflow's new runs.

    While `active`, `share_pct` % of new runs start on `candidate`, the rest
    on `baseline` (the live version when the canary began). Promoting makes
    the candidate live; rolling back keeps or makes the baseline live,
    also after a promote. A run keeps the version it started on whatever
    happens here. Changed only by runs.engine.rollout, audited there.
    """

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="rollouts")
    baseline = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="+")
    candidate = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="+")
    share_pct = models.PositiveSmallIntegerField(help_text="Share of new runs on the candidate.")
    status = models.CharField(
        max_length=12, choices=RolloutStatus.choices, default=RolloutStatus.ACTIVE
    )
    started_at = models.DateTimeField(auto_now_add=True)
    started_by = models.CharField(max_length=150)
    start_reason = models.TextField(blank=True)
    promoted_at = models.DateTimeField(null=True, blank=True)
    promoted_by = models.CharField(max_length=150, blank=True)
    promote_reason = models.TextField(blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    rolled_back_by = models.CharField(max_length=150, blank=True)
    rollback_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # One canary at a time per workflow: the database refuses a
            # second active row, so two operators cannot both start one.
            models.UniqueConstraint(
                fields=["workflow"],
                condition=Q(status="active"),
                name="rollout_one_active_per_workflow",
            ),
            models.CheckConstraint(
                condition=Q(share_pct__gte=1, share_pct__lte=99), name="rollout_share_1_to_99"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id}: v{self.candidate_id} at {self.share_pct}% ({self.status})"

    @property
    def ended_at(self) -> datetime | None:
        """When the comparison window closed: the canary's end."""
        if self.status == RolloutStatus.PROMOTED:
            return self.promoted_at
        return self.rolled_back_at if self.promoted_at is None else self.promoted_at


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    WAITING = "waiting", "Waiting"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    CANCELLED = "cancelled", "Cancelled"


class RunMode(models.TextChoices):
    """What a run may touch. Only a `live` run has effects outside: in every
    other mode (a sandbox) write and egress tools are stubbed at the gate,
    approvals pass by themselves and knowledge, dedup and cache writes are
    not made (see runs.engine.gate and runs.engine.kinds)."""

    LIVE = "live", "Live"
    EXPERIMENT = "experiment", "Experiment"
    SHADOW = "shadow", "Shadow"
    DRY_RUN = "dry_run", "Dry run"


SANDBOX_MODES = (RunMode.EXPERIMENT, RunMode.SHADOW, RunMode.DRY_RUN)


TERMINAL_STATUSES = (
    RunStatus.SUCCEEDED,
    RunStatus.FAILED,
    RunStatus.STOPPED,
    RunStatus.CANCELLED,
)


class Run(models.Model):
    """One execution of a workflow version.

    Claiming: a worker takes a run with one conditional UPDATE that bumps
    `fence`; every later write of that worker carries the fence in its WHERE
    clause, so a worker whose lease was taken over writes nothing.
    Timers: `not_before` is when a waiting run may be claimed again;
    `ring_at` is when the sweeper should ring the doorbell for it (a lost
    task, an expired lease, a due retry). Both are database-clock times.
    """

    # No index of its own: run_workflow_created (workflow, -created_at)
    # serves every lookup by workflow (migration runs 0031).
    workflow = models.ForeignKey(
        Workflow, on_delete=models.PROTECT, related_name="runs", db_index=False
    )
    version = models.ForeignKey(WorkflowVersion, on_delete=models.PROTECT, related_name="runs")
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    wait_reason = models.CharField(max_length=40, blank=True)
    input = models.JSONField(default=dict)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)

    current_step = models.CharField(max_length=100, blank=True)
    seq = models.PositiveIntegerField(default=1, help_text="Sequence number of the next step.")
    attempt = models.PositiveSmallIntegerField(default=1)
    # Attempts of the current step before its last manual retry: a retried
    # step gets a fresh allowance while attempt numbers keep growing.
    attempts_before = models.PositiveSmallIntegerField(default=0)

    fence = models.PositiveBigIntegerField(default=0)
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    ring_at = models.DateTimeField(null=True, blank=True)

    outcome = models.CharField(max_length=80, blank=True)
    success = models.BooleanField(null=True)
    error = models.TextField(blank=True)
    stop_reason = models.CharField(
        max_length=40, blank=True, help_text="Why a stopped run stopped (budget)."
    )
    tainted = models.BooleanField(
        default=False,
        help_text="The run has read content from an untrusted source: its writes and egress "
        "need approval unless the policy trusts the destination.",
    )
    taint_reason = models.CharField(
        max_length=300, blank=True, help_text="Where the untrusted content came from first."
    )
    taint_signals = models.CharField(
        max_length=500,
        blank=True,
        help_text="Phrases in the untrusted content that look like an injection (for reviewers).",
    )
    role_version = models.ForeignKey(
        "policies.AgentRoleVersion", null=True, blank=True, on_delete=models.PROTECT
    )
    policy_version = models.ForeignKey(
        "policies.PolicyVersion", null=True, blank=True, on_delete=models.PROTECT
    )
    dead_lettered_at = models.DateTimeField(null=True, blank=True)
    # The failed attempt that dead-lettered the run, written with
    # `dead_lettered_at` (its step, its error type, and whether that error
    # was worth another attempt): the dead-letter queue groups and counts
    # the dead runs from these alone, in their covering partial index
    # (run_dead_letter_cover), never reaching into their step runs. The step
    # is `current_step` then; that column changes on every step, so an index
    # holding it would keep a step's update of its run from being HOT.
    dead_step = models.CharField(
        max_length=100,
        blank=True,
        default="",
        db_default="",
        help_text="The step whose failed attempt dead-lettered the run.",
    )
    dead_error_type = models.CharField(
        max_length=80,
        blank=True,
        default="",
        db_default="",
        help_text="Error type of the failed attempt that dead-lettered the run.",
    )
    dead_retryable = models.BooleanField(
        null=True,
        blank=True,
        help_text="Whether that attempt's error was worth another attempt (unset: not recorded).",
    )

    steps_executed = models.PositiveIntegerField(default=0)
    llm_calls = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    # Money is model spend plus vendor spend: `cost_usd` is their sum, what
    # budgets cap and dashboards count; `credits` holds the vendor credits
    # spent, per vendor ({"enrichco": 15}), which credit caps count.
    cost_usd = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="Model plus vendor spend."
    )
    model_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    vendor_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    credits = models.JSONField(
        default=dict, blank=True, help_text='Vendor credits spent, e.g. {"enrichco": 15}.'
    )
    # Machine time and time waiting for people, kept on the run where they
    # change (a step's checkpoint, a decision, a breach), so the dashboard
    # reads them with the rest of the run's figures.
    machine_ms = models.FloatField(
        default=0, db_default=0, help_text="Step attempts' durations added up: the machine's time."
    )
    decisions = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Approval requests decided (approved or rejected)."
    )
    wait_ms = models.FloatField(
        default=0,
        db_default=0,
        help_text="Time the decided requests waited for their decision, added up.",
    )
    breaches = models.PositiveIntegerField(
        default=0, db_default=0, help_text="Approval requests that went past their SLA."
    )

    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    # The wall-time budget counts from here: the first claim, or the first
    # claim after a retry (time spent dead-lettered does not count).
    wall_from = models.DateTimeField(null=True, blank=True, editable=False)
    # The last LEASE_HISTORY claims, oldest first: {"worker", "fence", "at"}.
    # Written by the claim's own statement; for forensics (who held the run
    # when, including workers that died before committing a step).
    lease_history = models.JSONField(default=list, blank=True, editable=False)
    # Claims in a row that took the run from a holder lost in the same step
    # (`takeover_seq`): a worker killed, out of memory, or stopped by the
    # queue's timeout. Written by the claim; at BOSUN_MAX_TAKEOVERS the step
    # is dead-lettered instead of executed again.
    takeovers = models.IntegerField(default=0, db_default=0, editable=False)
    takeover_seq = models.IntegerField(default=0, db_default=0, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)
    trace_id = models.CharField(max_length=32, blank=True)
    replay_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="replays",
        db_index=False,  # a partial index below: most runs have none
        help_text="LLM steps of this run answer from that run's recorded outputs.",
    )
    mode = models.CharField(
        max_length=12,
        choices=RunMode.choices,
        default=RunMode.LIVE,
        db_default=RunMode.LIVE,
        help_text="Live, or a sandbox (experiment, shadow, dry run) that has no effect outside.",
    )
    tools_from = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # a partial index below: most runs have none
        help_text="A sandbox run's reads are answered from this recorded run's calls.",
    )
    shadow_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="shadows",
        db_index=False,  # a partial index below: most runs have none
        help_text="The live run this shadow run ran beside, on the same input.",
    )

    class Meta:
        ordering = ["-id"]
        permissions = [
            ("retry_run", "Can retry a run from its failed step"),
            ("cancel_run", "Can cancel a run"),
            ("view_personal_data", "Can see step records without PII redaction"),
        ]
        constraints = [
            # Starting twice with one key returns the first run: the database
            # refuses the second row, no check-then-insert race.
            models.UniqueConstraint(
                fields=["workflow", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="run_idempotency_key_unique",
            ),
        ]
        indexes = [
            # The sweeper's scan: only rows with a pending timer.
            models.Index(
                fields=["ring_at"], name="run_ring_at", condition=Q(ring_at__isnull=False)
            ),
            models.Index(fields=["status", "-created_at"], name="run_status_created"),
            models.Index(fields=["workflow", "-created_at"], name="run_workflow_created"),
            # The runs that name another run, and only those: an ordinary
            # run's insert, claim and end write none of them (runs 0032).
            models.Index(
                fields=["replay_of"], name="run_replay_of", condition=Q(replay_of__isnull=False)
            ),
            models.Index(
                fields=["tools_from"], name="run_tools_from", condition=Q(tools_from__isnull=False)
            ),
            models.Index(
                fields=["shadow_of"], name="run_shadow_of", condition=Q(shadow_of__isnull=False)
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def sandboxed(self) -> bool:
        return self.mode != RunMode.LIVE


class RunInput(models.Model):
    """A copy of a run's input that the search reads (runs.search).

    The database writes it, not the application: a trigger on the run
    table adds the row with every inserted run, whatever inserts it (the
    engine, a bulk load, COPY), and keeps it equal when an input is changed
    (migration runs.0029). The search's indexes (PostgreSQL: GIN on the
    values and on the domains they name) are on this table so that they
    stay off the run row, which every claim and every run's end rewrites:
    an index on the run table is written at each such update, and these
    were its two most expensive ones."""

    run = models.OneToOneField(
        Run, on_delete=models.CASCADE, primary_key=True, related_name="search_input"
    )
    input = models.JSONField(default=dict)

    def __str__(self) -> str:
        return f"input of run {self.pk}"


class StepRunStatus(models.TextChoices):
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class StepRun(models.Model):
    """The record of one attempt of one step of a run.

    `seq` is the step's position in the run's path (1, 2, …); retries of the
    same step share a seq and differ in `attempt`. At most one attempt per
    seq succeeds (a partial unique constraint): a second worker cannot
    record a second success even if fencing were bypassed.
    """

    # No index of its own: steprun_attempt_unique (run, seq, attempt) serves
    # every lookup by run, and each step's insert writes one index less
    # (migration runs 0031).
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="step_runs", db_index=False)
    seq = models.PositiveIntegerField()
    attempt = models.PositiveSmallIntegerField(default=1)
    step_key = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=StepKind.choices)
    status = models.CharField(max_length=12, choices=StepRunStatus.choices)
    edge = models.CharField(max_length=60, blank=True)
    input = models.JSONField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_type = models.CharField(max_length=80, blank=True)
    retry_delay_s = models.FloatField(null=True, blank=True)
    # A failed attempt: was its error worth another attempt (a timeout, a
    # 5xx) or not (invalid arguments, a refusal, a bug)? Unset otherwise.
    retryable = models.BooleanField(null=True, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    duration_ms = models.FloatField(default=0)
    provider = models.CharField(max_length=40, blank=True)
    model_requested = models.CharField(max_length=100, blank=True)
    model_answered = models.CharField(max_length=100, blank=True)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    cache_read_tokens = models.PositiveIntegerField(default=0)
    cache_write_tokens = models.PositiveIntegerField(default=0)
    # What the step paid: model_usd + vendor_usd (the tool price table,
    # settings.BOSUN_TOOL_PRICES); `credits` of `vendor`.
    cost_usd = models.DecimalField(
        max_digits=12, decimal_places=6, default=0, help_text="Model plus vendor spend."
    )
    model_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    vendor = models.CharField(max_length=60, blank=True)
    credits = models.PositiveIntegerField(default=0)
    vendor_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    cache_hit = models.BooleanField(default=False)
    # What an answer from the step cache or the ledger did not pay again:
    # all of it in USD (model and vendor), the vendor's part and its credits.
    cost_saved_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    vendor_saved_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    credits_saved = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=120, blank=True)
    flags = models.JSONField(
        default=list, blank=True, help_text="Names of the output checks that held."
    )

    class Meta:
        ordering = ["run", "seq", "attempt"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "seq", "attempt"], name="steprun_attempt_unique"
            ),
            models.UniqueConstraint(
                fields=["run", "seq"],
                condition=Q(status="succeeded"),
                name="steprun_one_success_per_seq",
            ),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} #{self.seq} {self.step_key} ({self.status})"


class StepCacheEntry(models.Model):
    """A step result reusable for the same input until it expires.

    `key` hashes the workflow, the step key, the step's configuration (its
    prompt and output schema included), the model and the rendered input.
    The unique key is also the fill lock: the worker that inserts a pending
    entry computes the value, concurrent misses wait for it, so one input
    costs one model call and never two rows.
    """

    key = models.CharField(max_length=64, unique=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="cache_entries")
    step_key = models.CharField(max_length=100)
    filled = models.BooleanField(default=False)
    filler = models.CharField(max_length=64, blank=True)
    filler_until = models.DateTimeField(null=True, blank=True)
    output = models.JSONField(null=True, blank=True)
    edge = models.CharField(max_length=60, blank=True)
    model = models.CharField(max_length=100, blank=True)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    source_run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "step cache entries"
        indexes = [models.Index(fields=["workflow", "step_key"], name="cache_workflow_step")]

    def __str__(self) -> str:
        return f"{self.workflow_id}:{self.step_key} {self.key[:10]}"


class ToolCallStatus(models.TextChoices):
    STARTED = "started", "Started"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    UNKNOWN = "unknown", "Outcome unknown"
    RECONCILED = "reconciled", "Reconciled by a person"
    # A sandbox run's call that was not made: the arguments and what it
    # would have cost are kept, the result is the tool's stub.
    STUBBED = "stubbed", "Stubbed (sandbox)"
    # A sandbox run's read answered from a recorded run's call: no vendor.
    REPLAYED = "replayed", "Answered from a recording (sandbox)"


class ToolCallRecord(models.Model):
    """The ledger of tool calls: one row per call, keyed by run and seq.

    A write is recorded as `started` before it leaves and `succeeded` or
    `failed` after. A retry finds the row: a success is returned as
    recorded, never repeated; a row still `started` means the worker died
    mid-call, so the outcome is unknown and is reconciled (the tool's own
    idempotency, or a person) instead of blindly calling again.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tool_calls_made")
    seq = models.PositiveIntegerField()
    step_key = models.CharField(max_length=100)
    tool = models.CharField(max_length=100)
    side_effect = models.CharField(max_length=20)
    idempotency_key = models.CharField(max_length=200, unique=True)
    args = models.JSONField()
    args_hash = models.CharField(max_length=64)
    status = models.CharField(max_length=12, choices=ToolCallStatus.choices)
    calls = models.PositiveSmallIntegerField(default=0, help_text="Times the tool was invoked.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    reconciled_by = models.CharField(max_length=150, blank=True)
    reconcile_note = models.TextField(blank=True)
    # A stubbed or replayed call (sandbox): what it would have cost live.
    # (Database defaults: the ledger's rows are inserted by raw statements.)
    would_cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0, db_default=0)
    would_credits = models.PositiveIntegerField(default=0, db_default=0)
    would_vendor = models.CharField(max_length=60, blank=True, default="", db_default="")

    class Meta:
        ordering = ["-id"]
        permissions = [("reconcile_toolcall", "Can settle a tool call whose outcome is unknown")]
        indexes = [models.Index(fields=["run", "seq"], name="toolcall_run_seq")]

    def __str__(self) -> str:
        return f"{self.tool} for run {self.run_id} #{self.seq} ({self.status})"


class CrmRecord(models.Model):
    """Records of the built-in CRM-style store that the `crm.upsert` tool writes."""

    object_type = models.CharField(max_length=60)
    external_id = models.CharField(max_length=200)
    data = models.JSONField(default=dict)
    last_idempotency_key = models.CharField(max_length=200, blank=True)
    writes = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["object_type", "external_id"]
        constraints = [
            models.UniqueConstraint(fields=["object_type", "external_id"], name="crm_record_unique")
        ]

    def __str__(self) -> str:
        return f"{self.object_type}:{self.external_id}"


class Score(models.Model):
    """What a `score` step decided: the rubric version, each criterion's
    score, the weighted total and the route. Kept apart from the step's
    output so a new rubric version can be previewed against recent subjects
    (re-weighted from the recorded criterion scores) without reading step
    records. One row per (run, seq): a step executed again after a crash
    finds its row."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="scores")
    seq = models.PositiveIntegerField()
    step_key = models.CharField(max_length=100)
    rubric_version = models.ForeignKey(
        "policies.RubricVersion", on_delete=models.PROTECT, related_name="scores"
    )
    subject = models.CharField(max_length=300, blank=True)
    criteria = models.JSONField(help_text='{"fit": 80, "intent": 55, …}')
    total = models.FloatField()
    route = models.CharField(max_length=60)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["run", "seq"], name="score_one_per_run_step"),
        ]
        indexes = [
            models.Index(fields=["rubric_version", "-created_at"], name="score_rubric_recent"),
        ]

    def __str__(self) -> str:
        return f"{self.subject or self.run_id}: {self.total:.0f} → {self.route}"


class ToolAnswer(models.Model):
    """An answer a paid read bought (a company's enrichment), reused by
    every run of every workflow until it expires, keyed by what it
    describes (`company:acme.com`), not by who asked.

    The unique (tool, key) row is also the purchase lock: the call that
    claims it buys the answer; others wait for the fill. `generation`
    names one purchase: the vendor sees a request key made of it, so a
    buyer that died mid-call and whoever takes over its claim ask under the
    same key and the vendor charges once. A new generation starts only when
    a filled answer has expired.
    """

    tool = models.CharField(max_length=100)
    key = models.CharField(max_length=300)
    generation = models.PositiveIntegerField(default=1)
    filled = models.BooleanField(default=False)
    filler = models.CharField(max_length=200, blank=True)
    filler_until = models.DateTimeField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    bought_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    source_run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.SET_NULL)
    hits = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tool", "key"], name="tool_answer_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.tool} {self.key} (g{self.generation})"


# --- the dashboard's daily roll-up (runs.rollup builds it, runs.metrics reads it) ---


class RollupWatermark(models.Model):
    """The one row saying up to when the roll-up has counted runs: every
    rolled day (not stale) holds exactly its runs that finished before
    `finished_before`. The roll-up job locks this row, so two jobs take
    turns."""

    finished_before = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"runs finished before {self.finished_before}"


class RollupDay(models.Model):
    """A UTC day of runs (by `created_at`) rolled up into `DailyRollup` rows.

    `stale`: a run of the day stopped being terminal (a retry) after the day
    was rolled up; the dashboard reads the day from the runs until the job
    rolls it up again. A retry marks the day in its own transaction, by an
    upsert that waits for a roll-up holding the row (see runs.rollup)."""

    day = models.DateField(unique=True)
    stale = models.BooleanField(default=False)
    rolled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-day"]

    def __str__(self) -> str:
        return f"{self.day}{' (stale)' if self.stale else ''}"

    @staticmethod
    def mark_stale(day: date) -> None:
        """Mark the day stale (creating its row if it has none), so that no
        roll-up of it counts a run that is no longer terminal. An upsert,
        not a check-then-insert: it waits for a roll-up of the day in
        progress, and a roll-up started later waits for it."""
        RollupDay.objects.bulk_create(
            [RollupDay(day=day, stale=True)],
            update_conflicts=True,
            unique_fields=["day"],
            update_fields=["stale"],
        )

    @staticmethod
    def mark_active_again(run_id: int, created_at: datetime) -> None:
        """A terminal run is active again (a retry): mark stale its day, and
        the days whose dedup hits saved what it paid as it stood then (it
        may pay more now). Call in the transaction that makes it active."""
        RollupDay.mark_stale(created_at.astimezone(UTC).date())
        settled = DailyRollupDedup.objects.filter(first_run_id=run_id, settled=True)
        for day in settled.values_list("day", flat=True).distinct():
            RollupDay.mark_stale(day)


class DailyRollup(models.Model):
    """The figures of one workflow version's runs of one UTC day that had
    finished before the watermark when the day was rolled up, and of those
    that were waiting then (each kept in DailyRollupWaiting). Every figure
    of runs.metrics, in a form that adds up across days: sums and counts,
    per-vendor credit maps, and a latency histogram (runs.metrics.BUCKET)."""

    day = models.DateField()
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    runs = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    successes = models.PositiveIntegerField(default=0)
    escalated = models.PositiveIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    vendor_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    calls = models.PositiveBigIntegerField(default=0, help_text="Model plus tool calls.")
    latency = models.JSONField(default=dict, help_text="Finished runs per latency bucket.")
    credits = models.JSONField(default=dict)
    cache_hits = models.PositiveIntegerField(default=0)
    cache_saved_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    cache_saved_credits = models.JSONField(default=dict)
    dedup_hits = models.PositiveIntegerField(default=0)
    # What the duplicates recorded as saved; the hits that recorded nothing
    # save what their first run paid, read when the dashboard asks
    # (DailyRollupDedup), since that run may still be paying.
    dedup_saved_usd = models.DecimalField(max_digits=16, decimal_places=6, default=0)
    dedup_saved_credits = models.JSONField(default=dict)
    # Stopped and cancelled runs; machine time and time waiting for people
    # (the sums of the runs' own figures, see Run.machine_ms).
    stopped = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    machine_ms = models.FloatField(default=0)
    decisions = models.PositiveIntegerField(default=0)
    wait_ms = models.FloatField(default=0)
    breached = models.PositiveIntegerField(default=0)
    # Runs of the day waiting on a person when it was rolled up.
    pending = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["day", "version"], name="daily_rollup_unique")
        ]

    def __str__(self) -> str:
        return f"{self.day} version {self.version_id}: {self.runs} runs"


class DailyRollupDedup(models.Model):
    """Dedup hits of a rolled-up day that save what their first run paid:
    how many take its dollars (`usd_hits`) and its credits (`credit_hits`).

    `settled`: the first run had finished when the day was rolled up, so
    what it paid is in the day's `dedup_saved_*`; the row stays so that a
    retry of that run finds the days to mark stale. Otherwise the first run
    may still be paying, and the dashboard reads it when asked."""

    day = models.DateField()
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    # The retry of a first run looks its references up here.
    first_run_id = models.BigIntegerField(null=True, db_index=True)
    usd_hits = models.PositiveIntegerField(default=0)
    credit_hits = models.PositiveIntegerField(default=0)
    settled = models.BooleanField(default=False)

    class Meta:
        indexes = [models.Index(fields=["day"], name="daily_rollup_dedup_day")]

    def __str__(self) -> str:
        return f"{self.day} version {self.version_id}: {self.usd_hits} of run {self.first_run_id}"


class DailyRollupWaiting(models.Model):
    """A live run of a rolled-up day that was waiting (on a person, a retry,
    a breaker, a kill switch) when the day was rolled up: its figures then,
    counted in the day's DailyRollup rows, and what tells whether it has
    changed since.

    A waiting run changes only when a worker claims it (which bumps
    `Run.fence`), when it stops waiting or finishes (`status`,
    `wait_reason`, `finished_at`), or when a decision or a breach of one of
    its requests is counted on it (`decisions`, `breaches`). While all five
    are as recorded here its figures are these, and the dashboard takes them
    from the roll-up; it compares them with the run's entry in the narrow
    index of unfinished runs (run_unfinished_cover), never reading the wide
    run row. A run that has changed is taken out of the roll-up's figures
    (this row's) and read from the runs table as it stands, as a run
    waiting since the roll-up is."""

    day = models.DateField()
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="+")
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    version = models.ForeignKey(WorkflowVersion, on_delete=models.CASCADE, related_name="+")
    # The run as it stood: unchanged while these match the run.
    wait_reason = models.CharField(max_length=40, blank=True)
    fence = models.PositiveBigIntegerField(default=0)
    decisions = models.PositiveIntegerField(default=0)
    breaches = models.PositiveIntegerField(default=0)
    # Its figures then (see runs.metrics).
    success = models.BooleanField(null=True)
    escalated = models.BooleanField(default=False)
    cost_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    vendor_usd = models.DecimalField(max_digits=12, decimal_places=6, default=0)
    calls = models.PositiveBigIntegerField(default=0)
    machine_ms = models.FloatField(default=0)
    wait_ms = models.FloatField(default=0)

    class Meta:
        indexes = [models.Index(fields=["day"], name="daily_rollup_waiting_day")]

    def __str__(self) -> str:
        return f"{self.day}: run {self.run_id} waiting ({self.wait_reason})"
