"""Demo data: four weeks of inbound leads and support tickets, played through
the engine so that a new console shows runs in every state.

`load_demo()` (what `manage.py load_samples` runs) installs the sample
workflows, pauses outreach to one account ("founder request", until
2027-07-01), then plays the lead stream of `demo.sample_data.leads` (500 a
week for 4 weeks, with the overlap of real lead flow) and a few support
tickets through `runs.engine.advance_run` in this process, a reviewer
deciding the older drafts and refunds. Afterwards each run's timestamps are
moved to when its record arrived, spread over the last four weeks, so the
dashboards have a trend. Nothing waits on the task queue.

What a new user finds:
- succeeded runs with several outcomes (outreach sent, nurture, archive,
  duplicate, paused account, needs company (a free-mail lead), refunded,
  escalated, no refund due, ...);
- drafts and refunds waiting for review (the most recent ones);
- failed, dead-lettered runs: a lead whose website is not a domain (the
  enrichment tool refuses it) and two leads whose enrichment vendor kept
  answering 429 (retry them from their failed step: the vendor is fine now);
- cancelled runs (an erasure request), a run stopped by its wall-time
  budget (it waited out a kill switch), and queued runs the worker picks up.
- an eval set built from the reviewer's decisions and a candidate version
  of lead qualification in shadow, its shadow runs of the newest scored
  leads already played, so the shadow page shows where it decided
  otherwise (demo.evaluation).

Idempotent: every record carries an idempotency key, so a second load starts
nothing and changes nothing.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.db import connection, connections, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.test.utils import override_settings

from approvals.models import ApprovalRequest, ApprovalStatus
from demo.evaluation import ShadowSummary, load_evaluation
from demo.sample_data.leads import PER_WEEK, WEEKS, LeadRecord, lead_stream, ticket_stream
from demo.samples import install_samples
from knowledge import services as knowledge
from knowledge.models import DedupRecord, Event
from runs import engine
from runs.engine.switches import set_switch
from runs.models import (
    Run,
    RunMode,
    RunStatus,
    Score,
    StepCacheEntry,
    StepRun,
    ToolCallRecord,
    Workflow,
    WorkflowVersion,
)

LEADS = "lead-qualification"
REFUNDS = "support-refund"
REVIEWER = "riley (demo reviewer)"
# Drafts and refunds younger than this are left for the user to review.
PENDING_WINDOW = timedelta(hours=36)
PAUSED_UNTIL = datetime(2027, 7, 1, tzinfo=UTC)
REJECTIONS = [
    "Too generic: mention what they actually do.",
    "They are already in an open deal with our sales team.",
    "Wrong contact: route to their RevOps lead instead.",
]


def quiet_bell(run_id: int) -> None:
    """The doorbell while loading: runs are advanced here, not by the queue."""


@dataclass(frozen=True)
class Item:
    """One run to start: which workflow, its input and key, when it arrived,
    and whether to play it now (`drive`) or leave it queued."""

    workflow: str
    key: str
    input: dict[str, Any]
    at: datetime
    shard: str
    drive: bool = True


@dataclass
class DemoReport:
    started: int = 0
    existing: int = 0
    statuses: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    pending_reviews: int = 0
    evaluation: ShadowSummary | None = None

    def lines(self) -> list[str]:
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        outcomes = ", ".join(f"{n} {o}" for o, n in self.outcomes.most_common())
        return [
            f"{self.started} run(s) started, {self.existing} submission(s) answered by an "
            "existing run (retried submissions, or loaded before)",
            f"runs by status: {states}",
            f"outcomes: {outcomes}",
            f"{self.pending_reviews} request(s) waiting for review",
            *([self.evaluation.line()] if self.evaluation else []),
        ]


def load_demo(
    *,
    weeks: int = WEEKS,
    per_week: int = PER_WEEK,
    jobs: int | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> DemoReport:
    """Install the samples and load the demo runs (see the module). `jobs`
    processes play the stream (default: 2 when the database allows it)."""
    install_samples()
    _workflows.clear()  # the versions just installed
    end = knowledge.database_now()
    start = end - timedelta(days=7 * weeks)
    records = lead_stream(weeks=weeks, per_week=per_week)
    pause_account(_paused_company(records), at=start - timedelta(days=7))
    items = _plan(records, weeks=weeks, start=start)
    report = DemoReport()
    quiet = {
        "BOSUN_DOORBELL": "demo.history.quiet_bell",
        "BOSUN_REVIEW_NOTIFIER": "demo.history.quiet_bell",
        "DEBUG": False,  # no query log for thousands of statements
    }
    with override_settings(**quiet):
        played = _play([i for i in items if i.drive], end=end, jobs=_jobs(jobs), log=log)
        report.started, report.existing = played
        report.started += _scenarios(start=start, end=end)
        # Before the queued leads start: the workers give those their shadow run.
        report.evaluation = load_evaluation(
            workflow=Workflow.objects.get(slug=LEADS), drive=drive, backdate=backdate
        )
    for item in (i for i in items if not i.drive):
        # Started with the real doorbell: the worker picks these up.
        if _start(item) is None:
            report.existing += 1
        else:
            report.started += 1
    _summarize(report)
    return report


def _jobs(jobs: int | None) -> int:
    if jobs is not None:
        return max(1, jobs)
    # Forked processes need their own connections to the same data: not
    # possible inside a transaction (tests) or with an in-memory database.
    shared = connection.vendor == "postgresql" or not connection.is_in_memory_db()  # type: ignore[attr-defined]
    if connection.in_atomic_block or not shared:
        return 1
    return max(1, min(2, os.cpu_count() or 1))


# Planning ------------------------------------------------------------------------


def _paused_company(records: list[LeadRecord]) -> tuple[str, str]:
    """The account that asked not to be contacted: the company with the most
    records (the first such), so the pause holds several leads."""
    counts = Counter(r.company for r in records)
    top = max(counts.values())
    domain = next(r.company for r in records if counts[r.company] == top)
    # Named as its first source spelled it (later ones vary the casing).
    name = next(r.input["company"] for r in records if r.company == domain and r.kind == "new")
    return domain, name


def pause_account(company: tuple[str, str], *, at: datetime) -> Event:
    """`outreach.paused` for the account (once): the founder asked us to
    circle back in summer 2027."""
    domain, name = company
    entity = knowledge.upsert_entity(type="account", key=domain, name=name)
    existing = Event.objects.filter(
        entity=entity, type__name="outreach.paused", actor_label="demo"
    ).first()
    if existing is not None:
        return existing
    return knowledge.record_event(
        entity=entity,
        type="outreach.paused",
        payload={"until": PAUSED_UNTIL.date().isoformat(), "requested_by": "founder"},
        reason="founder request",
        actor_label="demo",
        occurred_at=at,
        valid_from=at,
        valid_until=PAUSED_UNTIL,
    )


def _plan(records: list[LeadRecord], *, weeks: int, start: datetime) -> list[Item]:
    """Every lead and ticket in arrival order; the last three leads and the
    last ticket arrive "now" and stay queued for the worker."""
    items = [
        Item(LEADS, r.key, r.input, start + timedelta(days=r.day), shard=r.company) for r in records
    ]
    items += [
        Item(
            REFUNDS,
            f"ticket:{t.ticket_id}",
            {"ticket_id": t.ticket_id},
            start + timedelta(days=t.day),
            shard=t.ticket_id,
        )
        for t in ticket_stream(weeks=weeks, per_week=max(3, len(records) // weeks // 25))
    ]
    items.sort(key=lambda i: i.at)
    leads = [n for n, i in enumerate(items) if i.workflow == LEADS]
    tickets = [n for n, i in enumerate(items) if i.workflow == REFUNDS]
    for n in leads[-3:] + tickets[-1:]:
        items[n] = Item(**{**items[n].__dict__, "drive": False})
    return items


def _shard_of(item: Item, jobs: int) -> int:
    # One company's records stay in one process, in arrival order.
    return int(hashlib.sha256(item.shard.encode()).hexdigest()[:8], 16) % jobs


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


# Playing --------------------------------------------------------------------------


def _play(items: list[Item], *, end: datetime, jobs: int, log) -> tuple[int, int]:
    shards: list[list[Item]] = [[] for _ in range(jobs)]
    for item in items:
        shards[_shard_of(item, jobs)].append(item)
    log(f"playing {len(items)} records in {jobs} process(es)")
    if jobs == 1:
        results = [_play_shard(shards[0], end)]
    else:
        # Children inherit settings and caches but must open their own
        # connections: close ours before forking.
        connections.close_all()
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.starmap(_play_shard_in_child, [(shard, end) for shard in shards])
    return sum(r[0] for r in results), sum(r[1] for r in results)


def _play_shard_in_child(items: list[Item], end: datetime) -> tuple[int, int]:
    try:
        return _play_shard(items, end)
    finally:
        connections.close_all()


def _play_shard(items: list[Item], end: datetime) -> tuple[int, int]:
    started = existing = 0
    moved: list[tuple[int, datetime, timedelta | None]] = []
    for item in items:
        run_id = _start(item)
        if run_id is None:
            existing += 1
            continue
        started += 1
        moved.append((run_id, item.at, _settle(run_id, item, end)))
    for batch in range(0, len(moved), 200):
        with transaction.atomic():
            for run_id, at, delay in moved[batch : batch + 200]:
                backdate(run_id, at=at, review_delay=delay)
    return started, existing


_workflows: dict[str, tuple[Workflow, WorkflowVersion | None]] = {}


def _start(item: Item) -> int | None:
    """The new run's id, or None when the key was already used."""
    if item.workflow not in _workflows:  # looked up once, not per run
        workflow = Workflow.objects.select_related("role", "policy").get(slug=item.workflow)
        _workflows[item.workflow] = (workflow, workflow.current_version)
    workflow, version = _workflows[item.workflow]
    started = engine.start_run(
        workflow=workflow, version=version, input=item.input, idempotency_key=item.key
    )
    return started.run.pk if started.created else None


def drive(run_id: int, *, limit: int = 60) -> Run:
    """Advance a run until nobody can claim it (it waits or it ended)."""
    for _ in range(limit):
        if engine.advance_run(run_id) is engine.Advance.NOT_CLAIMED:
            break
    return Run.objects.get(pk=run_id)


def _settle(run_id: int, item: Item, end: datetime) -> timedelta | None:
    """Play the run; a reviewer decides its requests unless they are recent.
    Returns how long the reviewer took (None: nobody decided)."""
    delay = None
    for _ in range(3):  # a run may ask twice: the draft, then a tool call
        run = drive(run_id)
        pending = _pending(run)
        if pending is None or item.at > end - PENDING_WINDOW:
            return delay
        decide(pending, key=item.key)
        delay = timedelta(hours=0.5 + _hash(item.key) % 20)
    return delay


def _pending(run: Run) -> ApprovalRequest | None:
    if run.status != RunStatus.WAITING or run.wait_reason != "approval":
        return None
    return run.approvals.filter(status=ApprovalStatus.PENDING).order_by("-seq").first()


def decide(request: ApprovalRequest, *, key: str) -> None:
    """The demo reviewer's decision, deterministic per record."""
    roll = _hash(f"{key}:{request.seq}") % 100
    if request.run.taint_signals:
        reason = "The text tries to instruct the agent; handled by hand instead."
        engine.decide_approval(
            approval_id=request.pk, approve=False, actor_label=REVIEWER, reason=reason
        )
        return
    if request.kind == "tool_call":
        if roll < 15:
            reason = "Already refunded through a card chargeback."
            engine.decide_approval(
                approval_id=request.pk, approve=False, actor_label=REVIEWER, reason=reason
            )
        else:
            engine.decide_approval(approval_id=request.pk, approve=True, actor_label=REVIEWER)
        return
    if roll < 7:
        reason = REJECTIONS[roll % len(REJECTIONS)]
        engine.decide_approval(
            approval_id=request.pk, approve=False, actor_label=REVIEWER, reason=reason
        )
    elif roll < 20 and isinstance(request.draft, dict) and "subject" in request.draft:
        edited = {**request.draft, "subject": "Quick question about your inbound leads"}
        engine.decide_approval(
            approval_id=request.pk, approve=True, actor_label=REVIEWER, edited_draft=edited
        )
    else:
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label=REVIEWER)


# Moving timestamps ------------------------------------------------------------------


# The recorded times each model's rows carry (timers about the future, such
# as leases and ring times, are not history and are left alone).
_TIMES = {
    Run: ("created_at", "started_at", "wall_from", "finished_at", "dead_lettered_at"),
    StepRun: ("started_at", "finished_at"),
    ApprovalRequest: (
        "created_at",
        "decided_at",
        "consumed_at",
        "due_at",
        "timeout_after",
        "notified_at",
        "breached_at",
    ),
    ToolCallRecord: ("started_at", "finished_at"),
    Score: ("created_at",),
    Event: ("occurred_at", "valid_from", "recorded_at"),
    DedupRecord: ("first_seen_at", "expires_at"),
    StepCacheEntry: ("created_at", "expires_at"),
}


def backdate(run_id: int, *, at: datetime, review_delay: timedelta | None = None) -> None:
    """Move everything the run wrote so that it was created at `at`; with a
    `review_delay`, what happened after the first decision moves that much
    later. Demo history only: the engine never rewrites what it recorded."""
    created = Run.objects.values_list("created_at", flat=True).get(pk=run_id)
    offset = at - created
    rows = {
        Run: Run.objects.filter(pk=run_id),
        StepRun: StepRun.objects.filter(run_id=run_id),
        ApprovalRequest: ApprovalRequest.objects.filter(run_id=run_id),
        ToolCallRecord: ToolCallRecord.objects.filter(run_id=run_id),
        Score: Score.objects.filter(run_id=run_id),
        Event: Event.objects.filter(source_run_id=run_id),
        DedupRecord: DedupRecord.objects.filter(run_id=run_id),
        StepCacheEntry: StepCacheEntry.objects.filter(source_run_id=run_id),
    }
    for model, queryset in rows.items():
        _shift(queryset, offset, _TIMES[model])
    decided = rows[ApprovalRequest].exclude(decided_at=None)
    first = decided.order_by("seq").values_list("seq", flat=True).first()
    if review_delay is None or first is None:
        return
    _shift(rows[Run], review_delay, ("finished_at",))
    _shift(decided, review_delay, ("decided_at",))
    _shift(rows[StepRun].filter(seq__gte=first), review_delay, _TIMES[StepRun])
    _shift(rows[ToolCallRecord].filter(seq__gte=first), review_delay, _TIMES[ToolCallRecord])
    _shift(rows[Event].filter(source_seq__gte=first), review_delay, _TIMES[Event])


def _shift(queryset, offset: timedelta, names: tuple[str, ...]) -> None:
    # NULLs stay NULL: NULL plus an interval is NULL.
    queryset.update(**{name: F(name) + offset for name in names})


# Scenarios ----------------------------------------------------------------------------


def _lead(company: str, domain: str, first: str, title: str, **extra: Any) -> dict[str, Any]:
    return {
        "company": company,
        "email": f"{first.lower()}@{domain}",
        "website": f"https://{domain}",
        "first_name": first,
        "title": title,
        "source": "webform",
        **extra,
    }


def _scenarios(*, start: datetime, end: datetime) -> int:
    """Runs in the states the stream alone does not reach. Each happens only
    when its run is new (a second load finds the keys taken)."""
    website = "http://localhost:8080/form"  # a local test form: enrichment refuses it
    invalid = _lead("Test Company", "example.net", "Tess", "QA", website=website)
    created = _scenario(
        Item(LEADS, "demo:invalid-website", invalid, _between(start, end, 0.34), shard=""),
        drive,
    )
    # The enrichment vendor answers 429 whatever we do: the retries run out.
    for n, (company, domain) in enumerate(
        [
            ("Northwind Traders", "northwind-traders.com"),
            ("Humongous Insurance", "humongous-insurance.com"),
        ]
    ):
        lead = _lead(company, domain, "Jo", "Head of Operations")
        at = _between(start, end, 0.61 + 0.18 * n)
        created += _scenario(
            Item(LEADS, f"demo:vendor-429-{n}", lead, at, shard=""), _exhaust_retries
        )
    erasure = _lead("Coho Winery", "coho-winery.com", "Eva", "Owner")
    created += _scenario(
        Item(LEADS, "demo:erasure-request", erasure, _between(start, end, 0.74), shard=""),
        _cancel,
    )
    # Cancelled for the wrong contact after it was enriched; the corrected
    # lead is a contact of its own, and its company's enrichment comes from
    # the cache.
    wrong = _lead("Tailspin Toys", "tailspin-toys.com", "Ana", "VP Sales")
    at = _between(start, end, 0.45)
    created += _scenario(Item(LEADS, "demo:wrong-contact", wrong, at, shard=""), _drive_then_cancel)
    right = {**_lead("Tailspin Toys", "tailspin-toys.com", "Bo", "VP Sales"), "source": "partner"}
    fixed = Item(LEADS, "demo:corrected-contact", right, at + timedelta(hours=3), shard="")
    created += _scenario(fixed, lambda run_id: _settle(run_id, fixed, end))
    created += _stopped_by_budget(end)
    # A free-mail address and no website: nothing says which company it is.
    personal = {"company": "Contoso Pharma", "email": "lena.k@gmail.com", "title": "Head of IT"}
    at = _between(start, end, 0.52)
    created += _scenario(Item(LEADS, "demo:free-mail", personal, at, shard=""), drive)
    # A great fit that arrived an hour ago: its draft waits for review.
    fit = _lead("Relecloud", "relecloud.io", "Mira", "VP Revenue")
    fresh = Item(LEADS, "demo:fresh-fit", fit, end - timedelta(hours=1), shard="")
    return created + _scenario(fresh, drive)


def _scenario(item: Item, play: Callable[[int], Any]) -> int:
    """Start the item's run, `play` it and move it to its time (1), or do
    nothing when it exists (0)."""
    run_id = _start(item)
    if run_id is None:
        return 0
    played = play(run_id)  # a review's delay, when a reviewer decided
    backdate(run_id, at=item.at, review_delay=played if isinstance(played, timedelta) else None)
    return 1


def _drive_then_cancel(run_id: int) -> None:
    drive(run_id)
    engine.cancel_run(
        run_id=run_id,
        reason="Wrong contact: Ana left the company; a corrected lead follows.",
        actor="user:riley",
    )


def _cancel(run_id: int) -> None:
    engine.cancel_run(
        run_id=run_id,
        reason="The contact asked us to erase their data (GDPR art. 17): not processed.",
        actor="user:riley",
    )


def _exhaust_retries(run_id: int) -> None:
    faults = {"enrichco.429": 1.0}
    with override_settings(BOSUN_VENDOR_FAULTS=faults, BOSUN_INLINE_WAIT_S=0):
        for _ in range(10):
            run = drive(run_id)
            if run.status != RunStatus.WAITING or run.wait_reason != "retry":
                return
            # The backoff has passed (this is history being written).
            Run.objects.filter(pk=run_id, status=RunStatus.WAITING).update(not_before=Now())


def _between(start: datetime, end: datetime, fraction: float) -> datetime:
    """A moment `fraction` of the way through the demo's period."""
    return start + (end - start) * fraction


def _stopped_by_budget(end: datetime) -> int:
    """A draft approved while outreach was paused by a kill switch for a
    deliverability incident; when the switch was lifted the run was older
    than its 7-day wall-time budget, so it stopped instead of sending."""
    item = Item(
        LEADS,
        "demo:waited-out-kill-switch",
        _lead("Fabrikam Cloud", "fabrikam-cloud.io", "Noor", "Chief Operating Officer"),
        end - timedelta(days=8.5),
        shard="",
    )
    run_id = _start(item)
    if run_id is None:
        return 0
    run = drive(run_id)
    if (pending := _pending(run)) is not None:
        engine.decide_approval(approval_id=pending.pk, approve=True, actor_label=REVIEWER)
    hold = partial(set_switch, scope="workflow", target=LEADS, by="demo")
    hold(engaged=True, reason="mailco deliverability incident: hold outreach")
    try:
        drive(run_id)  # waits as `paused` before its next step
    finally:
        hold(engaged=False, reason="mailco incident resolved")
    # Its history moves 8.5 days back; the budget check before the next step
    # then finds the run older than its wall-time budget.
    backdate(run_id, at=item.at)
    drive(run_id)
    return 1


def _summarize(report: DemoReport) -> None:
    runs = Run.objects.filter(workflow__slug__in=(LEADS, REFUNDS), mode=RunMode.LIVE)
    report.statuses = Counter(runs.values_list("status", flat=True))
    report.outcomes = Counter(runs.exclude(outcome="").values_list("outcome", flat=True))
    report.pending_reviews = ApprovalRequest.objects.filter(
        run__workflow__slug__in=(LEADS, REFUNDS), status=ApprovalStatus.PENDING
    ).count()
