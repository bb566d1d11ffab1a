"""Reading the knowledge graph: the one query module for steps, console and API.

- `active_events`: the events of a type that hold for an entity at a time.
- `entity_history` (episodic): what happened to an entity, corrections
  included, and the runs that touched it.
- `current_facts` (semantic): what is true of an entity now, each fact with
  its source.
- `procedural`: the prompts, policy and role a workflow works by.

A superseded event is replaced for every point in time: a correction
rewrites the record of what was true, it is not a change that starts later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from knowledge.models import Entity, Event
from runs.models import Run, Workflow


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
    events = Event.objects.filter(entity=entity, type__name=type).select_related("type")
    return list(_valid_at(events, at).order_by("-occurred_at", "-id"))


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
        Event.objects.filter(entity=entity)
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
        Event.objects.filter(entity=entity, type__sets_facts=True).select_related("type"), at
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
    its current published version, the policy and role it runs under, and
    the rubrics its score steps score against."""
    from policies.models import Rubric

    version = workflow.current_version
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
