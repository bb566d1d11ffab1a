"""Agent roles, policies, word lists, limits and kill switches.

Roles and policies are edited in place and versioned on every save: each
save writes an immutable `…Version` row holding a snapshot, and a run binds
the versions current when it started (see `policies.services`). Limits and
kill switches are live: they apply to every run the moment they commit.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models


class FrozenVersion(models.Model):
    """A saved version is a record of what runs were bound to: never rewritten."""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError(f"a {type(self).__name__} is immutable")
        super().save(*args, **kwargs)


class AgentRole(models.Model):
    """The identity a run acts as. Least privilege: only the listed tools."""

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    allowed_tools = models.JSONField(
        default=list, blank=True, help_text='Tool names this role may call, e.g. ["crm.upsert"].'
    )
    version = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> dict:
        return {"name": self.name, "allowed_tools": sorted(self.allowed_tools)}


class AgentRoleVersion(FrozenVersion):
    role = models.ForeignKey(AgentRole, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["role", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["role", "number"], name="role_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.role.name} v{self.number}"


class AutonomyMode(models.TextChoices):
    AUTO = "auto", "Auto"
    APPROVE = "approve", "Needs approval"
    BLOCK = "block", "Blocked"


class Policy(models.Model):
    """Budgets per run, autonomy rules per tool, destination allowlists and
    knowledge guards.

    `max_cost_usd` caps model plus vendor spend; `max_credits` caps each
    vendor's credits.

    Autonomy rules are a list, first match wins, e.g.
    `[{"tool": "refund.create_request", "mode": "approve",
       "when": {"path": "args.amount", "op": ">", "value": 100}}]`;
    a tool no rule names runs on `auto`, except in a run that has read
    untrusted content: there every write or egress call needs approval unless
    an `auto` rule lists the call's destinations in `trusted_destinations`.
    `destinations` and `guards`: see `policies.services`.
    """

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    max_steps = models.PositiveIntegerField(default=50)
    max_llm_calls = models.PositiveIntegerField(default=20)
    max_tool_calls = models.PositiveIntegerField(default=50)
    max_cost_usd = models.DecimalField(
        max_digits=10,
        decimal_places=4,
        default=Decimal("1.00"),
        help_text="Model plus vendor spend a run may reach, in USD.",
    )
    max_wall_s = models.PositiveIntegerField(
        default=86400,
        help_text="Seconds from the run's start or its last retry, waits for people included.",
    )
    max_credits = models.JSONField(
        default=dict,
        blank=True,
        help_text='Vendor credits a run may spend, per vendor: {"enrichco": 50}. '
        "A vendor not listed is capped only by max_cost_usd.",
    )
    autonomy = models.JSONField(default=list, blank=True)
    destinations = models.JSONField(
        default=dict,
        blank=True,
        help_text="Per tool, where its arguments may send data: "
        '{"email.send": ["@acme.com", "ops@partner.io"], "http.post_json": ["api.acme.com"]}. '
        "A tool that sends to an address or URL its arguments name may send only to "
        'destinations listed here; "*" allows any.',
    )
    guards = models.JSONField(
        default=list,
        blank=True,
        help_text="Knowledge events that block calls, checked at the moment of each call: "
        '[{"event_type": "outreach.paused", "entity_type": "account", '
        '"tools": ["outreach.send", "email.send"]}].',
    )
    redact_prompts = models.BooleanField(
        default=True, help_text="Redact the workflow's sensitive fields in prompts."
    )
    version = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> dict:
        return {
            "name": self.name,
            "max_steps": self.max_steps,
            "max_llm_calls": self.max_llm_calls,
            "max_tool_calls": self.max_tool_calls,
            "max_cost_usd": str(self.max_cost_usd),
            "max_wall_s": self.max_wall_s,
            "max_credits": self.max_credits,
            "autonomy": self.autonomy,
            "destinations": self.destinations,
            "guards": self.guards,
            "redact_prompts": self.redact_prompts,
        }


class PolicyVersion(FrozenVersion):
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="policy_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.policy.name} v{self.number}"


class WordList(models.Model):
    """A list managers keep (competitor names, banned phrases) for output checks."""

    name = models.SlugField(max_length=100, unique=True)
    words = models.JSONField(default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Limit(models.Model):
    """A concurrency cap and/or rate limit for a key (a vendor, a tool).

    Held in the database so it holds across every worker and machine:
    `LimitSlot` rows are the N seats (claimed with SKIP LOCKED), and
    `RateGrant` rows are a sliding log of the calls let through.
    """

    key = models.CharField(max_length=100, unique=True, help_text='e.g. "vendor:enrichco"')
    max_in_flight = models.PositiveIntegerField(null=True, blank=True)
    rate = models.PositiveIntegerField(null=True, blank=True, help_text="Calls per period.")
    period_s = models.FloatField(null=True, blank=True, help_text="The period, in seconds.")
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class LimitSlot(models.Model):
    key = models.CharField(max_length=100)
    slot = models.PositiveIntegerField()
    holder = models.CharField(max_length=120, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["key", "slot"], name="limit_slot_unique")]


class RateGrant(models.Model):
    key = models.CharField(max_length=100)
    granted_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["key", "granted_at"], name="rategrant_key_time")]


class BreakerState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Half-open"


class Breaker(models.Model):
    """A circuit breaker for one provider model (`llm:anthropic:<model>`) or
    one tool limit key (`vendor:enrichco`), held in the database so every
    worker sees the same state. The engine (runs.engine.breakers) moves it;
    managers edit its thresholds in admin (empty: the setting's default).

    closed: calls go through; `failures` counts consecutive outage failures
    since `first_failure_at`. open: calls wait until `open_until`. half-open:
    one call (`probe_holder`, until `probe_expires_at`) tries the key; its
    success closes the breaker, its failure opens it again for longer.
    """

    key = models.CharField(
        max_length=100, unique=True, help_text='e.g. "vendor:enrichco", "llm:anthropic:<model>"'
    )
    enabled = models.BooleanField(default=True, help_text="Off: calls are never held.")
    failures_to_open = models.PositiveIntegerField(
        null=True, blank=True, help_text="Consecutive outage failures that open it."
    )
    window_s = models.FloatField(
        null=True, blank=True, help_text="Those failures count within this many seconds."
    )
    cooldown_s = models.FloatField(
        null=True, blank=True, help_text="How long it stays open before a probe, in seconds."
    )
    max_cooldown_s = models.FloatField(
        null=True, blank=True, help_text="The cool-down doubles at each failed probe up to this."
    )
    probe_timeout_s = models.FloatField(
        null=True, blank=True, help_text="A probe that has not answered by then is given up."
    )
    # The state, written only by the engine.
    state = models.CharField(
        max_length=10, choices=BreakerState.choices, default=BreakerState.CLOSED, editable=False
    )
    since = models.DateTimeField(null=True, blank=True, editable=False)
    failures = models.PositiveIntegerField(default=0, editable=False)
    first_failure_at = models.DateTimeField(null=True, blank=True, editable=False)
    open_until = models.DateTimeField(null=True, blank=True, editable=False)
    trips = models.PositiveIntegerField(default=0, editable=False)  # opens since it closed
    probe_holder = models.CharField(max_length=160, blank=True, editable=False)
    probe_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A waiting run was made due to probe; the sweeper waits this long for it.
    nominated_until = models.DateTimeField(null=True, blank=True, editable=False)
    last_errors = models.JSONField(default=list, blank=True, editable=False)  # newest first
    opened_count = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return f"{self.key} ({self.state})"


class SwitchScope(models.TextChoices):
    GLOBAL = "global", "Everything"
    WORKFLOW = "workflow", "A workflow"
    TOOL = "tool", "A tool"


class KillSwitch(models.Model):
    """While engaged, no new step (global, workflow) or call (tool) starts."""

    scope = models.CharField(max_length=10, choices=SwitchScope.choices)
    target = models.CharField(
        max_length=100, blank=True, help_text="Workflow slug or tool name; empty for global."
    )
    engaged = models.BooleanField(default=False)
    reason = models.TextField(blank=True)
    changed_by = models.CharField(max_length=150, blank=True)
    changed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["scope", "target"]
        constraints = [
            models.UniqueConstraint(fields=["scope", "target"], name="kill_switch_unique")
        ]

    def __str__(self) -> str:
        where = self.target or "everything"
        return f"{where} ({'engaged' if self.engaged else 'off'})"

    @property
    def stops(self) -> str:
        """What it stops, in words: "everything", "workflow lead-intake"."""
        return "everything" if self.scope == SwitchScope.GLOBAL else f"{self.scope} {self.target}"


class KillSwitchChange(models.Model):
    switch = models.ForeignKey(KillSwitch, on_delete=models.CASCADE, related_name="changes")
    engaged = models.BooleanField()
    reason = models.TextField()
    changed_by = models.CharField(max_length=150)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class Rubric(models.Model):
    """How a `score` step scores a subject, and which route each score takes.

    `criteria`: `[{"key": "fit", "description": "…", "weight": 40}, …]`;
    each criterion is scored 0–100 and the total is the weighted mean.
    `routes`: thresholds, highest first, e.g.
    `[{"min": 70, "route": "outreach"}, {"min": 40, "route": "nurture"},
      {"min": 0, "route": "archive"}]`; the first `min` the total reaches
    names the route. Edited by managers in admin and versioned on every save.
    """

    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    criteria = models.JSONField(default=list)
    routes = models.JSONField(default=list)
    version = models.PositiveIntegerField(default=0, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def snapshot(self) -> dict:
        return {"name": self.name, "criteria": self.criteria, "routes": self.routes}


class RubricVersion(FrozenVersion):
    rubric = models.ForeignKey(Rubric, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    snapshot = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["rubric", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["rubric", "number"], name="rubric_version_unique")
        ]

    def __str__(self) -> str:
        return f"{self.rubric.name} v{self.number}"


class ApiScope(models.TextChoices):
    RUNS_READ = "runs:read", "Read runs"
    RUNS_WRITE = "runs:write", "Start, cancel and retry runs"
    APPROVALS_WRITE = "approvals:write", "Decide approvals"
    KNOWLEDGE_WRITE = "knowledge:write", "Write knowledge"
    WEBHOOKS = "webhooks", "Manage webhook sources"
    ROLLOUTS_WRITE = "rollouts:write", "Start, promote and roll back canaries"
    LANES_WRITE = "lanes:write", "Accept or dismiss autonomy lane proposals"


class ApiKey(models.Model):
    """A key for the JSON API. The secret is shown once, when created; only
    its SHA-256 is stored (keys are long random strings, so a fast hash is
    enough), with the first characters kept as a visible prefix.

    `workflows` limits what the key reaches: a key bound to some workflows
    sees and starts runs of those only; none bound means all.
    """

    # Set on a key that authenticated (policies.apikeys.authenticate).
    bound_workflow_ids: frozenset[int]

    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    workflows = models.ManyToManyField("runs.Workflow", blank=True, related_name="api_keys")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class AuditEntry(models.Model):
    """One human or policy decision, config change, retry, cancellation or
    API key event. Append-only: each row carries the hash of the row before
    it, so a changed or removed row breaks the chain from there on; on
    PostgreSQL triggers refuse UPDATE and DELETE outright."""

    at = models.DateTimeField()
    actor = models.CharField(max_length=150, help_text='e.g. "user:ana", "key:bk_3f9a", "policy"')
    action = models.CharField(max_length=80, help_text='e.g. "approval.approved"')
    target_type = models.CharField(max_length=60, blank=True)
    target_id = models.CharField(max_length=100, blank=True)
    data = models.JSONField(default=dict, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "audit entries"
        indexes = [models.Index(fields=["target_type", "target_id"], name="audit_target")]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor}"


class AuditCheckpoint(models.Model):
    """A signed statement of the audit chain's head at one moment: its last
    entry's id and hash and the number of entries up to it, under an HMAC
    with a key the database does not hold. Kept here and appended to a file
    outside the database (`policies.audit.checkpoint_take`), so a deleted
    tail or a re-hashed chain no longer matches what was vouched for."""

    at = models.DateTimeField()
    last_id = models.BigIntegerField(help_text="id of the newest audit entry (0: none yet)")
    last_hash = models.CharField(max_length=64)
    count = models.BigIntegerField(help_text="audit entries up to and including last_id")
    key_id = models.CharField(max_length=16, help_text="fingerprint of the signing key")
    mac = models.CharField(max_length=64, help_text="HMAC-SHA256 of the fields above")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"checkpoint #{self.pk} at entry {self.last_id}"


class AnswerReuse(models.Model):
    """How long an answer a paid read bought is reused, by every workflow
    (e.g. a company's enrichment for a quarter). Without a row, the tool's
    own default applies; 0 buys every time."""

    tool = models.CharField(max_length=100, unique=True)
    ttl_s = models.PositiveIntegerField(
        help_text="Seconds an answer is reused after it was bought (7776000 = 90 days)."
    )
    note = models.TextField(blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["tool"]
        verbose_name = "answer reuse"
        verbose_name_plural = "answer reuse"

    def __str__(self) -> str:
        return f"{self.tool}: {self.ttl_s}s"


class NotificationKind(models.TextChoices):
    SLA_ESCALATION = "sla_escalation", "SLA escalation (an approval request past its due time)"
    DEAD_LETTER = "dead_letter", "Dead letter (a run failed for good)"
    BREAKER_ALERT = "breaker_alert", "Breaker alert (a circuit breaker open too long)"


class NotificationRoute(models.Model):
    """Who is told of an event of one kind: email addresses and/or a chat
    webhook (Slack-compatible JSON). Every enabled route of the event's kind
    is told once per event (policies.notifications)."""

    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20, choices=NotificationKind.choices)
    emails = models.TextField(
        blank=True, help_text="Email addresses, one per line or separated by commas."
    )
    webhook_url = models.URLField(
        blank=True,
        max_length=500,
        help_text='A webhook that takes Slack-style JSON ({"text": …, "blocks": […]}).',
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"

    @property
    def addresses(self) -> list[str]:
        parts = self.emails.replace(",", "\n").splitlines()
        return sorted({part.strip() for part in parts if part.strip()})


class NotificationDelivery(models.Model):
    """One event told to one route. The row is the claim: the unique
    (route, event_key) lets exactly one of concurrent sweeps, a task
    delivered twice or a retried step insert it, and only that one sends."""

    route = models.ForeignKey(
        NotificationRoute, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "notification deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["route", "event_key"], name="notification_once_per_event"
            )
        ]

    def __str__(self) -> str:
        return f"{self.event_key} to {self.route_id}"


class LaneDirection(models.TextChoices):
    TO_AUTO = "to_auto", "Needs approval → auto"
    TO_APPROVE = "to_approve", "Auto → needs approval"


class LaneProposalStatus(models.TextChoices):
    OPEN = "open", "Open"
    ACCEPTED = "accepted", "Accepted"
    DISMISSED = "dismissed", "Dismissed"


class LaneProposal(models.Model):
    """A proposal, made from evidence, to move one tool of one policy to
    another autonomy lane (policies.lanes). A manager accepts it (the policy
    is saved as a new version with the rule changed) or dismisses it; either
    way the evidence it counted is spent, and a new proposal needs new
    evidence. At most one open proposal per policy, tool and direction (a
    partial unique constraint), so two refreshes cannot propose twice."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="lane_proposals")
    tool = models.CharField(max_length=100)
    direction = models.CharField(max_length=12, choices=LaneDirection.choices)
    status = models.CharField(
        max_length=10, choices=LaneProposalStatus.choices, default=LaneProposalStatus.OPEN
    )
    based_on = models.ForeignKey(
        PolicyVersion,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The policy version whose rule the evidence was gathered under.",
    )
    evidence = models.JSONField(default=dict)
    # The newest approval request (to_auto) or sample item (to_approve)
    # counted: evidence up to it is spent once the proposal is decided.
    evidence_upto = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=150, blank=True)
    decision_note = models.TextField(blank=True)
    new_version = models.ForeignKey(
        PolicyVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        permissions = [("decide_laneproposal", "Can accept or dismiss an autonomy lane proposal")]
        constraints = [
            models.UniqueConstraint(
                fields=["policy", "tool", "direction"],
                condition=models.Q(status="open"),
                name="lane_one_open_proposal",
            )
        ]

    def __str__(self) -> str:
        return f"{self.policy_id} {self.tool}: {self.get_direction_display()} ({self.status})"
