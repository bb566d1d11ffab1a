"""The weekly sample review: a random, stratified sample of finished runs.

Each ISO week, each workflow's runs that finished that week (replays
excluded: they are tests of a version, not work) are split into strata by
outcome (the `end` step's label for a succeeded run, else the status) and,
where the run was scored, by the score's route (`runs.models.Score`; the
last score of the run). The sample is allocated to strata in proportion to
their size, by largest remainders, with at least one run from every
non-empty stratum; when there are more strata than places, the largest
strata get one each. Within a stratum runs are drawn at random from a seed
stored with the sample, so a draw can be repeated and checked.

One sample per (workflow, week): the database's unique constraint decides
which of two concurrent draws creates it; the other returns that one.
"""

from __future__ import annotations

import math
import random
import re
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from approvals.models import ReplaySet, SampleItem, SampleReview, SampleVerdict
from lib.errors import InvalidInput, InvalidState
from runs.models import TERMINAL_STATUSES, Run, RunMode, RunStatus, Score, Workflow

DEFAULT_SIZE = 20
CATEGORIES = (
    ("wrong_decision", "Wrong decision"),
    ("factual_error", "Factual error"),
    ("tone", "Tone or style"),
    ("policy", "Policy breach"),
    ("missed_review", "Should have gone to review"),
    ("other", "Other"),
)
_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")


@dataclass(frozen=True)
class Candidate:
    run_id: int
    stratum: str


def week_bounds(week: str) -> tuple[datetime, datetime]:
    """'2026-W47' → [its Monday 00:00 UTC, the next Monday). ValueError if
    the text is not an ISO week that exists."""
    match = _WEEK.match(week)
    if not match:
        raise ValueError(f"an ISO week looks like 2026-W47, got {week!r}")
    try:
        monday = date.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ValueError(f"there is no week {week}") from None
    start = datetime(monday.year, monday.month, monday.day, tzinfo=UTC)
    return start, start + timedelta(days=7)


def week_of(moment: datetime) -> str:
    year, number, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{number:02d}"


def last_full_week(now: datetime | None = None) -> str:
    """The most recent week that has ended: the one a weekly review samples."""
    return week_of((now or timezone.now()) - timedelta(days=7))


def candidates(*, workflow: Workflow, week: str) -> list[Candidate]:
    """The workflow's runs that finished in `week`, each with its stratum."""
    start, end = week_bounds(week)
    finished = Run.objects.filter(
        workflow=workflow,
        status__in=TERMINAL_STATUSES,
        finished_at__gte=start,
        finished_at__lt=end,
        replay_of__isnull=True,
        mode=RunMode.LIVE,  # a sandbox run decided nothing to review
    )
    routes: dict[int, str] = {}
    scores = Score.objects.filter(run__in=finished).order_by("run_id", "seq")
    for run_id, route in scores.values_list("run_id", "route"):
        routes[run_id] = route  # the last score of a run wins
    rows = finished.order_by("pk").values_list("pk", "status", "outcome")
    return [
        Candidate(pk, stratum_of(status, outcome, routes.get(pk))) for pk, status, outcome in rows
    ]


def stratum_of(status: str, outcome: str, route: str | None) -> str:
    label = (outcome or status) if status == RunStatus.SUCCEEDED else status
    return f"{label} / {route}"[:120] if route else label[:120]


def allocate(sizes: dict[str, int], size: int) -> dict[str, int]:
    """Places per stratum: proportional (largest remainders), at least one
    per non-empty stratum, never more than a stratum holds, `size` in all
    (or everything, if there is less). Deterministic: ties go by name."""
    sizes = {name: n for name, n in sizes.items() if n > 0}
    total = sum(sizes.values())
    if total <= size:
        return dict(sizes)
    by_size = sorted(sizes, key=lambda name: (-sizes[name], name))
    if len(sizes) >= size:
        return {name: 1 for name in by_size[:size]}
    quota = {name: sizes[name] * size / total for name in sizes}
    places = {name: min(sizes[name], max(1, math.floor(quota[name]))) for name in sizes}
    # `max` keeps the first of equals, and names are sorted: ties go by name.
    names = sorted(sizes)
    while sum(places.values()) < size:
        open_ = [name for name in names if places[name] < sizes[name]]
        places[max(open_, key=lambda name: quota[name] - places[name])] += 1
    while sum(places.values()) > size:
        spare = [name for name in names if places[name] > 1]
        places[max(spare, key=lambda name: places[name] - quota[name])] -= 1
    return places


def plan_sample(pool: list[Candidate], *, size: int, seed: str) -> list[Candidate]:
    """Which candidates the sample takes. The same pool, size and seed give
    the same sample, whatever order the pool came in."""
    strata: dict[str, list[int]] = defaultdict(list)
    for candidate in pool:
        strata[candidate.stratum].append(candidate.run_id)
    places = allocate({name: len(ids) for name, ids in strata.items()}, size)
    rng = random.Random(seed)  # a str seed is hashed by SHA-512: stable across processes
    chosen = []
    for name in sorted(places):
        for run_id in sorted(rng.sample(sorted(strata[name]), places[name])):
            chosen.append(Candidate(run_id, name))
    return chosen


def draw_sample(
    *, workflow: Workflow, week: str, size: int = DEFAULT_SIZE, seed: str | None = None
) -> tuple[SampleReview, bool]:
    """Draw the week's sample of a workflow's runs, or return the one drawn
    before. Returns (sample, created)."""
    if size < 1:
        raise InvalidInput({"size": "must be at least 1"})
    existing = SampleReview.objects.filter(workflow=workflow, week=week).first()
    if existing is not None:
        return existing, False
    seed = seed or secrets.token_hex(8)
    chosen = plan_sample(candidates(workflow=workflow, week=week), size=size, seed=seed)
    try:
        with transaction.atomic():
            # The unique (workflow, week) constraint, not the look-up above,
            # keeps two concurrent draws from making two samples.
            review = SampleReview.objects.create(workflow=workflow, week=week, size=size, seed=seed)
            SampleItem.objects.bulk_create(
                SampleItem(review=review, run_id=c.run_id, stratum=c.stratum) for c in chosen
            )
    except IntegrityError:
        return SampleReview.objects.get(workflow=workflow, week=week), False
    return review, True


def draw_week(
    *, week: str, size: int = DEFAULT_SIZE, seed: str | None = None, workflow: str = ""
) -> list[tuple[SampleReview, bool]]:
    """Draw `week`'s sample for every workflow with runs that finished in it
    (or only for the workflow with slug `workflow`)."""
    start, end = week_bounds(week)
    workflows = Workflow.objects.filter(
        runs__status__in=TERMINAL_STATUSES,
        runs__finished_at__gte=start,
        runs__finished_at__lt=end,
    ).distinct()
    if workflow:
        workflows = workflows.filter(slug=workflow)
    return [
        draw_sample(workflow=w, week=week, size=size, seed=seed) for w in workflows.order_by("slug")
    ]


def review_item(
    *, item_id: int, verdict: str, category: str = "", note: str = "", by=None
) -> SampleItem:
    """Record a reviewer's verdict on one sampled run (a later verdict
    replaces an earlier one). A flagged run needs a category."""
    if verdict not in (SampleVerdict.OK, SampleVerdict.FLAGGED):
        raise InvalidInput({"verdict": "must be ok or flagged"})
    if verdict == SampleVerdict.FLAGGED and category not in dict(CATEGORIES):
        raise InvalidInput({"category": "a flagged run needs one of the categories"})
    updated = SampleItem.objects.filter(pk=item_id).update(
        verdict=verdict,
        category=category if verdict == SampleVerdict.FLAGGED else "",
        note=note,
        reviewed_by=by if getattr(by, "pk", None) else None,
        reviewed_at=timezone.now(),
    )
    if not updated:
        raise InvalidState(f"no sample item {item_id}")
    return SampleItem.objects.get(pk=item_id)


def add_flagged_to_replay_set(*, review: SampleReview, name: str) -> tuple[ReplaySet, int]:
    """Put the sample's flagged runs in the replay set `name` (created for
    the sample's workflow if new). Returns (set, runs newly added)."""
    replay_set, _ = ReplaySet.objects.get_or_create(
        name=name, defaults={"workflow_id": review.workflow_id}
    )
    if replay_set.workflow_id != review.workflow_id:
        raise InvalidInput({"name": f"replay set {name} belongs to another workflow"})
    flagged = set(
        review.items.filter(verdict=SampleVerdict.FLAGGED).values_list("run_id", flat=True)
    )
    present = set(replay_set.runs.filter(pk__in=flagged).values_list("pk", flat=True))
    replay_set.runs.add(*flagged)
    return replay_set, len(flagged - present)


def flagged_rates(*, by: str) -> list[dict]:
    """Reviewed and flagged counts and the flagged rate, per `by`: "week"
    or "version" (workflow version of the run). Unreviewed items don't count."""
    keys = {
        "week": ("review__week",),
        "version": ("run__workflow__name", "run__version__number"),
    }[by]
    rows = (
        SampleItem.objects.exclude(verdict=SampleVerdict.PENDING)
        .values(*keys)
        .annotate(
            reviewed=Count("id"), flagged=Count("id", filter=Q(verdict=SampleVerdict.FLAGGED))
        )
        .order_by(*(f"-{key}" if key == "review__week" else key for key in keys))
    )
    return [{**row, "rate": row["flagged"] / row["reviewed"]} for row in rows]
