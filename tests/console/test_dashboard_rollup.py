"""The dashboard over a daily roll-up gives the figures of the runs as they
stand: runs that finish after their day was rolled up, a dead-lettered run
retried after it, runs still waiting; and roll-up passes are idempotent."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from runs import engine, metrics, rollup
from runs.models import DailyRollup, DailyRollupWaiting, RollupDay, Run, StepRun
from runs.tally import BUCKET, histogram_percentile
from tests.conftest import race
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
LATENCY = ("latency_p50_ms", "latency_p95_ms")


@pytest.fixture
def no_slack(monkeypatch):
    """The watermark at the database clock itself: a run the test finishes
    after a pass finished after that pass's watermark."""
    monkeypatch.setattr(rollup, "SLACK", timedelta(0))


def midnight(days_ago: int) -> datetime:
    today = timezone.now().astimezone(UTC).date()
    return datetime.combine(today - timedelta(days=days_ago), time(), UTC)


def period() -> dict:
    until = timezone.now() + timedelta(hours=1)
    return {"since": until - timedelta(days=7), "until": until}


def without_rollup() -> metrics.PeriodReport:
    """The report computed from the runs alone: the roll-up emptied in a
    savepoint that is rolled back."""
    with transaction.atomic():
        RollupDay.objects.all().delete()
        report = metrics.period_report(**period())
        transaction.set_rollback(True)
    return report


def assert_same_figures(report: metrics.PeriodReport, expected: metrics.PeriodReport) -> None:
    assert report.trend == expected.trend
    assert [(r.workflow, r.version) for r in report.versions] == [
        (r.workflow, r.version) for r in expected.versions
    ]
    for got, want in zip(report.versions, expected.versions, strict=True):
        exact = {k: v for k, v in dataclasses.asdict(want).items() if k not in LATENCY}
        assert {k: v for k, v in dataclasses.asdict(got).items() if k not in LATENCY} == exact
        for name in LATENCY:
            # within one histogram bucket (5 %)
            assert getattr(got, name) == pytest.approx(getattr(want, name), rel=0.05)


@pytest.fixture
def mix(two_step_version):
    """Runs on five whole past days, the period's first hours and today:
    finished ones with money, calls, credits, cache hits, approvals and
    dedup hits (one saving what a still-waiting run has paid so far), a
    waiting run, a running one, and a dead-lettered one."""
    version = two_step_version
    usd = Decimal
    runs = {}
    for days_ago in range(1, 8):
        at = midnight(days_ago) + timedelta(hours=10)
        for n in range(3):
            run = add_run(
                version,
                success=n != 2,
                cost=f"0.{days_ago}{n}",
                vendor_usd=usd("0.05"),
                credits={"enrichco": 5},
                created_at=at + timedelta(minutes=n),
                latency_ms=100 * (n + 1) * days_ago,
                llm_calls=n,
                tool_calls=1,
                steps=[
                    {"kind": "tool", "vendor": "enrichco", "credits": 5, "cost_usd": usd("0.05")},
                    {"kind": "llm", "cache_hit": n == 1, "cost_saved_usd": usd("0.02")},
                ],
            )
            runs[days_ago, n] = run
        add_approval(runs[days_ago, 0], status="approved")
    waiting = add_run(
        version, status="waiting", cost="0.07", created_at=midnight(3) + timedelta(hours=20)
    )
    add_approval(waiting)
    duplicate = {"kind": "dedup", "edge": "duplicate", "output": {"first_run": waiting.pk}}
    add_run(version, created_at=midnight(2) + timedelta(hours=1), latency_ms=50, steps=[duplicate])
    recorded = {**duplicate, "cost_saved_usd": usd("0.5"), "vendor": "enrichco", "credits_saved": 3}
    add_run(version, created_at=midnight(2) + timedelta(hours=2), latency_ms=60, steps=[recorded])
    add_run(version, status="running", cost="0.01", created_at=midnight(4) + timedelta(hours=3))
    dead = add_run(
        version,
        status="failed",
        cost="0.09",
        created_at=midnight(5) + timedelta(hours=4),
        latency_ms=4000,
        dead=True,
    )
    # a duplicate of the dead run: it saved what that run had paid when it died
    of_dead = {"kind": "dedup", "edge": "duplicate", "output": {"first_run": dead.pk}}
    add_run(version, created_at=midnight(1) + timedelta(hours=5), latency_ms=70, steps=[of_dead])
    add_run(version, created_at=timezone.now() - timedelta(minutes=1), cost="0.3", latency_ms=5)
    return {"waiting": waiting, "dead": dead}


def test_the_figures_over_a_roll_up_are_those_of_the_runs(mix, no_slack):
    expected = metrics.period_report(**period())
    passes = rollup.roll_up_all()
    # the 7 days over, from the first run's; never today
    assert sorted(sum((p.rolled for p in passes), [])) == [
        midnight(n).date() for n in range(7, 0, -1)
    ]
    assert not RollupDay.objects.filter(day=midnight(0).date()).exists()
    report = metrics.period_report(**period())
    assert_same_figures(report, expected)
    assert_same_figures(report, without_rollup())

    # The report reads the roll-up: a row changed shows in it.
    with transaction.atomic():
        DailyRollup.objects.filter(day=midnight(2).date()).update(runs=F("runs") + 100)
        assert metrics.period_report(**period()).versions[0].runs == expected.versions[0].runs + 100
        transaction.set_rollback(True)


def test_a_run_that_finishes_after_its_day_was_rolled_up_is_counted_once(mix, no_slack):
    rollup.roll_up_all()
    waiting = mix["waiting"]
    # It goes on: a step answered from the cache, then it finishes, having
    # paid more: the dedup hit that reuses its work saves what it has paid by now.
    StepRun.objects.create(
        run=waiting,
        seq=5,
        step_key="again",
        kind="llm",
        status="succeeded",
        cache_hit=True,
        cost_saved_usd=Decimal("0.04"),
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )
    assert_same_figures(metrics.period_report(**period()), without_rollup())
    Run.objects.filter(pk=waiting.pk).update(
        status="succeeded", success=True, cost_usd=Decimal("0.42"), finished_at=timezone.now()
    )
    report = metrics.period_report(**period())
    assert_same_figures(report, without_rollup())
    # 0.42 now, 0.50 recorded, 0.09 the dead run paid
    assert report.versions[0].dedup_saved_usd == Decimal("1.01")

    # The next pass rolls its day up again, with it.
    assert rollup.roll_up_days().rolled == [midnight(3).date()]
    assert DailyRollup.objects.get(day=midnight(3).date()).succeeded == 4
    assert_same_figures(metrics.period_report(**period()), without_rollup())


def test_a_dead_lettered_run_retried_after_the_roll_up_is_not_counted_twice(mix, no_slack):
    rollup.roll_up_all()
    day = midnight(5).date()
    engine.retry_run(run_id=mix["dead"].pk)
    assert RollupDay.objects.get(day=day).stale
    # and the day of the duplicate that saved what it had paid then
    assert RollupDay.objects.get(day=midnight(1).date()).stale
    report = metrics.period_report(**period())
    assert_same_figures(report, without_rollup())
    assert sum(p.failed for p in report.trend) == 0

    # It succeeds this time; a pass rolls the stale day up again.
    Run.objects.filter(pk=mix["dead"].pk).update(
        status="succeeded", success=True, cost_usd=Decimal("0.19"), finished_at=timezone.now()
    )
    assert_same_figures(metrics.period_report(**period()), without_rollup())
    assert rollup.roll_up_days().rolled == [midnight(1).date(), day]
    assert not RollupDay.objects.filter(stale=True).exists()
    assert_same_figures(metrics.period_report(**period()), without_rollup())


def test_a_pass_with_nothing_new_changes_nothing(mix):
    rollup.roll_up_all()
    rows = list(DailyRollup.objects.order_by("day", "version").values())
    again = rollup.roll_up_days()
    assert (again.rolled, again.left) == ([], 0)
    assert list(DailyRollup.objects.order_by("day", "version").values()) == rows


def test_a_pass_rolls_up_a_few_days_and_the_next_goes_on(mix):
    first = rollup.roll_up_days(limit=3)
    assert (len(first.rolled), first.left) == (3, 4)
    assert_same_figures(metrics.period_report(**period()), without_rollup())
    assert sum(len(p.rolled) for p in rollup.roll_up_all(limit=3)) == 4


def test_the_metrics_over_rolled_up_days_take_a_fixed_number_of_queries(
    mix, two_step_version, django_assert_num_queries
):
    # a run in the first day's hours, whatever the time of day
    add_run(two_step_version, created_at=period()["since"] + timedelta(minutes=5), latency_ms=1)
    rollup.roll_up_all()
    # rolled-up days, runs by (version, day), their rows, latency histogram;
    # the runs' id bounds of the two parts not rolled up (the first day's
    # hours, today); cache hits, credits and dedup of the step runs of each
    # and of those after the watermark; what still-paying first runs paid;
    # names; the runs of rolled-up days not finished: those kept waiting and
    # unchanged, the others
    expected = 19
    with django_assert_num_queries(expected):
        metrics.workflow_metrics(**period())
    for days_ago in range(1, 6):
        add_run(two_step_version, created_at=midnight(days_ago), latency_ms=1, cost="1")
        waiting = add_run(two_step_version, status="waiting", created_at=midnight(days_ago))
        add_approval(waiting)
    rollup.roll_up_all()
    Run.objects.filter(pk=waiting.pk).update(fence=F("fence") + 1)  # one changed since
    with django_assert_num_queries(expected):
        metrics.workflow_metrics(**period())


def test_a_latency_percentile_from_the_histogram_is_within_a_bucket():
    # 1,000 ms .. 1,999 ms, one run each
    histogram: dict[int, int] = {}
    values = list(range(1000, 2000))
    for value in values:
        index = int(math.log(value) // math.log(BUCKET))
        histogram[index] = histogram.get(index, 0) + 1
    assert histogram_percentile(histogram, 0.5) == pytest.approx(1499.5, rel=0.05)
    assert histogram_percentile(histogram, 0.95) == pytest.approx(1949.05, rel=0.05)
    assert histogram_percentile({}, 0.5) is None
    assert histogram_percentile({3: 1}, 0.95) == pytest.approx(BUCKET**3.5, rel=0.05)


def test_the_roll_up_is_scheduled():
    from django_q.models import Schedule

    assert Schedule.objects.filter(func="runs.tasks.roll_up").exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_two_passes_at_once_roll_each_day_up_once(mix):
    expected = metrics.period_report(**period())
    results = race(2, lambda i: rollup.roll_up_days())
    assert all(isinstance(r, rollup.RollupPass) for r in results), results
    # one rolled the 7 days up; the other, after it, found nothing to do
    assert sorted(len(r.rolled) for r in results) == [0, 7]
    assert_same_figures(metrics.period_report(**period()), expected)


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_a_retry_during_a_pass_leaves_no_day_counting_the_retried_run(mix):
    dead = mix["dead"].pk
    results = race(2, lambda i: rollup.roll_up_days() if i else engine.retry_run(run_id=dead))
    assert not any(isinstance(r, Exception) for r in results), results
    assert_same_figures(metrics.period_report(**period()), without_rollup())


def test_a_run_waiting_unchanged_since_the_roll_up_is_read_from_the_roll_up(mix, no_slack):
    rollup.roll_up_all()
    kept = DailyRollupWaiting.objects.get(run=mix["waiting"])
    assert (kept.cost_usd, kept.escalated, kept.wait_reason) == (Decimal("0.07"), True, "")
    assert_same_figures(metrics.period_report(**period()), without_rollup())
    # The dashboard does not read the run's row while the run is unchanged
    # as kept (its money changes only in a step, after a claim).
    Run.objects.filter(pk=mix["waiting"].pk).update(cost_usd=Decimal("5"))
    [row] = metrics.period_report(**period()).versions
    assert row.cost_usd == without_rollup().versions[0].cost_usd - Decimal("5") + Decimal("0.07")


@pytest.mark.parametrize(
    "change",
    [
        # claimed, a step paid, waiting again (the claim bumps the fence)
        {"fence": F("fence") + 1, "cost_usd": Decimal("0.5"), "machine_ms": 30.0},
        {"decisions": F("decisions") + 1, "wait_ms": 1000.0},  # a request decided
        {"breaches": F("breaches") + 1},  # a request past its SLA
        {"wait_reason": "retry"},  # waiting for something else
        {"status": "queued", "wait_reason": ""},  # no longer waiting
        {"status": "cancelled", "finished_at": Now()},  # finished since
    ],
)
def test_a_run_that_changed_since_the_roll_up_is_read_as_it_stands(mix, no_slack, change):
    waiting = mix["waiting"]
    Run.objects.filter(pk=waiting.pk).update(wait_reason="approval")
    rollup.roll_up_all()
    assert DailyRollupWaiting.objects.filter(run=waiting).exists()
    Run.objects.filter(pk=waiting.pk).update(**change)
    assert_same_figures(metrics.period_report(**period()), without_rollup())


def test_a_run_that_waits_since_the_roll_up_is_read_as_it_stands(mix, no_slack):
    rollup.roll_up_all()
    running = Run.objects.get(status="running")
    assert not DailyRollupWaiting.objects.filter(run=running).exists()
    # it ran a step and parked, within the same claim (the fence as it was)
    Run.objects.filter(pk=running.pk).update(
        status="waiting", wait_reason="approval", cost_usd=Decimal("0.8")
    )
    assert_same_figures(metrics.period_report(**period()), without_rollup())
