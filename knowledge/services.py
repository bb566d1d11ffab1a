"""Writing the knowledge graph: entities and their aliases, events,
corrections, relations, dedup.

Every writer (the `knowledge_write` and `dedup` steps, admin, the API) calls
these functions. Uniqueness is decided by the database: each function tries
the INSERT (or one conditional UPDATE) and reads the winner on conflict,
never checks first.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from knowledge import keys
from knowledge.models import DedupRecord, Entity, EntityAlias, Event, EventType, Relation
from runs.models import Run, RunStatus

# A dedup record held by a run that ended like this is up for grabs: that
# run produced no result worth reusing.
DEAD_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.STOPPED)
KEEP: Any = object()  # supersede_event: keep the old event's value
KEY_MAX_LENGTH = Entity._meta.get_field("key").max_length or 300


class KnowledgeError(Exception):
    """Base of the knowledge graph's domain errors; `code` names the kind."""

    code = "knowledge_error"


class UnknownEventType(KnowledgeError):
    code = "unknown_event_type"


class InvalidEvent(KnowledgeError):
    """The event cannot be written; `errors` maps a field to its problem."""

    code = "invalid_event"

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


class InvalidPayload(InvalidEvent):
    """The payload breaks its type's schema; `errors` maps a payload path
    (`until`, `contact.email`, `(root)`) to the validator's message."""

    code = "invalid_payload"


class AlreadySuperseded(KnowledgeError):
    code = "already_superseded"


class InvalidKey(InvalidEvent):
    """An entity key with nothing usable left once normalised (`mailto:`)."""

    code = "invalid_key"


class InvalidAlias(KnowledgeError):
    code = "invalid_alias"


def database_now() -> datetime:
    """The database clock (timers and windows never trust the worker's)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT clock_timestamp()")
            return cursor.fetchone()[0]
        cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
        return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)


# ---------------------------------------------------------------- entities


def entity_key(*, type: str, key: str) -> str:
    """`key` as `type`'s normaliser spells it; `InvalidKey` when nothing
    usable is left. Not being canonical (`bareco` for an account) is allowed."""
    normalised = keys.normalise(type, key)
    if normalised is None:
        raise InvalidKey({"entity_key": f"{key!r} is not a usable {type} key"})
    if len(normalised.value) > KEY_MAX_LENGTH:  # lower-casing and IDNA can lengthen a key
        raise InvalidKey({"entity_key": f"longer than {KEY_MAX_LENGTH} characters once normalised"})
    return normalised.value


def upsert_entity(
    *, type: str, key: str, name: str = "", attributes: dict[str, Any] | None = None
) -> Entity:
    """The entity `key` names in `type`, created if missing. The key is
    normalised (`entity_key`) and resolved through aliases first: writing
    `account:bareco` when `bareco` is an alias of `account:bareco.com`
    writes `bareco.com`. A given name replaces the stored one; given
    attributes are merged into the stored ones."""
    key = entity_key(type=type, key=key)
    alias = EntityAlias.objects.select_related("entity").filter(type=type, key=key).first()
    if alias is not None:
        entity, created = alias.entity, False
    else:
        entity, created = Entity.objects.get_or_create(
            type=type, key=key, defaults={"name": name, "attributes": attributes or {}}
        )
    renames = bool(name) and name != entity.name
    if created or not (renames or attributes):
        return entity
    with transaction.atomic():
        # Lock the row so two merges of attributes do not lose each other's keys.
        entity = Entity.objects.select_for_update().get(pk=entity.pk)
        entity.name = name or entity.name
        entity.attributes = {**entity.attributes, **(attributes or {})}
        entity.save(update_fields=["name", "attributes", "updated_at"])
    return entity


# ----------------------------------------------------------------- aliases


def alias_key(*, entity: Entity, key: str) -> str:
    """`key` normalised as an alias of `entity`, or `InvalidAlias` saying why
    not. Aliases stay one step deep: the entity must not itself be filed
    under an alias, and the alias key must not be an entity others alias to.
    (These are checks, not the uniqueness of the alias: the unique index
    decides that in `add_alias`.)"""
    normalised = keys.normalise(entity.type, key)
    if normalised is None:
        raise InvalidAlias(f"{key!r} is not a usable {entity.type} key")
    value = normalised.value
    if len(value) > KEY_MAX_LENGTH:
        raise InvalidAlias(f"longer than {KEY_MAX_LENGTH} characters once normalised")
    if value == entity.key:
        raise InvalidAlias(f"{value!r} is the entity's own key")
    own = EntityAlias.objects.select_related("entity").filter(type=entity.type, key=entity.key)
    if (holder := own.first()) is not None:
        raise InvalidAlias(f"{entity} is itself an alias of {holder.entity}: add the alias there")
    if EntityAlias.objects.filter(entity__type=entity.type, entity__key=value).exists():
        raise InvalidAlias(
            f"{entity.type}:{value} has aliases of its own: remove them first, "
            f"or add {entity.key!r} as an alias of it instead"
        )
    return value


def add_alias(*, entity: Entity, key: str, actor_label: str = "") -> EntityAlias:
    """Make `key` another name of `entity`. Adding the same alias again
    returns it; an alias key already naming another entity is refused (the
    unique (type, key) index decides between concurrent writers)."""
    value = alias_key(entity=entity, key=key)
    try:
        with transaction.atomic():  # a savepoint when a caller's transaction is open
            return EntityAlias.objects.create(
                type=entity.type, key=value, entity=entity, actor_label=actor_label[:150]
            )
    except IntegrityError:
        holder = EntityAlias.objects.select_related("entity").filter(type=entity.type, key=value)
        found = holder.first()
        if found is not None and found.entity_id == entity.pk:
            return found
        raise InvalidAlias(
            f"{entity.type}:{value} is already an alias of {found.entity if found else 'another'}"
        ) from None


def remove_alias(*, entity: Entity, key: str) -> bool:
    """Stop `key` naming `entity`; False when it did not."""
    value = keys.normalise(entity.type, key)
    deleted, _ = EntityAlias.objects.filter(
        entity=entity, key=value.value if value is not None else key
    ).delete()
    return bool(deleted)


# ------------------------------------------------------------------ events


def get_event_type(*, name: str) -> EventType:
    try:
        return EventType.objects.get(name=name)
    except EventType.DoesNotExist:
        raise UnknownEventType(f"no event type named {name!r}") from None


def payload_errors(*, schema: dict[str, Any], payload: Any) -> dict[str, str]:
    """Each problem of `payload` against `schema`, by payload path."""
    if not isinstance(payload, dict):
        return {"(root)": "the payload must be a JSON object"}
    validator = jsonschema.Draft202012Validator(
        schema or {}, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors: dict[str, str] = {}
    for error in sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path)):
        where = [str(part) for part in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            # Name the missing field itself, not the object that lacks it.
            for missing in error.validator_value:
                if missing not in error.instance:
                    errors.setdefault(".".join([*where, missing]), error.message)
                    break
            continue
        errors.setdefault(".".join(where) or "(root)", error.message)
    return errors


def validate_event(
    *,
    type: EventType,
    payload: Any,
    valid_from: datetime,
    valid_until: datetime | None,
    reason: str,
    actor_label: str,
    source_run_id: int | None,
) -> None:
    """Raise `InvalidPayload` / `InvalidEvent` for an event that may not be
    written. Pure: the admin form calls it to show errors; writers call it
    before they insert."""
    problems = payload_errors(schema=type.payload_schema, payload=payload)
    if problems:
        raise InvalidPayload(problems)
    errors: dict[str, str] = {}
    if source_run_id is None and not actor_label:
        errors["actor_label"] = "an event needs a source run or an actor"
    if source_run_id is None and not reason.strip():
        errors["reason"] = "a reason is required for an event written by hand"
    if valid_until is not None and valid_until <= valid_from:
        errors["valid_until"] = "must be after valid_from"
    if errors:
        raise InvalidEvent(errors)


def record_event(
    *,
    entity: Entity,
    type: str | EventType,
    payload: dict[str, Any],
    reason: str = "",
    actor_label: str = "",
    occurred_at: datetime | None = None,
    valid_from: datetime | None = None,
    valid_until: datetime | None = None,
    source_run_id: int | None = None,
    source_seq: int | None = None,
    source_step_key: str = "",
) -> Event:
    """Validate and write one event; nothing is written when it is invalid.

    Written by a run's step (`source_run_id` and `source_seq`), a second
    call for the same step returns the first event: the step may be
    executed again after a crash and must not write twice.
    """
    event_type = type if isinstance(type, EventType) else get_event_type(name=type)
    occurred_at = occurred_at or timezone.now()
    valid_from = valid_from or occurred_at
    validate_event(
        type=event_type,
        payload=payload,
        valid_from=valid_from,
        valid_until=valid_until,
        reason=reason,
        actor_label=actor_label,
        source_run_id=source_run_id,
    )
    return _insert(
        Event(
            type=event_type,
            entity=entity,
            payload=payload,
            occurred_at=occurred_at,
            valid_from=valid_from,
            valid_until=valid_until,
            reason=reason,
            actor_label=actor_label[:150],
            source_run_id=source_run_id,
            source_seq=source_seq,
            source_step_key=source_step_key,
        )
    )


def supersede_event(
    *,
    event: Event,
    payload: dict[str, Any],
    reason: str = "",
    actor_label: str = "",
    valid_from: datetime | None = KEEP,
    valid_until: datetime | None = KEEP,
    source_run_id: int | None = None,
    source_seq: int | None = None,
    source_step_key: str = "",
) -> Event:
    """Correct `event` with a new event of the same type about the same
    entity. The validity window is kept unless given. An event can be
    superseded once: a second correction raises `AlreadySuperseded` (the
    one-to-one `supersedes` column decides, also between concurrent writers).
    """
    occurred_at = timezone.now()
    valid_from = event.valid_from if valid_from is KEEP else valid_from or occurred_at
    valid_until = event.valid_until if valid_until is KEEP else valid_until
    validate_event(
        type=event.type,
        payload=payload,
        valid_from=valid_from,
        valid_until=valid_until,
        reason=reason,
        actor_label=actor_label,
        source_run_id=source_run_id,
    )
    return _insert(
        Event(
            type=event.type,
            entity=event.entity,
            payload=payload,
            occurred_at=occurred_at,
            valid_from=valid_from,
            valid_until=valid_until,
            reason=reason,
            actor_label=actor_label[:150],
            source_run_id=source_run_id,
            source_seq=source_seq,
            source_step_key=source_step_key,
            supersedes=event,
        )
    )


def _insert(event: Event) -> Event:
    try:
        with transaction.atomic():  # a savepoint when a caller's transaction is open
            event.save()
        return event
    except IntegrityError:
        if event.source_run_id is not None:
            # Written by an earlier execution of the same step: that one stands.
            existing = Event.objects.filter(
                source_run_id=event.source_run_id, source_seq=event.source_seq
            ).first()
            if existing is not None:
                return existing
        if event.supersedes_id is not None:
            winner = Event.objects.filter(supersedes_id=event.supersedes_id).first()
            raise AlreadySuperseded(
                f"event {event.supersedes_id} is already superseded"
                + (f" by event {winner.pk}" if winner else "")
            ) from None
        raise


# --------------------------------------------------------------- relations


def upsert_relation(
    *,
    type: str,
    source: Entity,
    target: Entity,
    attributes: dict[str, Any] | None = None,
    reason: str = "",
    actor_label: str = "",
    source_run_id: int | None = None,
    source_seq: int | None = None,
    source_step_key: str = "",
) -> Relation:
    """The relation `source -type-> target`, created or updated in place
    (one row per triple: the unique constraint decides between writers)."""
    fields = {
        "attributes": attributes or {},
        "reason": reason,
        "actor_label": actor_label[:150],
        "source_run_id": source_run_id,
        "source_seq": source_seq,
        "source_step_key": source_step_key,
    }
    relation, _created = Relation.objects.update_or_create(
        type=type, source=source, target=target, defaults=fields
    )
    return relation


# ------------------------------------------------------------------- dedup


@dataclass(frozen=True)
class DedupClaim:
    """The outcome of `claim_dedup`: `won` says whether the caller proceeds;
    `record` is the (now or earlier) holder; `replaced` names the run whose
    expired or dead record the caller took over."""

    won: bool
    record: DedupRecord
    replaced: dict[str, Any] | None = None


def dedup_storage_key(key: str) -> str:
    """The key as stored: as given, or hashed when it is too long to index."""
    if len(key) <= 200:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def claim_dedup(
    *,
    scope: str,
    key: str,
    run_id: int,
    seq: int,
    step_key: str,
    at: datetime | None = None,
    window_s: float | None = None,
) -> DedupClaim:
    """Claim `key` in `scope` for this run's step, enforced by the database.

    The INSERT wins, or the key is held: by this very step (executed again
    after a crash: it still wins), by an expired record or a run that ended
    failed / cancelled / stopped (taken over by one conditional UPDATE), or
    by a live earlier run (lost: the caller is the duplicate).
    """
    stored = dedup_storage_key(key)
    at = at or database_now()
    expires = at + timedelta(seconds=window_s) if window_s else None
    claim = {"run_id": run_id, "seq": seq, "step_key": step_key[:100]}
    for _ in range(3):  # a holder that vanishes between our statements: try again
        try:
            with transaction.atomic():  # a savepoint, so SQLite and PostgreSQL alike recover
                record = DedupRecord.objects.create(
                    scope=scope, key=stored, first_seen_at=at, expires_at=expires, **claim
                )
            return DedupClaim(won=True, record=record)
        except IntegrityError:
            pass
        holder = DedupRecord.objects.filter(scope=scope, key=stored).first()
        if holder is None:
            continue
        if holder.run_id == run_id and holder.seq == seq:
            return DedupClaim(won=True, record=holder)
        if _take_over(holder, at=at, expires=expires, claim=claim):
            replaced = {
                "run": holder.run_id,
                "expired": holder.expires_at is not None and holder.expires_at <= at,
            }
            record = DedupRecord.objects.get(pk=holder.pk)
            return DedupClaim(won=True, record=record, replaced=replaced)
        current = DedupRecord.objects.select_related("run").filter(pk=holder.pk).first()
        if current is not None:
            return DedupClaim(won=False, record=current)
    raise KnowledgeError(f"dedup key {key!r} in scope {scope!r} kept changing hands")


def _take_over(holder: DedupRecord, *, at: datetime, expires, claim: dict[str, Any]) -> bool:
    """One conditional UPDATE: the record moves to us only if it still
    belongs to the holder we read and that holder is expired or dead. Of
    concurrent takers the first UPDATE changes the row and every other one
    then matches nothing (the run or window it tested has changed)."""
    dead = Run.objects.filter(pk=OuterRef("run_id"), status__in=DEAD_STATUSES)
    return bool(
        DedupRecord.objects.filter(pk=holder.pk, run_id=holder.run_id, seq=holder.seq)
        .filter(Q(expires_at__lte=at) | Q(Exists(dead)))
        .update(first_seen_at=at, expires_at=expires, **claim)
    )


def settle_dedup(*, run_id: int, keep_s: float | None) -> None:
    """What an `end` step decides for the dedup keys its run holds:
    `keep_s` None frees them (the records go, so the next run with the key
    proceeds); otherwise each is held `keep_s` seconds from when the run
    first saw it, in place of the dedup step's window.

    Keyed by the run: applying it again changes nothing, and a key another
    run has taken over since (its record names that run) is left alone.
    """
    held = DedupRecord.objects.filter(run_id=run_id)
    if keep_s is None:
        held.delete()
    else:
        held.update(expires_at=F("first_seen_at") + timedelta(seconds=keep_s))
