"""Rubrics: validating and saving them as versions, totals, routes, previews.

A rubric is criteria (each scored 0–100 by a `score` step, weighted) and
routes (thresholds on the weighted total, highest first, the last at 0 so
every total has a route). Managers edit rubrics in admin; every save goes
through `save_rubric`, which freezes the result as the next immutable
`RubricVersion` and records the save in the audit log, in one transaction. `rescore_preview` shows what a draft would change on the most
recent scores before anyone saves it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.core.validators import validate_slug

from policies.models import Rubric, RubricVersion
from policies.services import _save_versioned

# A route is also the name of the edge a score step takes, so it may not be
# one of the edges the engine gives its own meaning to.
RESERVED_ROUTES = frozenset({"escape", "exhausted", "flagged", "refused", "next"})
EXAMPLES_PER_MOVE = 3
# Totals are rounded so float noise (69.99999999 for a true 70) never
# decides a threshold.
TOTAL_DIGITS = 4


# Validation ------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _slug_problem(value: Any) -> str:
    if not isinstance(value, str) or not value:
        return "is missing"
    try:
        validate_slug(value)
    except ValidationError:
        return f"{value!r} is not a slug (letters, digits, - and _)"
    return ""


def criteria_problems(criteria: Any) -> list[str]:
    """What is wrong with a list of criteria ([] when nothing is)."""
    if not isinstance(criteria, list):
        return ["criteria must be a list of {key, description, weight}"]
    if not criteria:
        return ["add at least one criterion"]
    problems: list[str] = []
    seen: set[str] = set()
    for index, item in enumerate(criteria, start=1):
        where = f"criterion {index}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object with key, description and weight")
            continue
        unknown = sorted(set(item) - {"key", "description", "weight"})
        if unknown:
            problems.append(f"{where}: unknown field {', '.join(unknown)}")
        key = item.get("key")
        problem = _slug_problem(key)
        if problem:
            problems.append(f"{where}: key {problem}")
        elif key in seen:
            problems.append(f"{where}: key {key!r} is used twice")
        else:
            seen.add(cast(str, key))  # a slug: _slug_problem passed it
        description = item.get("description")
        if not isinstance(description, str) or not description.strip():
            problems.append(f"{where}: description is missing (the model is told it)")
        weight = _number(item.get("weight"))
        if weight is None or weight <= 0:
            problems.append(f"{where}: weight must be a number above 0")
    return problems


def routes_problems(routes: Any) -> list[str]:
    """What is wrong with a list of routes ([] when nothing is)."""
    if not isinstance(routes, list) or not routes:
        return ["routes must be a non-empty list of {min, route}"]
    problems: list[str] = []
    names: set[str] = set()
    mins: list[float] = []
    for index, item in enumerate(routes, start=1):
        where = f"route {index}"
        if not isinstance(item, dict):
            problems.append(f"{where}: must be an object with min and route")
            continue
        unknown = sorted(set(item) - {"min", "route"})
        if unknown:
            problems.append(f"{where}: unknown field {', '.join(unknown)}")
        name = item.get("route")
        problem = _slug_problem(name)
        if problem:
            problems.append(f"{where}: route {problem}")
        elif name in RESERVED_ROUTES:
            problems.append(f"{where}: {name!r} is reserved for the engine's own edges")
        elif name in names:
            problems.append(f"{where}: route {name!r} is named twice")
        else:
            names.add(cast(str, name))  # a slug: _slug_problem passed it
        low = _number(item.get("min"))
        if low is None or not 0 <= low <= 100:
            problems.append(f"{where}: min must be a number from 0 to 100")
        else:
            mins.append(low)
    if len(mins) == len(routes):
        if any(a <= b for a, b in zip(mins, mins[1:], strict=False)):
            problems.append("routes must be sorted by min, highest first, each min different")
        if mins[-1] != 0:
            problems.append("the last route's min must be 0, so every total has a route")
    return problems


def validate_rubric(*, criteria: Any, routes: Any) -> None:
    """Raise a ValidationError naming `criteria` and/or `routes`."""
    errors = {}
    if problems := criteria_problems(criteria):
        errors["criteria"] = problems
    if problems := routes_problems(routes):
        errors["routes"] = problems
    if errors:
        raise ValidationError(errors)


def sort_routes(routes: Any) -> Any:
    """Routes ordered highest min first (left as they are if malformed)."""
    try:
        return sorted(routes, key=lambda r: -float(r["min"]))
    except (TypeError, KeyError, ValueError):
        return routes


def save_rubric(*, rubric: Rubric, by: str = "", actor: str = "system") -> RubricVersion:
    """Validate, save and freeze the rubric as its next version.

    Raises ValidationError naming `criteria`, `routes` or `name`. The save
    is audited as `rubric.saved` by `actor` (`policies.audit.actor_of`),
    with the version number and what changed, in the same transaction; `by`
    (a username) is kept on the version.
    """
    rubric.routes = sort_routes(rubric.routes)
    validate_rubric(criteria=rubric.criteria, routes=rubric.routes)
    rubric.full_clean(exclude=["criteria", "routes"])
    return _save_versioned(rubric, RubricVersion, "rubric", by, actor)


def latest_version(slug: str) -> RubricVersion | None:
    """The version a score step uses now: the rubric's newest."""
    return (
        RubricVersion.objects.filter(rubric__name=slug)
        .order_by("-number")
        .select_related("rubric")
        .first()
    )


# Totals and routes -------------------------------------------------------------


def total_for(snapshot: dict[str, Any], criteria_scores: dict[str, Any]) -> float:
    """The weighted mean of the criterion scores, 0–100. A criterion without
    a score counts as 0; scores are clamped to 0–100."""
    weights = {c["key"]: float(c["weight"]) for c in snapshot["criteria"]}
    total = sum(
        weight * min(100.0, max(0.0, _number(criteria_scores.get(key)) or 0.0))
        for key, weight in weights.items()
    )
    return round(total / sum(weights.values()), TOTAL_DIGITS)


def route_for(snapshot: dict[str, Any], total: float) -> str:
    """The first route (highest min first) whose min the total reaches."""
    for route in snapshot["routes"]:
        if total >= float(route["min"]):
            return route["route"]
    # Unreachable for a validated rubric (its last min is 0, totals are >= 0).
    return snapshot["routes"][-1]["route"]


def route_names(snapshot: dict[str, Any]) -> list[str]:
    return [route["route"] for route in snapshot["routes"]]


# Re-score preview ---------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    subject: str
    run_id: int
    old_total: float
    old_route: str
    new_total: float
    new_route: str


@dataclass
class Move:
    from_route: str
    to_route: str
    count: int = 0
    examples: list[Example] = field(default_factory=list)


@dataclass
class Preview:
    """What a draft rubric would change on the most recent scores.

    `matrix[from][to]` counts scores by recorded route and new route (the
    diagonal is the unchanged ones); `moves` lists the off-diagonal cells,
    largest first, with a few examples each; `missing[key]` counts scores
    that have no recorded value for a criterion the draft adds (counted 0).
    """

    scanned: int
    unchanged: int
    moved: int
    from_routes: list[str]
    to_routes: list[str]
    matrix: dict[str, dict[str, int]]
    moves: list[Move]
    missing: dict[str, int]

    def rows(self) -> list[tuple[str, list[tuple[str, int]]]]:
        """The matrix as table rows: (recorded route, [(new route, count)])."""
        return [
            (old, [(new, self.matrix.get(old, {}).get(new, 0)) for new in self.to_routes])
            for old in self.from_routes
        ]


def rescore_preview(*, rubric: Rubric, criteria: Any, routes: Any, limit: int = 500) -> Preview:
    """Apply a draft (unsaved) rubric to the `limit` most recent scores of
    any version of `rubric`, from their recorded criterion scores. Nothing
    is saved and no model is asked. Raises ValidationError for a bad draft.
    """
    from runs.models import Score

    routes = sort_routes(routes)
    validate_rubric(criteria=criteria, routes=routes)
    draft = {"name": rubric.name, "criteria": criteria, "routes": routes}
    rows = (
        # Live runs' scores only: a sandbox run's subject is a rerun, not news.
        Score.objects.filter(rubric_version__rubric_id=rubric.pk, run__mode="live")
        .order_by("-created_at", "-id")
        .values("run_id", "subject", "criteria", "total", "route")[:limit]
        if rubric.pk
        else []
    )
    matrix: dict[str, Counter] = {}
    moves: dict[tuple[str, str], Move] = {}
    missing: Counter = Counter()
    scanned = unchanged = 0
    for row in rows:
        scanned += 1
        recorded = row["criteria"] if isinstance(row["criteria"], dict) else {}
        missing.update(c["key"] for c in criteria if _number(recorded.get(c["key"])) is None)
        new_total = total_for(draft, recorded)
        new_route = route_for(draft, new_total)
        matrix.setdefault(row["route"], Counter())[new_route] += 1
        if new_route == row["route"]:
            unchanged += 1
            continue
        move = moves.setdefault((row["route"], new_route), Move(row["route"], new_route))
        move.count += 1
        if len(move.examples) < EXAMPLES_PER_MOVE:
            move.examples.append(
                Example(
                    subject=row["subject"],
                    run_id=row["run_id"],
                    old_total=row["total"],
                    old_route=row["route"],
                    new_total=new_total,
                    new_route=new_route,
                )
            )
    new_names = route_names(draft)
    saved = route_names(rubric.snapshot()) if isinstance(rubric.routes, list) else []
    old_names = _ordered([*saved, *new_names], matrix)
    return Preview(
        scanned=scanned,
        unchanged=unchanged,
        moved=scanned - unchanged,
        from_routes=old_names,
        to_routes=new_names,
        matrix={old: dict(counts) for old, counts in matrix.items()},
        moves=sorted(moves.values(), key=lambda m: (-m.count, m.from_route, m.to_route)),
        missing=dict(missing),
    )


def _ordered(known: list[str], matrix: dict[str, Counter]) -> list[str]:
    """Recorded routes in a stable order: known ones first, then any other
    route old scores took (a route since removed), alphabetically."""
    names = list(dict.fromkeys(known))
    return [n for n in names if n in matrix] + sorted(set(matrix) - set(names))
