"""Finding runs by what they touched: an entity, an input field, a tool,
a reviewer's reason code, a time window.

A run touches an entity (an account, a person) when
- its input names it: a top-level input value equals one of the entity's
  spellings (its key, its name, an alias, or the text searched for), or,
  for an account, is an email address or a URL at one of its domains;
- one of its tool calls names it the same way, by a top-level argument;
- it wrote a knowledge event about it (`Event.source_run`).

Values are matched exactly (after the entity type's normaliser has spelt
the searched text as a key: `https://www.Acme.com/` finds `acme.com`), so
the database can answer from an index: on PostgreSQL a JSON path predicate
(`input @@ '$.* == "acme.com"'`) that a GIN index serves, on SQLite
`json_each`. A run's input is read from its copy (`RunInput`), which
holds those indexes off the run row. No substring search over JSON: at a hundred thousand
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
from runs.models import Run, RunInput, ToolCallRecord

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


class HasDomain(Func):
    """True when a top-level string value of the JSON object names one of
    `domains`: an email address at it (`bob@acme.com`) or a URL of it
    (`https://www.acme.com/pricing`). PostgreSQL reads the domains from
    `bosun_json_domains(column)` (migration runs.0027), which a GIN index
    on that expression serves; SQLite matches the values with LIKE."""

    output_field = BooleanField()

    def __init__(self, column: str, domains: Iterable[str]) -> None:
        super().__init__(F(column))
        self.domains = sorted(set(domains))

    def as_postgresql(
        self, compiler: SQLCompiler, connection: Any, **extra: Any
    ) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        return f"(bosun_json_domains({column}) && %s::text[])", [*params, self.domains]

    def as_sql(  # type: ignore[override]  # takes no function or template
        self, compiler: SQLCompiler, connection: Any, **extra: Any
    ) -> tuple[str, list[Any]]:
        column, params = compiler.compile(self.source_expressions[0])
        patterns = [
            f"%{before}{domain}{after}"
            for domain in self.domains
            for before in ("@", "@www.", "://", "://www.")
            for after in ("", ">%", "/%", ":%", "?%", "#%")
        ]
        likes = " OR ".join(["j.value LIKE %s"] * len(patterns))
        sql = f"EXISTS (SELECT 1 FROM json_each({column}) AS j WHERE j.type = 'text' AND ({likes}))"
        return sql, [*params, *patterns]


def _nothing() -> Q:
    return Q(pk__in=[])


def _input_has(*condition: Any, **lookups: Any) -> Q:
    """Runs whose input meets `condition`: read from the input's copy
    (`RunInput`), where the search's indexes are."""
    copies = RunInput.objects.order_by().filter(*condition, **lookups)
    return Q(pk__in=copies.values("run_id"))


@dataclass
class EntityMatch:
    """What a search text names: entities, and every spelling to look for."""

    text: str
    entities: list[Entity] = field(default_factory=list)
    values: set[str] = field(default_factory=set)
    # Accounts' domains: a run names one by an address or a URL at it too.
    domains: set[str] = field(default_factory=set)

    def conditions(self) -> list[Any]:
        """One filter on runs per way a run may have touched them: its
        input or its tool calls name them (by value, or by an address or
        URL at an account's domain), or it wrote an event about them. Each
        is served by an index; kept apart, each finds its newest runs
        alone (see `newest_ids`)."""
        found: list[Any] = []
        calls = ToolCallRecord.objects.order_by()
        if self.values:
            found.append(_input_has(HasValue("input", self.values)))
            found.append(Q(pk__in=calls.filter(HasValue("args", self.values)).values("run_id")))
        if self.domains:
            found.append(_input_has(HasDomain("input", self.domains)))
            found.append(Q(pk__in=calls.filter(HasDomain("args", self.domains)).values("run_id")))
        if self.entities:
            events = Event.objects.order_by().filter(
                entity__in=[e.pk for e in self.entities], source_run__isnull=False
            )
            found.append(Q(pk__in=events.values("source_run_id")))
        return found


def newest_ids(
    runs: QuerySet[Run],
    conditions: list[Any],
    *,
    limit: int,
    before: int | None = None,
    after: int | None = None,
) -> list[int]:
    """The ids of the `limit` newest runs of `runs` meeting any of
    `conditions` (below id `before`, or the oldest above `after`), or a
    superset of them: the first `limit` of each condition. One query a
    condition, each of which the planner can answer on its own terms: an
    index scan for an entity few runs name, a walk down the primary key
    that stops at `limit` for one that most runs name. (A single OR or
    UNION of them costs a pass over every match in the second case.)"""
    if after is not None:
        runs, order = runs.filter(id__gt=after), "id"
    else:
        runs, order = (runs.filter(id__lt=before) if before is not None else runs), "-id"
    ids: set[int] = set()
    for condition in conditions:
        ids.update(runs.filter(condition).order_by(order).values_list("pk", flat=True)[:limit])
    return sorted(ids, reverse=after is None)


def match_entities(text: str) -> EntityMatch:
    """The entities `text` names: as a key of each type with a normaliser,
    as an alias of one, or by name (case-insensitive). An email address
    names the person, not the account of its domain; a domain, a URL or a
    name names the account, and the runs that name its domain by an
    address or a URL are its runs too. Two queries."""
    text = " ".join(text.split())
    match = EntityMatch(text=text)
    if not text:
        return match
    match.values.add(text)
    named = Q(name__iexact=text)
    plain = entity_keys.name_key(text)
    if plain is not None:
        named |= Q(key=plain.value)
    address = entity_keys.email_key(text)
    is_address = address is not None and address.canonical
    for entity_type in settings.BOSUN_ENTITY_KEYS:
        by_domain = _by_domain(entity_type)
        if by_domain and is_address:
            continue
        key = entity_keys.normalise(entity_type, text)
        if key is not None:
            match.values.add(key.value)
            if by_domain and key.canonical:
                match.domains.add(key.value)
            named |= Q(pk__in=entities_named(type=entity_type, keys=[key.value]).values("pk"))
    match.entities = list(
        Entity.objects.filter(named)
        .prefetch_related("aliases")
        .order_by("type", "key")[:MAX_ENTITIES]
    )
    for entity in match.entities:
        match.values.update(spellings(entity))
        match.domains.update(domains_of(entity))
    return match


def _by_domain(entity_type: str) -> bool:
    """The type's keys are domains (an account)."""
    return entity_keys.normaliser(entity_type) is entity_keys.domain_key


def domains_of(entity: Entity) -> set[str]:
    """The domains an account is known by: its key and aliases that are
    domains (none for a type not keyed by domain)."""
    if not _by_domain(entity.type):
        return set()
    keys = [entity.key, *(alias.key for alias in entity.aliases.all())]
    return {key.value for raw in keys if (key := entity_keys.domain_key(raw)) and key.canonical}


def spellings(entity: Entity) -> set[str]:
    """How a run's input may name `entity`: its key, its name, its aliases
    (the aliases must be prefetched or are read here)."""
    values = {entity.key, *(alias.key for alias in entity.aliases.all())}
    if entity.name:
        values.add(entity.name)
    return values


def entity_match(entity: Entity) -> EntityMatch:
    """What names `entity` (its aliases prefetched, or read here)."""
    return EntityMatch(
        text=entity.key, entities=[entity], values=spellings(entity), domains=domains_of(entity)
    )


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
    condition = _nothing()  # on the input's copy: one subquery for every candidate
    for candidate in candidates:
        if vendor == "postgresql":
            nested: Any = candidate
            for part in reversed(parts):
                nested = {part: nested}
            condition |= Q(input__contains=nested)
        else:
            condition |= Q(**{"input__" + "__".join(parts): candidate})
    return _input_has(condition)


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
