"""The knowledge API: entities and events, written through
`knowledge.services` (validation, provenance, one correction per event)
with the API key as the actor (`key:<prefix>`).

Knowledge is not per workflow: a key bound to workflows still reads and
writes the whole graph, as long as it holds `knowledge:write`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja import Field, Query, Router, Schema
from ninja.responses import Status
from pydantic import StringConstraints

from integrations.kit import (
    IDEMPOTENCY_KEY,
    ApiKeyAuth,
    DateTime,
    Id,
    IdempotencyKey,
    In,
    JsonObject,
    errors,
    get_or_404,
    idempotent,
    text,
)
from knowledge.models import Entity, Event
from knowledge.services import KEEP, record_event, supersede_event, upsert_entity
from policies import audit
from policies.models import ApiScope

router = Router(tags=["knowledge"])
WRITE = ApiKeyAuth(ApiScope.KNOWLEDGE_WRITE)

EntityType = Annotated[
    str, StringConstraints(min_length=1, max_length=60, pattern=r"^[-a-zA-Z0-9_]+$")
]
EntityKey = text(min_length=1, max_length=300)
Name = text(max_length=300)
Reason = text(max_length=4000)
EventTypeName = Annotated[
    str, StringConstraints(max_length=100, pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
]


class EntityIn(In):
    type: EntityType
    key: EntityKey
    name: Name = Field("", description="Replaces the stored name when given.")
    attributes: JsonObject = Field(default_factory=dict, description="Merged into the stored ones.")


class EntityOut(Schema):
    id: int
    type: str
    key: str
    name: str
    attributes: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class EventIn(In):
    entity_type: EntityType
    entity_key: EntityKey
    entity_name: Name = ""
    type: EventTypeName = Field(description="A registered event type, e.g. outreach.paused.")
    payload: JsonObject = Field(default_factory=dict)
    reason: Reason = Field("", description="Why (required).")
    occurred_at: DateTime | None = None
    valid_from: DateTime | None = Field(None, description="Default: occurred_at.")
    valid_until: DateTime | None = Field(None, description="Empty: open-ended.")


class EventSupersedeIn(In):
    payload: JsonObject
    reason: Reason = Field("", description="Why (required).")
    valid_from: DateTime | None = Field(None, description="Omitted: the old event's.")
    valid_until: DateTime | None = Field(None, description="Omitted: the old event's.")


class EventOut(Schema):
    id: int
    type: str
    entity_type: str
    entity_key: str
    payload: dict[str, Any]
    occurred_at: datetime
    valid_from: datetime
    valid_until: datetime | None
    reason: str
    actor: str
    source_run_id: int | None
    source_step_key: str
    supersedes_id: int | None
    superseded_by_id: int | None
    recorded_at: datetime

    @staticmethod
    def resolve_type(event: Event) -> str:
        return event.type.name

    @staticmethod
    def resolve_entity_type(event: Event) -> str:
        return event.entity.type

    @staticmethod
    def resolve_entity_key(event: Event) -> str:
        return event.entity.key

    @staticmethod
    def resolve_actor(event: Event) -> str:
        return event.actor_label

    @staticmethod
    def resolve_superseded_by_id(event: Event) -> int | None:
        try:
            return event.superseded_by.pk
        except Event.DoesNotExist:
            return None


class EntityFilters(Schema):
    type: EntityType | None = None
    key: EntityKey | None = None
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class EventFilters(Schema):
    entity_type: EntityType | None = None
    entity_key: EntityKey | None = None
    type: EventTypeName | None = None
    active: bool | None = Field(None, description="Only events valid now and not superseded.")
    limit: int = Field(50, ge=1, le=200)
    offset: int = Field(0, ge=0, le=1_000_000)


class EntityPageOut(Schema):
    count: int
    limit: int
    offset: int
    items: list[EntityOut]


class EventPageOut(Schema):
    count: int
    limit: int
    offset: int
    items: list[EventOut]


def _events():
    return Event.objects.select_related("type", "entity", "superseded_by")


def _page(queryset, filters) -> dict[str, Any]:
    items = list(queryset[filters.offset : filters.offset + filters.limit])
    return {
        "count": queryset.count(),
        "limit": filters.limit,
        "offset": filters.offset,
        "items": items,
    }


@router.post("/entities", response={200: EntityOut, **errors()}, auth=WRITE)
def entity_write(request: HttpRequest, payload: EntityIn):
    """Create the entity (type, key), or update its name and merge its attributes."""
    return upsert_entity(
        type=payload.type, key=payload.key, name=payload.name, attributes=payload.attributes
    )


@router.get("/entities", response={200: EntityPageOut, **errors()}, auth=WRITE)
def entity_list(request: HttpRequest, filters: Query[EntityFilters]):
    """Entities by type and key."""
    entities = Entity.objects.order_by("type", "key")
    if filters.type:
        entities = entities.filter(type=filters.type)
    if filters.key:
        entities = entities.filter(key=filters.key)
    return _page(entities, filters)


@router.post("/events", response={201: EventOut, **errors(409)}, auth=WRITE)
def event_write(
    request: HttpRequest, payload: EventIn, idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY
):
    """Record an event about an entity (created if missing), e.g. a pause
    of outreach until a date. The payload is checked against its type."""

    def write(_: str | None) -> Status:
        with transaction.atomic():  # an invalid event leaves no new entity behind
            entity = upsert_entity(
                type=payload.entity_type, key=payload.entity_key, name=payload.entity_name
            )
            event = record_event(
                entity=entity,
                type=payload.type,
                payload=payload.payload,
                reason=payload.reason,
                actor_label=audit.actor_of(key=request.auth),
                occurred_at=payload.occurred_at,
                valid_from=payload.valid_from,
                valid_until=payload.valid_until,
            )
        return Status(201, EventOut.from_orm(_events().get(pk=event.pk)))

    return idempotent(request, idempotency_key, write)


@router.post(
    "/events/{event_id}/supersede", response={201: EventOut, **errors(404, 409)}, auth=WRITE
)
def event_correct(
    request: HttpRequest,
    event_id: Id,
    payload: EventSupersedeIn,
    idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY,
):
    """Correct an event with a new one (once: a second correction is 409)."""
    given = payload.model_fields_set

    def correct(_: str | None) -> Status:
        event = get_or_404(_events(), f"no event {event_id}", pk=event_id)
        correction = supersede_event(
            event=event,
            payload=payload.payload,
            reason=payload.reason,
            actor_label=audit.actor_of(key=request.auth),
            valid_from=payload.valid_from if "valid_from" in given else KEEP,
            valid_until=payload.valid_until if "valid_until" in given else KEEP,
        )
        return Status(201, EventOut.from_orm(_events().get(pk=correction.pk)))

    return idempotent(request, idempotency_key, correct)


@router.get("/events", response={200: EventPageOut, **errors()}, auth=WRITE)
def event_list(request: HttpRequest, filters: Query[EventFilters]):
    """Events, newest first; `active=true` keeps those valid now."""
    events = _events().order_by("-occurred_at", "-id")
    if filters.entity_type:
        events = events.filter(entity__type=filters.entity_type)
    if filters.entity_key:
        events = events.filter(entity__key=filters.entity_key)
    if filters.type:
        events = events.filter(type__name=filters.type)
    if filters.active:
        now = timezone.now()
        events = events.filter(
            Q(valid_until__isnull=True) | Q(valid_until__gt=now),
            valid_from__lte=now,
            superseded_by__isnull=True,
        )
    return _page(events, filters)
