"""Step kinds over the knowledge graph: `knowledge_check`, `knowledge_write`
and the `dedup` gate.

Like every kind they never write the run's state: they return an `Outcome`
and the worker checkpoints it. Their own writes (an event, a dedup record)
are keyed by (run, seq), so a step executed again after a crash between its
write and its checkpoint finds what it wrote instead of writing twice.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from django.db import transaction
from django.utils.dateparse import parse_date, parse_datetime
from pydantic import Field

from knowledge import memory, services
from knowledge.models import EventType
from lib.context import check_template_syntax
from runs.engine.errors import StepError
from runs.engine.kinds import Kind, Outcome, StepContext, StrictConfig, _render
from runs.models import Run, StepRun, StepRunStatus

Slug = Annotated[str, Field(min_length=1, max_length=60, pattern=r"^[-a-zA-Z0-9_]+$")]
TypeName = Annotated[str, Field(min_length=1, max_length=100)]


def _event_type_problems(name: str) -> list[str]:
    # The event types are the graph's registry: a typo is caught at publish.
    if not EventType.objects.filter(name=name).exists():
        return [f"no event type named {name!r} (add it in admin under Knowledge graph)"]
    return []


def _text(value: Any, ctx: StepContext, what: str) -> str:
    text = str(_render(value, ctx)).strip()
    if not text:
        raise StepError(f"{what} rendered empty", retryable=False, error_type="empty_key")
    return text


def _entity_key(entity_type: str, template: str, ctx: StepContext) -> str:
    """The rendered key, which must normalise for its type (the services
    and `find_entity` normalise and resolve aliases themselves)."""
    key = _text(template, ctx, "entity_key")
    if memory.normalise_key(entity_type, key) is None:
        raise StepError(
            f"entity_key {key!r} is not a usable {entity_type} key",
            retryable=False,
            error_type="invalid_key",
        )
    return key


def _time(value: str | None, ctx: StepContext, what: str) -> datetime | None:
    """A rendered template as an aware datetime (a bare date is midnight
    UTC); None when the template is not set or renders empty."""
    if value is None:
        return None
    raw = _render(value, ctx)
    if raw in (None, ""):
        return None
    parsed = raw if isinstance(raw, datetime) else None
    if parsed is None and isinstance(raw, str):
        parsed = parse_datetime(raw)
        if parsed is None and (day := parse_date(raw)) is not None:
            parsed = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if parsed is None:
        raise StepError(
            f"{what} {raw!r} is not a date or time", retryable=False, error_type="invalid_time"
        )
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class KnowledgeCheckKind(Kind["KnowledgeCheckKind.Config"]):
    """Branches on the graph: `found` when the entity has an active event of
    the type at `at` (default now), else `clear`. The output lists the events
    found, so the run records which event stopped it."""

    name = "knowledge_check"
    required_edges = ("found", "clear")

    class Config(StrictConfig):
        entity_type: Slug
        entity_key: str = Field(min_length=1)
        event_type: TypeName
        at: str | None = None

    def check(self, config: Config) -> list[str]:
        return check_template_syntax([config.entity_key, config.at]) + _event_type_problems(
            config.event_type
        )

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        key = _entity_key(config.entity_type, config.entity_key, ctx)
        at = _time(config.at, ctx, "at")
        # The key as its type spells it, through aliases: `Bareco.com/` and
        # an alias `bareco` both find `account:bareco.com`.
        entity = memory.find_entity(type=config.entity_type, key=key)
        events = (
            []
            if entity is None
            else memory.active_events(entity=entity, type=config.event_type, at=at)
        )
        found = bool(events)
        return Outcome(
            input={
                "entity_type": config.entity_type,
                "entity_key": key,
                "event_type": config.event_type,
                "at": _iso(at),
            },
            output={
                "found": found,
                "entity": entity.as_dict() if entity else None,
                "events": [memory.event_summary(event) for event in events],
            },
            edge="found" if found else "clear",
        )


class KnowledgeWriteKind(Kind["KnowledgeWriteKind.Config"]):
    """Records a typed event about an entity (created if missing), with the
    run, seq and step as its provenance. The event is unique per (run, seq):
    executed again, the step returns the event it wrote the first time."""

    name = "knowledge_write"

    class Config(StrictConfig):
        entity_type: Slug
        entity_key: str = Field(min_length=1)
        entity_name: str = ""
        event_type: TypeName
        payload: dict[str, Any] | str = Field(default_factory=dict)
        valid_from: str | None = None
        valid_until: str | None = None
        reason: str = ""

    def check(self, config: Config) -> list[str]:
        templates: list[Any] = [
            config.entity_key,
            config.entity_name,
            config.payload,
            config.reason,
        ]
        templates += [config.valid_from, config.valid_until]
        return check_template_syntax(templates) + _event_type_problems(config.event_type)

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        key = _entity_key(config.entity_type, config.entity_key, ctx)
        payload = _render(config.payload, ctx)
        valid_from = _time(config.valid_from, ctx, "valid_from")
        valid_until = _time(config.valid_until, ctx, "valid_until")
        reason = str(_render(config.reason, ctx))
        name = str(_render(config.entity_name, ctx))
        if ctx.sandbox:
            return _event_not_written(config, key, name, payload, reason)
        try:
            # One short transaction: a new entity is kept only with its event.
            with transaction.atomic():
                entity = services.upsert_entity(type=config.entity_type, key=key, name=name)
                event = services.record_event(
                    entity=entity,
                    type=config.event_type,
                    payload=payload,
                    reason=reason,
                    valid_from=valid_from,
                    valid_until=valid_until,
                    source_run_id=ctx.run_id,
                    source_seq=ctx.seq,
                    source_step_key=ctx.step_key,
                )
        except services.InvalidEvent as exc:
            raise StepError(
                f"the event is invalid: {exc}", retryable=False, error_type="invalid_event"
            ) from None
        except services.UnknownEventType as exc:
            raise StepError(str(exc), retryable=False, error_type="unknown_event_type") from None
        return Outcome(
            input={"entity_type": config.entity_type, "entity_key": key, "payload": payload},
            output={
                "event_id": event.pk,
                "entity": entity.as_dict(),
                "event": memory.event_summary(event),
            },
        )


def _event_not_written(
    config: KnowledgeWriteKind.Config, key: str, name: str, payload: Any, reason: str
) -> Outcome:
    """A sandbox run's knowledge write: the event it would record, checked
    against its type, and not written."""
    if not EventType.objects.filter(name=config.event_type).exists():
        raise StepError(
            f"no event type named {config.event_type!r}",
            retryable=False,
            error_type="unknown_event_type",
        )
    return Outcome(
        input={"entity_type": config.entity_type, "entity_key": key, "payload": payload},
        output={
            "event_id": None,
            "entity": {"type": config.entity_type, "key": key, "name": name},
            "event": {"type": config.event_type, "payload": payload, "reason": reason},
            "sandboxed": True,
        },
    )


class DedupKind(Kind["DedupKind.Config"]):
    """A gate that lets a key through once per scope (and window).

    The first run whose INSERT of (scope, key) lands takes `next`; every
    later one takes `duplicate` with the first run's outputs (all succeeded
    steps, or those named in `carry`), so nothing is paid for twice. A
    record whose window ended before `at`, or whose run failed, was
    cancelled or stopped, is taken over and the run proceeds on `next`.
    The `end` step a run reaches says whether it keeps its keys (see
    `runs.engine.end_kind`).
    """

    name = "dedup"
    required_edges = ("next", "duplicate")

    class Config(StrictConfig):
        key: str = Field(min_length=1)
        scope: str = Field(min_length=1, max_length=100)
        window_s: float | None = Field(default=None, gt=0)
        at: str | None = None
        carry: list[str] | None = None

    def check(self, config: Config) -> list[str]:
        return check_template_syntax([config.key, config.at])

    def execute(self, config: Config, ctx: StepContext) -> Outcome:
        key = _text(config.key, ctx, "the dedup key")
        at = _time(config.at, ctx, "at")
        if ctx.sandbox:
            # A sandbox run neither takes a key from live runs nor is held
            # by theirs: it goes on as a first sighting and records nothing.
            step_input = {"scope": config.scope, "key": key, "at": _iso(at)}
            return Outcome(
                input=step_input, output={"duplicate": False, "key": key, "sandboxed": True}
            )
        claim = services.claim_dedup(
            scope=config.scope,
            key=key,
            run_id=ctx.run_id,
            seq=ctx.seq,
            step_key=ctx.step_key,
            at=at,
            window_s=config.window_s,
        )
        record = claim.record
        step_input = {"scope": config.scope, "key": key, "at": _iso(at)}
        if claim.won:
            output = {
                "duplicate": False,
                "key": key,
                "first_seen_at": _iso(record.first_seen_at),
                "expires_at": _iso(record.expires_at),
            }
            if claim.replaced:
                output["replaced"] = claim.replaced
            return Outcome(input=step_input, output=output)
        first: Run = record.run
        return Outcome(
            input=step_input,
            output={
                "duplicate": True,
                "key": key,
                "first_run": first.pk,
                "first_status": first.status,
                "first_outcome": first.outcome,
                "first_seen_at": _iso(record.first_seen_at),
                "steps": _outputs(first.pk, config.carry),
            },
            edge="duplicate",
        )


def _outputs(run_id: int, carry: list[str] | None) -> dict[str, Any]:
    """The succeeded step outputs of a run by step key (the last visit wins)."""
    rows = StepRun.objects.filter(run_id=run_id, status=StepRunStatus.SUCCEEDED)
    if carry is not None:
        rows = rows.filter(step_key__in=carry)
    return dict(rows.order_by("seq").values_list("step_key", "output"))
