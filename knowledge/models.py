"""The knowledge graph: entities, typed events with validity windows and
provenance, relations between entities, and dedup records.

Events are append-only: a correction is a new event that supersedes the old
one, never an edit. Writes go through `knowledge.services`; reads through
`knowledge.memory`.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q

DOTTED_NAME = RegexValidator(
    r"^[a-z0-9_]+(\.[a-z0-9_]+)+$",
    "Use a dotted lower-case name such as outreach.paused.",
)


class EventType(models.Model):
    """A kind of event, e.g. `outreach.paused`, with the schema of its payload.

    With `sets_facts`, the payload's keys are facts about the entity while
    the event is active (see `knowledge.memory.current_facts`).
    """

    name = models.CharField(max_length=100, unique=True, validators=[DOTTED_NAME])
    description = models.TextField(blank=True)
    payload_schema = models.JSONField(
        default=dict,
        blank=True,
        help_text='JSON Schema of the payload, e.g. {"type": "object", "required": ["until"], '
        '"properties": {"until": {"type": "string", "format": "date"}}}. Empty: any object.',
    )
    sets_facts = models.BooleanField(
        default=False, help_text="The payload's keys are facts about the entity while active."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Entity(models.Model):
    """Something the workflows act on: an account, a lead, a person."""

    type = models.SlugField(max_length=60, help_text="e.g. account, lead, person")
    key = models.CharField(max_length=300, help_text="Stable identifier within the type.")
    name = models.CharField(max_length=300, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["type", "key"]
        verbose_name_plural = "entities"
        constraints = [
            # One entity per (type, key): concurrent writers that both create
            # "account acme" get one row (get_or_create falls back on it).
            models.UniqueConstraint(fields=["type", "key"], name="entity_key_unique_per_type")
        ]

    def __str__(self) -> str:
        return f"{self.type}:{self.key}"

    def as_dict(self) -> dict:
        return {
            "id": self.pk,
            "type": self.type,
            "key": self.key,
            "name": self.name,
            "attributes": self.attributes,
        }


class EntityAlias(models.Model):
    """Another key an entity is known by: `bareco` (a name) or a second
    domain for the account `bareco.com`. Lookups by key resolve aliases
    first, so reading or writing `account:bareco` means `account:bareco.com`.

    `type` repeats the entity's type so that an alias key is unique per
    type in the database. An entity still filed under an alias key (written
    before the alias existed) is read as part of the entity it names.
    """

    type = models.SlugField(max_length=60)
    key = models.CharField(max_length=300, help_text="Normalised like the type's keys.")
    entity = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="aliases")
    actor_label = models.CharField(max_length=150, blank=True, help_text="Who added it.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["type", "key"]
        verbose_name_plural = "entity aliases"
        constraints = [
            # One meaning per alias: two writers naming `bareco` for two
            # accounts race on this index and one of them is refused.
            models.UniqueConstraint(fields=["type", "key"], name="alias_key_unique_per_type")
        ]

    def __str__(self) -> str:
        return f"{self.type}:{self.key}"


class Provenance(models.Model):
    """Who wrote a record: a run's step, or a person / API key with a reason."""

    source_run = models.ForeignKey(
        "runs.Run", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_seq = models.PositiveIntegerField(null=True, blank=True)
    source_step_key = models.CharField(max_length=100, blank=True)
    actor_label = models.CharField(
        max_length=150, blank=True, help_text="The user or API key label that wrote it."
    )
    reason = models.TextField(blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        abstract = True


class Event(Provenance):
    """Something that happened to an entity, valid from `valid_from` until
    `valid_until` (open when null). Immutable once written.

    A correction is a new event with `supersedes` set; the one-to-one field
    makes the database refuse a second correction of the same event, so two
    concurrent corrections cannot both win.
    """

    type = models.ForeignKey(EventType, on_delete=models.PROTECT, related_name="events")
    entity = models.ForeignKey(Entity, on_delete=models.PROTECT, related_name="events")
    payload = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(null=True, blank=True)
    supersedes = models.OneToOneField(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="superseded_by",
        help_text="The event this one corrects.",
    )

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            # A step that is executed again after a crash (same run, same seq)
            # finds the event it wrote instead of writing a second one.
            models.UniqueConstraint(
                fields=["source_run", "source_seq"],
                condition=Q(source_run__isnull=False),
                name="event_one_per_run_step",
            ),
        ]
        indexes = [
            # active_events: one entity's events of one type by validity.
            models.Index(fields=["entity", "type", "valid_from"], name="event_entity_type_from"),
        ]

    def __str__(self) -> str:
        return f"{self.type.name} on {self.entity}"

    def save(self, *args, **kwargs) -> None:
        # An event is a record of what was known: never rewritten in place.
        if not self._state.adding:
            raise ValueError("an Event is immutable; supersede it with a new event")
        super().save(*args, **kwargs)


class Relation(Provenance):
    """A typed edge between two entities, e.g. `works_at` person -> account."""

    type = models.SlugField(max_length=60)
    source = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="relations_out")
    target = models.ForeignKey(Entity, on_delete=models.CASCADE, related_name="relations_in")
    attributes = models.JSONField(default=dict, blank=True)
    valid_from = models.DateTimeField(null=True, blank=True)
    valid_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["type", "source", "target"]
        constraints = [
            # One edge of a type between two entities; writers update it.
            models.UniqueConstraint(fields=["type", "source", "target"], name="relation_unique")
        ]

    def __str__(self) -> str:
        return f"{self.source} -{self.type}-> {self.target}"


class DedupRecord(models.Model):
    """A key a `dedup` step has seen in its scope, and the run that saw it first.

    It lives in the knowledge app because it is memory of what was seen
    (scopes span workflows: a lead is a lead whichever form it came from).
    The unique (scope, key) is the whole gate: the run whose INSERT lands
    proceeds, every other gets the `duplicate` edge. A record whose window
    has expired (`expires_at`), or whose run failed, is taken over by one
    conditional UPDATE. The `end` step the run reaches may release its
    records or set a window of their own (`services.settle_dedup`). A
    deleted run takes its records with it: there is no result left to reuse.
    """

    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255, help_text="Longer keys are stored as sha256:<hex>.")
    run = models.ForeignKey("runs.Run", on_delete=models.CASCADE, related_name="dedup_records")
    seq = models.PositiveIntegerField()
    step_key = models.CharField(max_length=100)
    first_seen_at = models.DateTimeField(help_text="When the holding run saw the key.")
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never.")

    class Meta:
        ordering = ["-first_seen_at", "-id"]
        constraints = [
            # The gate: concurrent runs with one key race on this index and
            # exactly one INSERT wins; never a check-then-insert.
            models.UniqueConstraint(fields=["scope", "key"], name="dedup_key_unique_per_scope")
        ]

    def __str__(self) -> str:
        return f"{self.scope}:{self.key}"
