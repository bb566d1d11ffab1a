"""Reading the knowledge graph: the one query module for steps, console and API.

- `active_events`: the events of a type that hold for an entity at a time.
- `guarding_events`: the active events of some types on the entities some
  raw keys name (what the tool gate asks at the moment of a call).
- `find_entity`, `normalise_key`: an entity by key, through the type's
  normaliser (`knowledge.keys`) and its aliases.
- `entity_warnings`: why no workflow would meet an entity.
- `entity_history` (episodic): what happened to an entity, corrections
  included, and the runs that touched it.
- `current_facts` (semantic): what is true of an entity now, each fact with
  its source.
- `procedural`: the prompts, policy and role a workflow works by.

A superseded event is replaced for every point in time: a correction
rewrites the record of what was true, it is not a change that starts later.

An entity's events include those of an entity still filed under one of its
aliases (written before the alias existed): `account:bareco` made an alias
of `account:bareco.com` brings its pause along.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Exists, F, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone

from knowledge import keys as entity_keys
from knowledge.models import Entity, EntityAlias, Event
from knowledge.services import database_now
from policies.models import Policy
from runs.models import Run, Workflow, WorkflowVersion

# The step kinds that look entities up by type and key.
KNOWLEDGE_KINDS = ("knowledge_check", "knowledge_write")


# ------------------------------------------------------------------ keys


def normalise_key(entity_type: str, raw: str) -> str | None:
    """`raw` as the type's normaliser spells it (`https://www.Acme.com/` ->
    `acme.com` for an account), or None when nothing usable is left. Not
    being in canonical form (`bareco` for an account) still gives a key."""
    key = entity_keys.normalise(entity_type, raw)
    return key.value if key is not None else None


def find_entity(*, type: str, key: str) -> Entity | None:
    """The entity `key` names in `type`: normalised, then the entity it is
    an alias of, else the entity filed under it; None when there is none
    (or the key does not normalise). One query."""
    value = normalise_key(type, key)
    if value is None:
        return None
    aliased = EntityAlias.objects.filter(type=type, key=value)
    named = Q(pk__in=aliased.values("entity_id")) | (Q(key=value) & ~Q(Exists(aliased)))
    return Entity.objects.filter(named, type=type).first()


def entities_named(*, type: str, keys: Collection[str]) -> QuerySet[Entity]:
    """The entities already normalised `keys` name in `type`, as a queryset
    to use as a subquery: those filed under a key, those a key is an alias
    of, and those still filed under an alias of either."""
    aliased = EntityAlias.objects.filter(type=type, key__in=keys)
    named = Q(key__in=keys) | Q(pk__in=aliased.values("entity_id"))
    targets = Entity.objects.filter(named, type=type)
    filed_under_alias = EntityAlias.objects.filter(type=type, entity__in=targets).values("key")
    return Entity.objects.filter(named | Q(key__in=filed_under_alias), type=type)


def _about(entity: Entity) -> Q:
    """Events about `entity`, and about an entity still filed under one of its aliases."""
    filed_under_alias = EntityAlias.objects.filter(entity=entity).values("key")
    return Q(entity=entity) | Q(entity__type=entity.type, entity__key__in=filed_under_alias)


def _valid_at(events: QuerySet[Event], at: datetime | None) -> QuerySet[Event]:
    at = at or timezone.now()
    return events.filter(
        Q(valid_until__isnull=True) | Q(valid_until__gt=at),
        valid_from__lte=at,
        superseded_by__isnull=True,  # a corrected event no longer counts
    )


def active_events(*, entity: Entity, type: str, at: datetime | None = None) -> list[Event]:
    """Events of `type` about `entity` valid at `at` (default now) and not
    superseded, newest first: `valid_from <= at < valid_until` (open when
    `valid_until` is empty)."""
    events = Event.objects.filter(_about(entity), type__name=type).select_related("type")
    return list(_valid_at(events, at).order_by("-occurred_at", "-id"))


def guarding_events(
    *,
    entity_type: str,
    keys: Iterable[str],
    event_types: Iterable[str],
    at: datetime | None = None,
) -> list[Event]:
    """The events of `event_types` that hold at `at` on the entities `keys`
    name, newest first (type and entity loaded).

    Each raw key goes through the type's normaliser (`bob@acme.com` and
    `https://acme.com/x` both name the account `acme.com`); a value that
    does not normalise is skipped. Keys resolve through aliases both ways:
    `bareco`, an alias of `bareco.com`, names that account, and an event
    still filed under `account:bareco` guards `bareco.com`. An event holds
    when `valid_from <= at < valid_until` (open when empty) and it is not
    superseded; `at` defaults to the database clock. Two queries: the
    clock, and the events (entities and aliases are subqueries).
    """
    names = {name for name in event_types if name}
    normalised = {
        value
        for raw in keys
        if raw is not None and (value := normalise_key(entity_type, raw)) is not None
    }
    if not names or not normalised:
        return []
    events = Event.objects.filter(
        entity__in=entities_named(type=entity_type, keys=normalised), type__name__in=names
    ).select_related("type", "entity")
    return list(_valid_at(events, at or database_now()).order_by("-occurred_at", "-id"))


def event_summary(event: Event) -> dict[str, Any]:
    """An event as plain JSON (what a step records in its output)."""
    return {
        "id": event.pk,
        "type": event.type.name,
        "payload": event.payload,
        "valid_from": _iso(event.valid_from),
        "valid_until": _iso(event.valid_until),
        "reason": event.reason,
        "source_run": event.source_run_id,
        "source_step": event.source_step_key or None,
        "actor": event.actor_label or None,
    }


# ---------------------------------------------------------------- warnings


def entity_warnings(*, entity: Entity) -> list[str]:
    """Why a workflow would not meet `entity`, each with its fix; empty when
    it would. Two reasons: its key is not in its type's canonical form
    (`account:bareco`, not a domain) and no alias links it to a key that is;
    or no published workflow's knowledge steps use its type. Writing is
    still allowed (the operator decides); admin and the API say so."""
    warnings: list[str] = []
    key = entity_keys.normalise(entity.type, entity.key)
    if key is None or not key.canonical:
        form = key.form if key is not None and key.form else f"a canonical {entity.type} key"
        if not _linked_to_canonical(entity):
            warnings.append(
                f"{entity} is not {form} and is not an alias of one, so workflows that key "
                f"{entity.type} entities that way will not match it. Add {entity.key!r} as an "
                f"alias of the {entity.type} it means (admin: that entity's aliases; API: POST "
                f"/api/v1/knowledge/entities/<id>/aliases), or write to that {entity.type}'s "
                "own key."
            )
    used = referenced_entity_types()
    if entity.type not in used:
        known = ", ".join(sorted(used)) or "none"
        warnings.append(
            f"No published workflow's knowledge steps use the entity type {entity.type!r} "
            f"(they use: {known}), so no workflow will read this. Use one of those types, "
            f"or publish a workflow whose knowledge steps read {entity.type!r}."
        )
    return warnings


def _linked_to_canonical(entity: Entity) -> bool:
    """`entity` is filed under an alias key, or one of its aliases is canonical."""
    if EntityAlias.objects.filter(type=entity.type, key=entity.key).exists():
        return True
    aliases = EntityAlias.objects.filter(entity=entity).values_list("key", flat=True)
    return any(
        (alias := entity_keys.normalise(entity.type, raw)) is not None and alias.canonical
        for raw in aliases
    )


def referenced_entity_types() -> set[str]:
    """The entity types the knowledge steps of each workflow's current
    (latest published) version use, and those the policies' knowledge
    guards name. One query over those definitions, one over the policies."""
    latest = WorkflowVersion.objects.filter(workflow=OuterRef("workflow")).order_by("-number")
    definitions = WorkflowVersion.objects.filter(pk=Subquery(latest.values("pk")[:1])).values_list(
        "definition", flat=True
    )
    types: set[str] = set()
    for definition in definitions:
        steps = (definition or {}).get("steps") or {}
        for step in steps.values():
            if isinstance(step, dict) and step.get("kind") in KNOWLEDGE_KINDS:
                entity_type = (step.get("config") or {}).get("entity_type")
                if isinstance(entity_type, str):
                    types.add(entity_type)
    for guards in Policy.objects.values_list("guards", flat=True):
        for guard in guards or []:
            if isinstance(guard, dict) and isinstance(guard.get("entity_type"), str):
                types.add(guard["entity_type"])
    return types


# ---------------------------------------------------------------- episodic


@dataclass(frozen=True)
class HistoryEvent:
    id: int
    type: str
    payload: dict[str, Any]
    occurred_at: datetime
    valid_from: datetime
    valid_until: datetime | None
    recorded_at: datetime
    reason: str
    actor: str
    source_run_id: int | None
    source_step_key: str
    supersedes_id: int | None
    superseded_by_id: int | None

    @property
    def superseded(self) -> bool:
        return self.superseded_by_id is not None


@dataclass(frozen=True)
class HistoryRun:
    id: int
    workflow: str
    status: str
    outcome: str
    created_at: datetime
    steps: tuple[str, ...]  # the steps of this run that wrote about the entity


@dataclass(frozen=True)
class History:
    entity: Entity
    events: list[HistoryEvent]
    runs: list[HistoryRun]


def entity_history(*, entity: Entity, limit: int = 100) -> History:
    """Everything recorded about `entity`, newest first: its events
    (superseded ones included and marked) and the runs that wrote them."""
    rows = (
        Event.objects.filter(_about(entity))
        .select_related("type")
        .annotate(replaced_by=F("superseded_by__id"))
        .order_by("-occurred_at", "-id")[:limit]
    )
    events = [
        HistoryEvent(
            id=row.pk,
            type=row.type.name,
            payload=row.payload,
            occurred_at=row.occurred_at,
            valid_from=row.valid_from,
            valid_until=row.valid_until,
            recorded_at=row.recorded_at,
            reason=row.reason,
            actor=row.actor_label,
            source_run_id=row.source_run_id,
            source_step_key=row.source_step_key,
            supersedes_id=row.supersedes_id,
            superseded_by_id=row.replaced_by,
        )
        for row in rows
    ]
    steps: dict[int, list[str]] = {}
    for event in events:
        if event.source_run_id is not None:
            steps.setdefault(event.source_run_id, []).append(event.source_step_key)
    runs = [
        HistoryRun(
            id=run.pk,
            workflow=run.workflow.slug,
            status=run.status,
            outcome=run.outcome,
            created_at=run.created_at,
            steps=tuple(dict.fromkeys(steps[run.pk])),
        )
        for run in Run.objects.filter(pk__in=steps)
        .select_related("workflow")
        .order_by("-created_at", "-id")
    ]
    return History(entity=entity, events=events, runs=runs)


# ---------------------------------------------------------------- semantic


@dataclass(frozen=True)
class Fact:
    """A value known about an entity and where it comes from: the entity's
    own attributes (`event_id` empty) or an active event of a fact type."""

    name: str
    value: Any
    event_id: int | None = None
    event_type: str = ""
    run_id: int | None = None
    step_key: str = ""
    actor: str = ""
    reason: str = ""
    since: datetime | None = None


def current_facts(*, entity: Entity, at: datetime | None = None) -> dict[str, Fact]:
    """The entity's attributes overlaid by the payload keys of its active
    events whose type `sets_facts`; the latest occurred event wins a key."""
    facts = {
        name: Fact(name=name, value=value, since=entity.updated_at)
        for name, value in entity.attributes.items()
    }
    events = _valid_at(
        Event.objects.filter(_about(entity), type__sets_facts=True).select_related("type"), at
    ).order_by("occurred_at", "id")
    for event in events:
        for name, value in event.payload.items():
            facts[name] = Fact(
                name=name,
                value=value,
                event_id=event.pk,
                event_type=event.type.name,
                run_id=event.source_run_id,
                step_key=event.source_step_key,
                actor=event.actor_label,
                reason=event.reason,
                since=event.occurred_at,
            )
    return facts


# -------------------------------------------------------------- procedural


@dataclass(frozen=True)
class Prompt:
    step_key: str
    system: str
    prompt: str


@dataclass(frozen=True)
class InForce:
    """A policy or role as it stands, with the number of its latest version."""

    name: str
    version: int | None
    snapshot: dict[str, Any]


@dataclass(frozen=True)
class Procedure:
    workflow: str
    version: int | None
    prompts: list[Prompt] = field(default_factory=list)
    policy: InForce | None = None
    role: InForce | None = None
    rubrics: list[InForce | None] = field(default_factory=list)


def procedural(*, workflow: Workflow) -> Procedure:
    """How `workflow` works now: the prompts of the llm and score steps of
    its live version, the policy and role it runs under, and
    the rubrics its score steps score against."""
    from policies.models import Rubric

    version = workflow.serving_version
    steps = version.definition.get("steps", {}) if version else {}
    prompts = [
        Prompt(
            step_key=key,
            system=step["config"].get("system", ""),
            prompt=step["config"].get("prompt", ""),
        )
        for key, step in steps.items()
        if step.get("kind") in ("llm", "score")
    ]
    names = sorted(
        {step["config"]["rubric"] for step in steps.values() if step.get("kind") == "score"}
    )
    return Procedure(
        workflow=workflow.slug,
        version=version.number if version else None,
        prompts=prompts,
        policy=_in_force(workflow.policy),
        role=_in_force(workflow.role),
        rubrics=[_in_force(rubric) for rubric in Rubric.objects.filter(name__in=names)],
    )


def _in_force(holder) -> InForce | None:
    if holder is None:
        return None
    latest = holder.versions.order_by("-number").first()
    return InForce(
        name=holder.name, version=latest.number if latest else None, snapshot=holder.snapshot()
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
