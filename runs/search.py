"""Finding runs by what they touched: an entity, an input field, a tool,
a reviewer's reason code, a time window.

A run touches an entity (an account, a person) when
- its input names it: a top-level input value equals one of the entity's
  spellings (its key, its name, an alias, or the text searched for);
- one of its tool calls names it: a top-level argument equals one of them;
- it wrote a knowledge event about it (`Event.source_run`).

Values are matched exactly (after the entity type's normaliser has spelt
the searched text as a key: `https://www.Acme.com/` finds `acme.com`), so
the database can answer from an index: on PostgreSQL a JSON path predicate
(`input @@ '$.* == "acme.com"'`) that a GIN index on the column serves, on
SQLite `json_each`. No substring search over JSON: at a hundred thousand
runs it would read every row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db.models import BooleanField, F, Func, Q, QuerySet
from django.db.models.sql.compiler import SQLCompiler

from approvals.models import ApprovalRequest, ApprovalStatus
from knowledge import keys as entity_keys
from knowledge.memory import entities_named
from knowledge.models import Entity, Event
from runs.models import Run, ToolCallRecord

# At most this many entities are taken as meant by one search text.
MAX_ENTITIES = 20
FIELD_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*$")


class HasValue(Func):
    """True when one of the JSON object's top-level values equals one of
    `values` (strings). Usable directly in `filter()`."""

    output_field = BooleanField()

    def __init__(self, column: str, values: Iterable[str]) -> None:
        super().__init__(F(column))
        self.values = sorted(set(values))

    def as_postgresql(
        self, compiler: SQLCompiler, connection: Any, **extra: Any
    ) -> tuple[str, list[Any]]:
        # `@@` with a `$.* == "…"` path: GIN (jsonb_ops) extracts the values
        # and answers from the index; an OR of several stays one index scan.
        column, params = compiler.compile(self.source_expressions[0])
        path = " || ".join(f"$.* == {json.dumps(value)}" for value in self.values)
        return f"({column} @@ %s::jsonpath)", [*params, path]

    def as_sql(  # type: ignore[override]  # takes no function or template
        self, compiler: SQLCompiler, connection: Any, **extra: Any
    ) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        marks = ", ".join(["%s"] * len(self.values))
        sql = (
            f"EXISTS (SELECT 1 FROM json_each({column}) AS j"
            f" WHERE j.type = 'text' AND j.value IN ({marks}))"
        )
        return sql, [*params, *self.values]


def _nothing() -> Q:
    return Q(pk__in=[])


@dataclass
class EntityMatch:
    """What a search text names: entities, and every spelling to look for."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    values: set[str] = field(default_factory=set)

    def runs_condition(self) -> Q:
        """Runs that touched these entities (or whose input or tool calls
        carry the text itself): one `id IN (… UNION ALL …)`, so the
        database finds the few matching ids by index first and then reads
        only those runs, however many runs there are."""
        if not self.values:
            return _nothing()
        ids = Run.objects.filter(HasValue("input", self.values)).order_by().values("pk")
        calls = ToolCallRecord.objects.filter(HasValue("args", self.values))
        parts: list[QuerySet[Any, Any]] = [calls.order_by().values("run_id")]
        if self.entities:
            events = Event.objects.filter(
                entity__in=[e.pk for e in self.entities], source_run__isnull=False
            )
            parts.append(events.order_by().values("source_run_id"))
        return Q(pk__in=ids.union(*parts, all=True))


def match_entities(text: str) -> EntityMatch:
    """The entities `text` names: as a key of each type with a normaliser
    (`bob@acme.com` is the person, and names the account `acme.com`), as
    an alias of one, or by name (case-insensitive). Two queries."""
    text = " ".join(text.split())
    match = EntityMatch(text=text)
    if not text:
        return match
    match.values.add(text)
    named = Q(name__iexact=text)
    plain = entity_keys.name_key(text)
    if plain is not None:
        named |= Q(key=plain.value)
    for entity_type in settings.BOSUN_ENTITY_KEYS:
        key = entity_keys.normalise(entity_type, text)
        if key is not None:
            match.values.add(key.value)
            named |= Q(pk__in=entities_named(type=entity_type, keys=[key.value]).values("pk"))
    match.entities = list(
        Entity.objects.filter(named)
        .prefetch_related("aliases")
        .order_by("type", "key")[:MAX_ENTITIES]
    )
    for entity in match.entities:
        match.values.update(spellings(entity))
    return match


def spellings(entity: Entity) -> set[str]:
    """How a run's input may name `entity`: its key, its name, its aliases
    (the aliases must be prefetched or are read here)."""
    values = {entity.key, *(alias.key for alias in entity.aliases.all())}
    if entity.name:
        values.add(entity.name)
    return values


def entity_runs(entity: Entity) -> QuerySet[Run]:
    """The runs that touched `entity` (input, tool calls, knowledge events)."""
    match = EntityMatch(text=entity.key, entities=[entity], values=spellings(entity))
    return Run.objects.filter(match.runs_condition())


def parse_field(text: str) -> tuple[str, str] | None:
    """`field=value` (a dotted path for nested input) as its two parts;
    None when it is not of that shape."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not FIELD_PATH.match(name):
        return None
    return name, value.strip()


def field_condition(name: str, value: str, *, vendor: str) -> Q:
    """Runs whose input has `value` at the dotted path `name`. The value
    is matched as typed text and, when it reads as JSON (`42`, `true`), as
    that value too. PostgreSQL: containment (`input @> {...}`), which a GIN
    index on the column serves; SQLite: the key's value."""
    candidates: list[Any] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = None
    else:
        if not isinstance(parsed, str) and parsed not in candidates:
            candidates.append(parsed)
    parts = name.split(".")
    condition = _nothing()
    for candidate in candidates:
        if vendor == "postgresql":
            nested: Any = candidate
            for part in reversed(parts):
                nested = {part: nested}
            condition |= Q(input__contains=nested)
        else:
            condition |= Q(**{"input__" + "__".join(parts): candidate})
    return condition


def tool_condition(tool: str) -> Q:
    """Runs that called `tool` (the tool-call ledger)."""
    return Q(pk__in=ToolCallRecord.objects.filter(tool=tool).values("run_id"))


def reason_condition(code: str) -> Q:
    """Runs with an approval decided with reason code `code`."""
    decided = ApprovalRequest.objects.filter(decision_code=code).exclude(
        status=ApprovalStatus.PENDING
    )
    return Q(pk__in=decided.values("run_id"))


# At most this many of an input's values are looked up as entity keys.
MAX_INPUT_VALUES = 20


def entities_in(value: Any) -> list[Entity]:
    """The entities a run's input names by a top-level value: each string
    normalised as a key of each type with a normaliser (through aliases),
    or an entity's exact name. One query; none when no value is a string."""
    texts = [v for v in (value.values() if isinstance(value, dict) else []) if isinstance(v, str)]
    texts = [" ".join(t.split()) for t in texts if t.strip()][:MAX_INPUT_VALUES]
    if not texts:
        return []
    named = Q(name__in=texts)
    for entity_type in settings.BOSUN_ENTITY_KEYS:
        found = {k.value for t in texts if (k := entity_keys.normalise(entity_type, t))}
        if found:
            named |= Q(pk__in=entities_named(type=entity_type, keys=found).values("pk"))
    return list(Entity.objects.filter(named).order_by("type", "key")[:MAX_ENTITIES])
