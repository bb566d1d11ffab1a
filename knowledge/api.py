"""The knowledge API: entities and events, written through
`knowledge.services` (validation, provenance, one correction per event)
with the API key as the actor (`key:<prefix>`).

Knowledge is not per workflow: a key bound to workflows still reads and
writes the whole graph, as long as it holds `knowledge:write`.

Entity keys are normalised by their type (`knowledge.keys`) and resolved
through aliases. A write the workflows cannot meet (a key not in canonical
form and not an alias, a type no workflow reads) still succeeds, and the
answer's `warnings` say why and how to fix it.
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
from knowledge import memory
from knowledge.models import Entity, EntityAlias, Event
from knowledge.services import (
    KEEP,
    InvalidKey,
    add_alias,
    record_event,
    remove_alias,
    supersede_event,
    upsert_entity,
)
from lib.errors import NotFound
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
    aliases: list[str]
    created_at: datetime
    updated_at: datetime

    @staticmethod
    def resolve_aliases(entity: Entity) -> list[str]:
        return sorted(alias.key for alias in entity.aliases.all())


class EntityWrittenOut(EntityOut):
    warnings: list[str] = Field(
        description="Why workflows would not meet this entity, and the fix."
    )

    @staticmethod
    def resolve_warnings(entity: Entity) -> list[str]:
        return memory.entity_warnings(entity=entity)


class AliasIn(In):
    key: EntityKey = Field(description="Another key of the entity, e.g. a name or a second domain.")


class AliasFilters(Schema):
    key: EntityKey


class AliasOut(Schema):
    key: str
    entity_id: int
    entity_type: str
    entity_key: str
    actor: str
    created_at: datetime

    @staticmethod
    def resolve_entity_type(alias: EntityAlias) -> str:
        return alias.type

    @staticmethod
    def resolve_entity_key(alias: EntityAlias) -> str:
        return alias.entity.key

    @staticmethod
    def resolve_actor(alias: EntityAlias) -> str:
        return alias.actor_label


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


class EventWrittenOut(EventOut):
    warnings: list[str] = Field(description="Why workflows would not meet this event, and the fix.")

    @staticmethod
    def resolve_warnings(event: Event) -> list[str]:
        return memory.entity_warnings(entity=event.entity)


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


def _named(queryset, type: str | None, key: str | None, field: str = "pk"):
    """`queryset` narrowed to what (type, key) names: through the type's
    normaliser and aliases when the type is given, else the key as stored
    or as an alias."""
    if key and type:
        value = memory.normalise_key(type, key)
        named = memory.entities_named(type=type, keys=[value] if value else [])
        return queryset.filter(**{f"{field}__in": named})
    prefix = "" if field == "pk" else "entity__"
    if type:
        queryset = queryset.filter(**{f"{prefix}type": type})
    if key:
        queryset = queryset.filter(Q(**{f"{prefix}key": key}) | Q(**{f"{prefix}aliases__key": key}))
    return queryset


@router.post("/entities", response={200: EntityWrittenOut, **errors()}, auth=WRITE)
def entity_write(request: HttpRequest, payload: EntityIn):
    """Create the entity the (type, key) names, or update its name and merge
    its attributes. The key is normalised and resolved through aliases."""
    try:
        return upsert_entity(
            type=payload.type, key=payload.key, name=payload.name, attributes=payload.attributes
        )
    except InvalidKey as exc:
        raise InvalidKey({"key": exc.errors["entity_key"]}) from None


@router.get("/entities", response={200: EntityPageOut, **errors()}, auth=WRITE)
def entity_list(request: HttpRequest, filters: Query[EntityFilters]):
    """Entities by type and key (normalised and through aliases when the type is given)."""
    entities = Entity.objects.prefetch_related("aliases").order_by("type", "key")
    return _page(_named(entities, filters.type, filters.key), filters)


@router.post("/entities/{entity_id}/aliases", response={201: AliasOut, **errors(404)}, auth=WRITE)
def alias_add(request: HttpRequest, entity_id: Id, payload: AliasIn):
    """Make a key another name of the entity: reads and writes by that key
    then mean this entity (e.g. the name `bareco` for `account:bareco.com`)."""
    entity = get_or_404(Entity.objects.all(), f"no entity {entity_id}", pk=entity_id)
    alias = add_alias(entity=entity, key=payload.key, actor_label=audit.actor_of(key=request.auth))
    return Status(201, AliasOut.from_orm(alias))


@router.delete("/entities/{entity_id}/aliases", response={204: None, **errors(404)}, auth=WRITE)
def alias_remove(request: HttpRequest, entity_id: Id, alias: Query[AliasFilters]):
    """Stop a key naming the entity (`?key=`)."""
    entity = get_or_404(Entity.objects.all(), f"no entity {entity_id}", pk=entity_id)
    if not remove_alias(entity=entity, key=alias.key):
        raise NotFound(f"{alias.key!r} is not an alias of {entity}")
    return Status(204, None)


@router.post("/events", response={201: EventWrittenOut, **errors(409)}, auth=WRITE)
def event_write(
    request: HttpRequest, payload: EventIn, idempotency_key: IdempotencyKey | None = IDEMPOTENCY_KEY
):
    """Record an event about an entity (created if missing), e.g. a pause
    of outreach until a date. The payload is checked against its type; the
    entity key is normalised and resolved through aliases. `warnings` say
    when no workflow would meet the entity (the event is written anyway)."""

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
        return Status(201, EventWrittenOut.from_orm(_events().get(pk=event.pk)))

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
    events = _named(
        _events().order_by("-occurred_at", "-id"),
        filters.entity_type,
        filters.entity_key,
        field="entity",
    )
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
