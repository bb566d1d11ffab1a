"""The dashboard page: the period form, the figures, the SVG trend, roles."""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.utils import timezone

from lib import charts
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
many_runs = fx.many_runs

HX = {"HTTP_HX_REQUEST": "true"}
URL = "/console/dashboard/"


def client_for(make_user, role: str | None = "viewer") -> Client:
    client = Client()
    client.force_login(make_user(role))
    return client


def test_the_dashboard_shows_each_version_with_its_figures_and_charts(make_user, two_step_version):
    now = timezone.now()
    add_run(two_step_version, success=True, cost="0.30", created_at=now, latency_ms=1500)
    add_run(two_step_version, status="failed", cost="0.10", created_at=now, latency_ms=2500)
    add_run(two_step_version, cost="5", created_at=now - timedelta(days=9), latency_ms=1)
    response = client_for(make_user).get(URL)
    assert response.status_code == 200
    body = response.content.decode()
    [row] = response.context["rows"]
    assert row["metrics"].runs == 2  # the default period is the last 7 days
    assert row["cost_per_success"] == "$0.4000"  # (0.30 + 0.10) / 1 success
    assert row["error_rate"] == "50.0%"
    assert row["p50"] == "2.0 s"
    assert two_step_version.workflow.slug in body and "$0.4000" in body
    assert body.count("<svg") == 3 and "<script" not in body.split("</head>")[1]
    assert re.search(r"<rect [^>]*><title>\d{4}-\d\d-\d\d: 2</title>", body)


def test_the_dashboard_shows_model_and_vendor_spend_and_credits(make_user, two_step_version):
    now = timezone.now()
    spent = {
        "model_usd": Decimal("0.05"),
        "vendor_usd": Decimal("0.25"),
        "credits": {"enrichco": 5},
    }
    add_run(
        two_step_version,
        success=True,
        cost="0.30",
        created_at=now,
        latency_ms=5,
        **spent,
        steps=[
            {"vendor": "enrichco", "credits": 5, "vendor_usd": Decimal("0.25")},
            {
                "cache_hit": True,
                "vendor": "enrichco",
                "credits_saved": 10,
                "cost_saved_usd": Decimal("0.5"),
            },
        ],
    )
    response = client_for(make_user).get(URL)
    [row] = response.context["rows"]
    assert row["cost_split"] == "model $0.0500 · vendors $0.2500"
    assert row["per_success_split"] == "model $0.0500 · vendors $0.2500"
    assert (row["credits"], row["cache_saved_credits"]) == ("enrichco 5 cr", "enrichco 10 cr")
    body = response.content.decode()
    assert "model $0.0500 · vendors $0.2500" in body and "enrichco 10 cr" in body


def test_the_period_form_updates_only_the_figures_under_htmx(make_user, two_step_version):
    add_run(two_step_version, created_at=timezone.now() - timedelta(days=20), latency_ms=5)
    client = client_for(make_user)
    week = client.get(URL, {"period": "7d"}, **HX)
    assert week.status_code == 200
    text = week.content.decode()
    assert text.lstrip().startswith('<div id="dashboard-body">') and "<html" not in text
    assert week.context["rows"] == []
    month = client.get(URL, {"period": "30d"}, **HX)
    assert [r["metrics"].runs for r in month.context["rows"]] == [1]
    assert [m.height > 0 for m in month.context["charts"][0].marks].count(True) == 1


def test_dates_and_a_workflow_choose_the_runs(make_user, two_step_version, make_workflow):
    other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}])
    day = timezone.now() - timedelta(days=40)
    add_run(two_step_version, created_at=day, cost="1", success=True)
    add_run(other, created_at=day)
    client = client_for(make_user)
    date = day.date().isoformat()
    response = client.get(URL, {"period": "custom", "since": date, "until": date})
    assert sorted(r["metrics"].workflow for r in response.context["rows"]) == sorted(
        [two_step_version.workflow.slug, other.workflow.slug]
    )
    chart = response.context["charts"][0]
    assert (chart.first_day, chart.last_day, len(chart.marks)) == (date, date, 1)
    only = client.get(URL, {"since": date, "workflow": other.workflow.slug})
    assert [r["metrics"].workflow for r in only.context["rows"]] == [other.workflow.slug]


@pytest.mark.parametrize(
    "params,message",
    [
        ({"period": "custom"}, "Choose a start date"),
        ({"since": "2025-03-02", "until": "2025-03-01"}, "before the start date"),
        ({"since": "2020-01-01", "until": "2025-01-01"}, "at most 366 days"),
        ({"period": "year"}, "Select a valid choice"),
        ({"workflow": "no-such-flow"}, "Select a valid choice"),
    ],
)
def test_bad_periods_are_form_errors(make_user, params, message):
    client = client_for(make_user)
    page = client.get(URL, params)
    assert page.status_code == 400 and message in page.content.decode()
    partial = client.get(URL, params, **HX)
    assert partial.status_code == 200 and message in partial.content.decode()


@pytest.mark.parametrize("headers,queries", [({}, 14), (HX, 12)])  # whole page: + the switches
def test_the_dashboard_takes_the_same_queries_for_3_runs_as_for_30(
    make_user, many_runs, make_workflow, django_assert_num_queries, headers, queries
):
    # session, user, two permission look-ups, the eight of the metrics (the
    # trend and the time split come with them; 7 days hold whole days, which
    # could be rolled up); the whole page also fills the workflow choices
    client = client_for(make_user)
    many_runs(3)
    with django_assert_num_queries(queries):
        client.get(URL, **headers)
    many_runs(27)
    for _ in range(3):
        other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}])
        add_run(other, latency_ms=10)
    with django_assert_num_queries(queries):
        response = client.get(URL, **headers)
    assert sum(r["metrics"].runs for r in response.context["rows"]) == 33


@pytest.mark.parametrize("role", ["operator", "manager", "reviewer", "viewer", None, "anonymous"])
def test_who_may_see_the_dashboard(make_user, role):
    client = Client() if role == "anonymous" else client_for(make_user, role)
    response = client.get(URL)
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"] == "/accounts/login/?next=/console/dashboard/"
    else:
        assert response.status_code == (200 if role else 403)


def test_the_dashboard_refuses_unsafe_methods(make_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(make_user("operator"))
    assert client.post(URL).status_code == 403  # no token: CSRF refuses first
    assert client_for(make_user, "operator").post(URL).status_code == 405


def test_a_chart_scales_its_values_and_leaves_out_empty_days():
    days = [timezone.now().date() + timedelta(days=i) for i in range(4)]
    chart = charts.trend_chart("Cost", days, [Decimal("1"), None, Decimal("2"), 0], fmt=str)
    assert [m.title.split(": ")[1] for m in chart.marks] == ["1.0", "2.0", "0.0"]
    heights = [chart.baseline - m.y for m in chart.marks]
    assert heights[1] == pytest.approx(2 * heights[0]) and heights[2] == 0
    assert chart.points.count(",") == 3 and chart.top_label == "2.0"
    bars = charts.trend_chart("Runs", days, [0, 0, 0, 0], kind="bars")
    assert all(m.height == 0 for m in bars.marks) and not bars.empty
    assert charts.trend_chart("x", [], []).empty
    with pytest.raises(ValueError):
        charts.trend_chart("x", days, [1, 2, 3, 4], kind="pie")


def test_run_status_and_successful_outcome_are_two_columns_each_explained(
    make_user, two_step_version
):
    """ "Succeeded" is the run's status; a successful outcome is its end
    step's flag: a run archived at its end succeeded without a success."""
    now = timezone.now()
    add_run(two_step_version, success=True, created_at=now, latency_ms=10)
    add_run(two_step_version, success=False, created_at=now, latency_ms=10)  # archived
    body = client_for(make_user).get("/console/dashboard/?period=24h").content.decode()
    body = body.split('<table class="metrics">', 1)[
        1
    ]  # the figures (the charts' tables come first)
    header = body.split("<thead>", 1)[1].split("</thead>", 1)[0]
    assert 'title="Run status succeeded' in header and 'title="Successful outcomes:' in header
    assert header.count("<th") == header.count("title=")  # every column explained on hover
    row = body.split("<tbody>", 1)[1].split("</tr>", 1)[0]
    cells = re.findall(r'<td class="num"><a [^>]*>(\d+)</a></td>', row)
    assert cells[:3] == ["2", "2", "1"]  # runs, succeeded, successful outcomes


@pytest.mark.parametrize("period,days", [("7d", 7), ("30d", 30)])
def test_the_preset_periods_are_calendar_days_up_to_now(make_user, two_step_version, period, days):
    """Each bar of the trend is a whole day: the period starts at midnight
    of the first day, not at this hour of it."""
    first = timezone.localdate() - timedelta(days=days - 1)
    start = timezone.make_aware(datetime.combine(first, time()))
    add_run(two_step_version, created_at=start, latency_ms=5)  # the first moment counted
    add_run(two_step_version, created_at=start - timedelta(microseconds=1), latency_ms=5)
    page = client_for(make_user).get(URL, {"period": period}, **HX)
    assert page.context["since"] == start
    assert [r["metrics"].runs for r in page.context["rows"]] == [1]
    assert len(page.context["charts"][0].marks) == days
