"""Workflow definitions: validation at publish, and the frozen snapshot.

`publish_workflow` validates the draft and freezes it into an immutable
`WorkflowVersion`. Validation names the step of every problem it finds:
edges that land nowhere, unreachable steps, configs that break their kind's
model, steps that can never reach an end, and cycles without a bound.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, cast

import jsonschema
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils.module_loading import import_string
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lib.conditions import Condition
from policies import audit
from runs.engine import rollout
from runs.engine.errors import PublishError
from runs.engine.kinds import Kind, StrictConfig
from runs.engine.registry import KINDS
from runs.engine.timing import queue_task_s, step_room_s
from runs.models import Workflow, WorkflowVersion

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser, User


@dataclass(frozen=True)
class StepDef:
    key: str
    kind: Kind[Any]
    config: StrictConfig
    edges: dict[str, str]
    max_attempts: int
    backoff_base_s: float
    backoff_cap_s: float
    timeout_s: float
    max_visits: int
    cache_ttl_s: int = 0
    output_checks: tuple[OutputCheck, ...] = ()


class OutputCheck(BaseModel):
    """A condition on a step's output that, when it holds, flags the output
    for review: the step takes its `flagged` edge and records the name."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=60, pattern=r"^[a-z0-9_.-]+$")
    when: Condition


@dataclass(frozen=True)
class Definition:
    entry: str
    steps: dict[str, StepDef]
    workflow: str = ""
    input_schema: dict[str, Any] | None = None
    sensitive_fields: tuple[str, ...] = ()
    untrusted_fields: tuple[str, ...] = ()
    version: int = 0  # the WorkflowVersion's number, once loaded


def snapshot(workflow: Workflow) -> dict[str, Any]:
    """The draft as plain data, in the shape a version stores."""
    return {
        "workflow": workflow.slug,
        "entry": workflow.entry_step,
        "input_schema": workflow.input_schema,
        "sensitive_fields": list(workflow.sensitive_fields or []),
        "untrusted_fields": list(workflow.untrusted_fields or []),
        "steps": {
            step.key: {
                "kind": step.kind,
                "config": step.config,
                "edges": step.edges,
                "max_attempts": step.max_attempts,
                "backoff_base_s": step.backoff_base_s,
                "backoff_cap_s": step.backoff_cap_s,
                "timeout_s": step.timeout_s,
                "max_visits": step.max_visits,
                "cache_ttl_s": step.cache_ttl_s,
                "output_checks": step.output_checks or [],
            }
            for step in workflow.steps.order_by("position", "id")
        },
    }


def parse_definition(data: dict[str, Any]) -> tuple[Definition | None, list[str]]:
    """Parse and validate a snapshot. Returns (definition, problems)."""
    problems: list[str] = []
    steps: dict[str, StepDef] = {}
    raw_steps = data.get("steps") or {}
    if not raw_steps:
        return None, ["the workflow has no steps"]
    entry = data.get("entry", "")
    if entry not in raw_steps:
        problems.append(f"the entry step {entry!r} is not a step of this workflow")
    for key, raw in raw_steps.items():
        step, step_problems = _parse_step(key, raw, raw_steps)
        problems.extend(step_problems)
        if step is not None:
            steps[key] = step
    problems.extend(_workflow_problems(data))
    if problems:
        return None, problems
    definition = Definition(
        entry=entry,
        steps=steps,
        workflow=data.get("workflow", ""),
        input_schema=data.get("input_schema"),
        sensitive_fields=tuple(data.get("sensitive_fields") or ()),
        untrusted_fields=tuple(data.get("untrusted_fields") or ()),
    )
    problems.extend(_graph_problems(definition))
    return (None, problems) if problems else (definition, [])


def _parse_step(
    key: str, raw: dict[str, Any], all_steps: dict[str, Any]
) -> tuple[StepDef | None, list[str]]:
    where = f"step {key!r}"
    kind = KINDS.get(raw.get("kind", ""))
    if kind is None:
        return None, [f"{where}: unknown kind {raw.get('kind')!r}"]
    where = f"step {key!r} ({kind.name})"
    try:
        config = kind.Config.model_validate(raw.get("config") or {})
    except ValidationError as exc:
        return None, [
            f"{where}: config.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        ]
    problems = [f"{where}: {problem}" for problem in kind.check(config)]
    edges = raw.get("edges") or {}
    if not isinstance(edges, dict):
        return None, [f"{where}: edges must be an object of label -> step key"]
    required, optional = kind.edge_labels(config)
    checks, check_problems = _parse_checks(raw.get("output_checks") or [])
    problems.extend(f"{where}: {problem}" for problem in check_problems)
    if checks:
        required = required | {"flagged"}
    for label in sorted(required - set(edges)):
        problems.append(f"{where}: edge {label!r} is missing")
    for label, target in edges.items():
        if label not in required | optional | {"exhausted"}:
            problems.append(f"{where}: edge {label!r} is not an outcome of a {kind.name} step")
        elif target not in all_steps:
            problems.append(f"{where}: edge {label!r} leads to {target!r}, which is not a step")
    numbers = {k: raw.get(k) for k in ("max_attempts", "max_visits", "timeout_s", "backoff_base_s")}
    if not isinstance(numbers["max_attempts"], int) or numbers["max_attempts"] < 1:
        problems.append(f"{where}: max_attempts must be at least 1")
    if not isinstance(numbers["max_visits"], int) or numbers["max_visits"] < 1:
        problems.append(f"{where}: max_visits must be at least 1")
    if not raw.get("timeout_s") or raw["timeout_s"] <= 0:
        problems.append(f"{where}: timeout_s must be positive")
    if raw.get("backoff_base_s", 0) < 0 or raw.get("backoff_cap_s", 0) < raw.get(
        "backoff_base_s", 0
    ):
        problems.append(f"{where}: backoff needs 0 <= base <= cap")
    cache_ttl_s = raw.get("cache_ttl_s") or 0
    if not problems and cache_ttl_s and not kind.cacheable(config):
        problems.append(
            f"{where}: only llm steps and read-only tools can be cached "
            "(a cached write would skip its side effect)"
        )
    if problems:
        return None, problems
    return (
        StepDef(
            key=key,
            kind=kind,
            config=config,
            edges=dict(edges),
            max_attempts=raw["max_attempts"],
            backoff_base_s=float(raw["backoff_base_s"]),
            backoff_cap_s=float(raw["backoff_cap_s"]),
            timeout_s=float(raw["timeout_s"]),
            max_visits=raw["max_visits"],
            cache_ttl_s=int(cache_ttl_s),
            output_checks=checks,
        ),
        [],
    )


def _parse_checks(raw: Any) -> tuple[tuple[OutputCheck, ...], list[str]]:
    if not isinstance(raw, list):
        return (), ["output_checks must be a list"]
    checks, problems = [], []
    for index, item in enumerate(raw):
        try:
            checks.append(OutputCheck.model_validate(item))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(check)"
            problems.append(f"output check {index + 1}: {where}: {err['msg']}")
    names = [check.name for check in checks]
    if len(set(names)) != len(names):
        problems.append("output check names must be unique")
    return tuple(checks), problems


def _workflow_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    schema = data.get("input_schema")
    if schema is not None:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            problems.append(f"input_schema is not a valid JSON Schema: {exc.message}")
    for name in ("sensitive_fields", "untrusted_fields"):
        fields = data.get(name) or []
        if not isinstance(fields, list) or not all(isinstance(f, str) and f for f in fields):
            problems.append(f"{name} must be a list of field names")
    return problems


def _graph_problems(definition: Definition) -> list[str]:
    steps = definition.steps
    successors = {key: set(step.edges.values()) for key, step in steps.items()}
    problems: list[str] = []

    reachable = _closure({definition.entry}, successors)
    for key in steps:
        if key not in reachable:
            problems.append(
                f"step {key!r} is not reachable from the entry step {definition.entry!r}"
            )

    predecessors: dict[str, set[str]] = {key: set() for key in steps}
    for key, targets in successors.items():
        for target in targets:
            predecessors[target].add(key)
    ends = {key for key, step in steps.items() if step.kind.name == "end"}
    can_finish = _closure(ends, predecessors)
    for key in steps:
        if key in reachable and key not in can_finish:
            problems.append(f"step {key!r} can never reach an end step")

    for key, step in steps.items():
        named = getattr(step.config, "approved_by", "")
        if not named:
            continue
        if named not in steps or steps[named].kind.name != "approval":
            problems.append(f"step {key!r}: approved_by {named!r} is not an approval step")
        elif key not in _closure({named}, successors):
            problems.append(f"step {key!r}: approved_by {named!r} does not come before it")

    for component in _cycles(successors):
        if all(steps[key].max_visits <= 1 for key in component):
            path = " -> ".join(sorted(component))
            problems.append(
                f"steps {path} form a loop with no bound: set max_visits above 1 on one of "
                "them (the run takes its 'exhausted' edge, or fails, when the bound is hit)"
            )
    return problems


def _closure(start: set[str], graph: dict[str, set[str]]) -> set[str]:
    seen, stack = set(start), list(start)
    while stack:
        for nxt in graph.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components that contain a cycle (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(component)

    for node in graph:
        if node not in index:
            visit(node)
    return found


def validate_workflow(*, workflow: Workflow) -> list[str]:
    """Every problem that would stop `workflow` from being published."""
    definition, problems = parse_definition(snapshot(workflow))
    return problems + _live_problems(definition)


def problems_by_step(problems: list[str], keys: Iterable[str]) -> dict[str, list[str]]:
    """Publish's problems grouped by the step each concerns ("" for the
    workflow as a whole; a loop's problem under each of its steps).

    Every message about a step starts with `step '<key>'`, as written above
    (`_parse_step`'s `where`, `_graph_problems`, `_live_problems`), and a
    loop's lists its steps as `steps a -> b form a loop`; the messages stay
    exactly what Publish reports."""
    keys = list(keys)
    grouped: dict[str, list[str]] = {}
    for problem in problems:
        found = [key for key in keys if problem.startswith(f"step {key!r}")]
        loop = re.match(r"steps (.+?) form a loop", problem)
        if loop:
            members = loop.group(1).split(" -> ")
            found = [key for key in keys if key in members]
        for key in found or [""]:
            grouped.setdefault(key, []).append(problem)
    return grouped


def validate_draft(data: dict[str, Any]) -> list[str]:
    """Every problem of a snapshot (saved or not) that would stop Publish."""
    definition, problems = parse_definition(data)
    return problems + _live_problems(definition)


def _live_problems(definition: Definition | None) -> list[str]:
    """Checks against data that changes after publish (a rubric's current
    routes, the queue's task timeout): made when publishing, never when a
    published version loads, so a manager adding a route does not break
    versions already running (a step the queue has since become too short
    for fails when it is reached, without starting: worker._too_long)."""
    if definition is None:
        return []
    task_s = queue_task_s()
    room = None if task_s is None else step_room_s(task_s)
    return [
        f"step {step.key!r} ({step.kind.name}): {problem}"
        for step in definition.steps.values()
        for problem in [
            *getattr(step.kind, "check_edges", lambda *_: [])(step.config, step.edges),
            *([] if room is None or step.timeout_s <= room else [_too_long(step, room)]),
        ]
    ]


def _too_long(step: StepDef, room: float) -> str:
    return (
        f"timeout_s {step.timeout_s:g} is longer than a worker's task may take ({room:g} s:"
        " BOSUN_TASK_TIMEOUT_S less BOSUN_LEASE_MARGIN_S); the queue would stop the step"
        " first, every time"
    )


def publish_workflow(
    *,
    workflow: Workflow,
    user: AbstractBaseUser | AnonymousUser | None = None,
    actor: str | None = None,
    canary_share: int | None = None,
    reason: str = "",
) -> WorkflowVersion:
    """Validate the draft and freeze it as the next immutable version.

    Without `canary_share` the version goes live: new runs start on it. With
    it, the version starts as a canary taking that share (1–99 %) of new
    runs beside the live version (runs.engine.rollout). Either is refused
    while a canary runs: promote or roll it back first.

    The publish is audited (`workflow.published`, and `rollout.started` for
    a canary) in the same transaction; `actor` defaults to the user's label
    ("system" without one).

    Then the publish checks (`settings.BOSUN_PUBLISH_CHECKS`, dotted paths
    of callables `check(workflow=, checksum=, actor=)`) run in that
    transaction, before the version is made: one raising PublishError
    refuses the publish with its problems (the eval gate, evals.gate).
    Candidate versions (experiments) are not counted in the numbering.
    """
    if rollout.active_rollout(workflow.pk) is not None:
        raise PublishError(["a canary is running: promote or roll it back first"])
    baseline = rollout.live_version(workflow.pk)
    if canary_share is not None and baseline is None:
        raise PublishError(["the first version has nothing to compare with: publish it live"])
    if canary_share is not None and not 1 <= canary_share <= 99:
        raise PublishError(["a canary's share is a whole percentage from 1 to 99"])
    data, checksum = _valid_snapshot(workflow)
    latest = workflow.versions.published().order_by("-number").first()
    if latest is not None and latest.checksum == checksum:
        raise PublishError([f"nothing changed since version {latest.number}"])
    number = (latest.number if latest else 0) + 1
    try:
        with transaction.atomic():
            for check in settings.BOSUN_PUBLISH_CHECKS:
                import_string(check)(
                    workflow=workflow, checksum=checksum, actor=actor or audit.actor_of(user)
                )
            # Two publishers racing get one version number each or an error,
            # never two versions with one number (unique constraint).
            version = WorkflowVersion.objects.create(
                workflow=workflow,
                number=number,
                definition=data,
                checksum=checksum,
                # A saved user is the project's user model (AUTH_USER_MODEL).
                published_by=cast("User | None", user if getattr(user, "pk", None) else None),
            )
            who = actor or audit.actor_of(user)
            audit.record(
                action="workflow.published",
                actor=who,
                target=workflow,
                data={
                    "version": number,
                    "version_id": version.pk,
                    "checksum": checksum,
                    **({"canary_share": canary_share} if canary_share is not None else {}),
                },
            )
            if canary_share is not None:
                assert baseline is not None  # refused above
                rollout.start_canary(
                    workflow=workflow,
                    candidate=version,
                    share_pct=canary_share,
                    actor=who,
                    reason=reason,
                    baseline=baseline,
                )
            else:
                # A pinned live version (after a canary) moves to this one;
                # unpinned, the newest published version is live already.
                Workflow.objects.filter(pk=workflow.pk, live_version__isnull=False).update(
                    live_version=version
                )
            return version
    except IntegrityError:
        raise PublishError([f"version {number} was published concurrently; try again"]) from None


def checksum_of(data: dict[str, Any]) -> str:
    """The checksum of a snapshot: equal snapshots, equal checksums."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def freeze_candidate(*, workflow: Workflow) -> WorkflowVersion:
    """The draft as a candidate version, to be run in experiments and in
    shadow: validated as for publish, never the current version. Every
    candidate is number 0, below any published version, so that nothing
    ordering versions by number takes one for the newest. An unchanged
    draft reuses its candidate. Not audited: nothing goes live."""
    data, checksum = _valid_snapshot(workflow)
    found = workflow.versions.filter(candidate=True, checksum=checksum).order_by("-pk").first()
    if found is not None:
        return found
    return WorkflowVersion.objects.create(
        workflow=workflow,
        number=0,
        definition=data,
        checksum=checksum,
        candidate=True,
    )


def _valid_snapshot(workflow: Workflow) -> tuple[dict[str, Any], str]:
    """The draft's snapshot and its checksum, or PublishError with every
    problem that would stop it running live."""
    data = snapshot(workflow)
    definition, problems = parse_definition(data)
    problems = problems + _live_problems(definition)
    if problems:
        raise PublishError(problems)
    return data, checksum_of(data)


_cache: dict[int, Definition] = {}


def load_definition(version_id: int) -> Definition:
    """The parsed definition of a version; cached forever, as versions are."""
    definition = _cache.get(version_id)
    if definition is None:
        data, number = WorkflowVersion.objects.values_list("definition", "number").get(
            pk=version_id
        )
        definition, problems = parse_definition(data)
        if definition is None:
            raise PublishError(problems)
        definition = replace(definition, version=number)
        _cache[version_id] = definition
    return definition
