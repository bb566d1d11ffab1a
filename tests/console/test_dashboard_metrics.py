"""Metrics per workflow version, checked against figures computed by hand."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from runs import metrics
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

# The shared fixtures, under their own names (pytest finds them here).
two_step_version = fx.two_step_version


@pytest.fixture
def period():
    until = timezone.now().replace(microsecond=0) + timedelta(hours=1)
    return until - timedelta(days=7), until


@pytest.fixture
def small(two_step_version, period):
    """Five runs of one version in the period, one run outside it:

    | run | status    | success | cost | latency | notes                              |
    | a   | succeeded | True    | 0.10 | 100 ms  | one cache hit saving 0.03          |
    | b   | succeeded | True    | 0.20 | 200 ms  | waited for an approval             |
    | c   | succeeded | False   | 0.30 | 300 ms  | dedup duplicate of a (a cost 0.10) |
    | d   | failed    | None    | 0.40 | 400 ms  | dedup duplicate recording 0.25     |
    | e   | running   | None    | 0.00 | —       | approval (escalated), 2 llm calls  |
    """
    version = two_step_version
    since, until = period
    at = since + timedelta(days=1)
    a = add_run(
        version,
        success=True,
        cost="0.10",
        created_at=at,
        latency_ms=100,
        llm_calls=1,
        steps=[{"kind": "llm", "cache_hit": True, "cost_saved_usd": Decimal("0.03")}],
    )
    b = add_run(version, success=True, cost="0.20", created_at=at, latency_ms=200, tool_calls=1)
    add_approval(b, status="approved")
    add_approval(b, seq=2, status="approved")  # two requests, still one escalated run
    add_run(
        version,
        success=False,
        cost="0.30",
        created_at=at + timedelta(days=1),
        latency_ms=300,
        steps=[{"kind": "dedup", "edge": "duplicate", "output": {"first_run": a.pk}}],
    )
    add_run(
        version,
        status="failed",
        cost="0.40",
        created_at=at + timedelta(days=2),
        latency_ms=400,
        steps=[
            {
                "kind": "dedup",
                "edge": "duplicate",
                "output": {"first_run": a.pk},
                "cost_saved_usd": Decimal("0.25"),
            },
            # a dedup gate that let the run through saved nothing
            {"kind": "dedup", "edge": "next", "output": {"duplicate": False}},
        ],
    )
    e = add_run(version, status="running", created_at=at + timedelta(days=2), llm_calls=2)
    add_approval(e)
    add_run(version, cost="9", created_at=since - timedelta(seconds=1), latency_ms=1)
    return version


def test_it_computes_the_figures_of_a_version_by_hand(small, period):
    since, until = period
    [row] = metrics.workflow_metrics(since=since, until=until)
    assert (row.workflow, row.version) == (small.workflow.slug, small.number)
    assert (row.runs, row.succeeded, row.failed, row.successes) == (5, 3, 1, 2)
    assert row.success_rate == pytest.approx(3 / 5)
    assert row.error_rate == pytest.approx(1 / 5)
    assert row.escalation_rate == pytest.approx(2 / 5)
    assert row.cost_usd == Decimal("1.000000")
    assert row.cost_per_run == Decimal("0.200000")
    # cost of all runs / successful outcomes: 1.00 / 2
    assert row.cost_per_success == Decimal("0.500000")
    # latencies 100, 200, 300, 400: p50 = 250, p95 = 300 + 0.85 * 100
    assert row.latency_p50_ms == pytest.approx(250, abs=0.5)
    assert row.latency_p95_ms == pytest.approx(385, abs=0.5)
    assert row.cache_hits == 1
    # one hit among one hit + 1 + 1 + 2 calls
    assert row.cache_hit_rate == pytest.approx(1 / 5)
    assert row.cache_saved_usd == Decimal("0.030000")
    # c reused a's results (a paid 0.10); d recorded its own saving of 0.25
    assert row.dedup_hits == 2
    assert row.dedup_saved_usd == Decimal("0.350000")


def test_it_shows_model_and_vendor_spend_apart_and_the_credits_spent_and_saved(
    two_step_version, period
):
    """| run | model | vendor | credits     | notes                                  |
    | a   | 0.03  | 0.10   | enrichco 5  | enriched (success)                     |
    | b   | 0.03  | 0      |             | enrichment from the cache (success)    |
    | c   | 0     | 0      |             | dedup duplicate of a                   |
    | d   | 0     | 0      |             | dedup duplicate recording 10 credits   |
    """
    since, until = period
    at, version = since + timedelta(days=1), two_step_version
    usd = Decimal
    enriched = {
        "vendor": "enrichco",
        "credits": 5,
        "vendor_usd": usd("0.10"),
        "cost_usd": usd("0.10"),
    }
    a = add_run(
        version,
        success=True,
        cost="0.13",
        model_usd=usd("0.03"),
        vendor_usd=usd("0.10"),
        credits={"enrichco": 5},
        created_at=at,
        steps=[enriched, {"kind": "llm", "model_usd": usd("0.03"), "cost_usd": usd("0.03")}],
    )
    cached = {"cache_hit": True, "vendor": "enrichco", "credits_saved": 5}
    cached |= {"vendor_saved_usd": usd("0.10"), "cost_saved_usd": usd("0.10")}
    add_run(
        version, success=True, cost="0.03", model_usd=usd("0.03"), created_at=at, steps=[cached]
    )
    duplicate = {"kind": "dedup", "edge": "duplicate", "output": {"first_run": a.pk}}
    add_run(version, success=False, created_at=at, steps=[duplicate])
    recorded = {
        **duplicate,
        "vendor": "enrichco",
        "credits_saved": 10,
        "cost_saved_usd": usd("0.2"),
    }
    add_run(version, success=False, created_at=at, steps=[recorded])
    [row] = metrics.workflow_metrics(since=since, until=until)
    assert (row.cost_usd, row.model_usd, row.vendor_usd) == (usd("0.16"), usd("0.06"), usd("0.10"))
    assert (row.cost_per_run, row.model_per_run, row.vendor_per_run) == (
        usd("0.04"),
        usd("0.015"),
        usd("0.025"),
    )
    # All runs' spend over the 2 successful outcomes, together and apart.
    assert (row.cost_per_success, row.model_per_success, row.vendor_per_success) == (
        usd("0.08"),
        usd("0.03"),
        usd("0.05"),
    )
    assert row.credits == {"enrichco": 5}
    assert (row.cache_saved_usd, row.cache_saved_credits) == (usd("0.10"), {"enrichco": 5})
    # c saved what a paid, model and vendor (0.13, 5 credits); d what it recorded.
    assert (row.dedup_saved_usd, row.dedup_saved_credits) == (usd("0.33"), {"enrichco": 15})


def test_it_filters_by_workflow_and_version(small, period, make_workflow):
    since, until = period
    other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}])
    add_run(other, created_at=since + timedelta(hours=1), latency_ms=10, cost="1")
    both = metrics.workflow_metrics(since=since, until=until)
    assert [(r.workflow, r.runs) for r in both] == sorted(
        [(small.workflow.slug, 5), (other.workflow.slug, 1)]
    )
    [only] = metrics.workflow_metrics(since=since, until=until, workflow=other.workflow)
    assert (only.workflow, only.runs, only.cost_per_success) == (other.workflow.slug, 1, None)
    [mine] = metrics.workflow_metrics(since=since, until=until, version=small)
    assert mine.runs == 5


def test_a_period_without_runs_has_no_rows(small, period):
    since, _ = period
    earlier = since - timedelta(days=30)
    assert metrics.workflow_metrics(since=earlier, until=since - timedelta(seconds=2)) == []


def test_a_percentile_of_one_finished_run_is_its_latency(two_step_version, period):
    since, until = period
    add_run(two_step_version, created_at=since, latency_ms=1234)
    add_run(two_step_version, status="queued", created_at=since)
    [row] = metrics.workflow_metrics(since=since, until=until)
    assert row.latency_p50_ms == pytest.approx(1234, abs=0.5)
    assert row.latency_p95_ms == pytest.approx(1234, abs=0.5)


def test_the_trend_has_one_point_a_day_with_error_rate_and_cost_per_success(small, period):
    since, until = period
    points = metrics.workflow_trend(since=since, until=until)
    assert len(points) == 8  # 7 days plus the hour after: the days the period touches
    day1 = (since + timedelta(days=1)).date()
    by_day = {p.day: p for p in points}
    assert (by_day[day1].runs, by_day[day1].successes) == (2, 2)
    assert by_day[day1].cost_per_success == Decimal("0.150000")
    day3 = day1 + timedelta(days=2)
    assert (by_day[day3].runs, by_day[day3].failed) == (2, 1)
    assert by_day[day3].error_rate == pytest.approx(0.5)
    assert by_day[day3].cost_per_success is None
    assert sum(p.runs for p in points) == 5


def test_the_metrics_take_a_fixed_number_of_queries(
    small, period, make_workflow, django_assert_num_queries
):
    since, until = period
    # rolled-up days (none here), runs by (version, day), percentiles, the
    # runs' id bounds, cache hits, credits, dedup, names
    expected = 8
    with django_assert_num_queries(expected):
        metrics.workflow_metrics(since=since, until=until)
    for number in range(3):
        other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}])
        add_run(other, created_at=since, latency_ms=number + 1)
    with django_assert_num_queries(expected):
        assert len(metrics.workflow_metrics(since=since, until=until)) == 4
    with django_assert_num_queries(2):
        metrics.workflow_trend(since=since, until=until)


def test_a_reversed_period_is_refused():
    now = timezone.now()
    with pytest.raises(ValueError):
        metrics.workflow_metrics(since=now, until=now)
