"""The dashboard separates machine time from time waiting for people, counts
stopped and cancelled runs, shows each chart's values as a table, and every
figure links to the runs behind it."""

from __future__ import annotations

import html
import re
from datetime import timedelta

import pytest
from django.db.models import F
from django.test import Client
from django.utils import timezone

from approvals.models import ApprovalRequest
from runs import rollup
from runs.metrics import period_report
from runs.models import DailyRollup, Run
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
URL = "/console/dashboard/"


def viewer(make_user) -> Client:
    client = Client()
    client.force_login(make_user("viewer"))
    return client


def decided(run, *, waited_s: float, seq: int = 1, breached: bool = False) -> ApprovalRequest:
    """A request of the run decided after `waited_s`, and the run's own
    figures as the engine keeps them (tests/runs/test_time_split.py)."""
    approval = add_approval(run, seq=seq, status="approved")
    created = run.created_at
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        created_at=created,
        decided_at=created + timedelta(seconds=waited_s),
        breached_at=created if breached else None,
    )
    Run.objects.filter(pk=run.pk).update(
        decisions=F("decisions") + 1,
        wait_ms=F("wait_ms") + waited_s * 1000,
        breaches=F("breaches") + int(breached),
    )
    return approval


def with_steps(run, steps: list[dict]) -> Run:
    Run.objects.filter(pk=run.pk).update(machine_ms=sum(s["duration_ms"] for s in steps))
    return run


@pytest.fixture
def when(request):
    """When the runs of `mix` are created: an hour ago, or (parametrized)
    that many days earlier."""
    return timezone.now() - timedelta(days=getattr(request, "param", 0), hours=1)


@pytest.fixture
def mix(two_step_version, when):
    """Runs of one version: steps of 100 ms and 300 ms, approvals decided
    after 10 min and 30 min (one past its SLA), one pending, a stopped and a
    cancelled run, and a stopped run from before the period."""
    now = when
    steps = [{"duration_ms": 100.0}, {"duration_ms": 300.0}]
    first = add_run(two_step_version, success=True, created_at=now, latency_ms=5, steps=steps)
    decided(with_steps(first, steps), waited_s=600)
    second = with_steps(add_run(two_step_version, created_at=now, latency_ms=5, steps=steps), steps)
    decided(second, waited_s=1800, breached=True)
    waiting = add_run(two_step_version, status="waiting", wait_reason="approval", created_at=now)
    add_approval(waiting, status="pending")
    runs = {
        "first": first,
        "second": second,
        "waiting": waiting,
        "stopped": add_run(
            two_step_version, status="stopped", stop_reason="budget", created_at=now
        ),
        "cancelled": add_run(two_step_version, status="cancelled", created_at=now),
        "old": add_run(two_step_version, status="stopped", created_at=now - timedelta(days=9)),
    }
    return runs


def time_split(**period):
    return period_report(**period).versions


def week() -> dict:
    until = timezone.now() + timedelta(minutes=1)
    return {"since": until - timedelta(days=7), "until": until}


def test_machine_time_and_time_waiting_for_people_are_apart(mix):
    [row] = time_split(**week())
    assert (row.runs, row.stopped, row.cancelled) == (5, 1, 1)
    assert (row.machine_ms, row.machine_per_run_ms) == (800.0, 160.0)
    assert (row.decisions, row.wait_ms) == (2, pytest.approx(2_400_000))
    assert row.wait_per_decision_ms == pytest.approx(1_200_000)
    assert (row.pending, row.breached) == (1, 1)
    assert row.human_share == pytest.approx(2_400_000 / 2_400_800)


TIME_FIGURES = (
    "runs",
    "stopped",
    "cancelled",
    "machine_ms",
    "decisions",
    "wait_ms",
    "pending",
    "breached",
)


@pytest.mark.parametrize("when", [0, 3], indirect=True, ids=["today", "three days ago"])
def test_the_time_split_is_the_same_after_a_roll_up(when, mix, monkeypatch):
    """Today is read from the runs; three days ago is read from the roll-up
    once it is rolled up (the run still waiting included, as it stood),
    with the same figures."""
    monkeypatch.setattr(rollup, "SLACK", timedelta(0))

    def figures():
        return [tuple(getattr(row, name) for name in TIME_FIGURES) for row in time_split(**week())]

    before = figures()
    assert before[0][:4] == (5, 1, 1, 800.0)
    rollup.roll_up_all()
    if when.date() < (timezone.now() - timedelta(days=2)).date():
        [row] = DailyRollup.objects.all()
        assert (row.runs, row.machine_ms, row.decisions, row.breached) == (3, 800.0, 2, 1)
        assert row.pending == 1
    assert figures() == before


def test_the_dashboard_shows_stopped_cancelled_and_the_time_split(make_user, mix):
    response = viewer(make_user).get(URL)
    [row] = response.context["rows"]
    assert (row["stopped"], row["cancelled"]) == (1, 1)
    [split] = response.context["time_rows"]
    assert split["machine_total"] == "800 ms" and split["wait_total"] == "40.0 min"
    body = response.content.decode()
    assert "Machine time and time waiting for people" in body
    header = body.split('id="time-split"', 1)[1].split("<thead>", 1)[1].split("</thead>")[0]
    assert header.count("<th") == header.count("title=") == 10  # every column explained on hover


def drill(client: Client, body: str, title: str) -> set[int]:
    """Follow the first link titled `title` and return the run ids listed."""
    href = re.search(rf'<a href="([^"]+)" title="{title}">', body)
    assert href, title
    page = client.get(html.unescape(href.group(1)))
    assert page.status_code == 200, page.content.decode()[:2000]
    return {run.pk for run in page.context["runs"]}


def test_every_count_links_to_the_runs_behind_it(make_user, mix):
    client = viewer(make_user)
    body = client.get(URL).content.decode()
    assert drill(client, body, "The stopped runs") == {mix["stopped"].pk}  # not the old one
    assert drill(client, body, "The cancelled runs") == {mix["cancelled"].pk}
    assert drill(client, body, "The runs with a successful outcome") == {mix["first"].pk}
    assert drill(client, body, "The runs with a request past its SLA") == {mix["second"].pk}
    assert drill(client, body, "The runs with a pending request") == {mix["waiting"].pk}
    decided_runs = {mix["first"].pk, mix["second"].pk}
    assert drill(client, body, "The runs with a decided request") == decided_runs
    assert drill(client, body, "The runs that asked a person") == decided_runs | {mix["waiting"].pk}
    assert len(drill(client, body, "The runs behind this figure")) == 5


def test_the_runs_list_filters_by_an_exact_time_window(make_user, two_step_version):
    now = timezone.now()
    early = add_run(two_step_version, created_at=now - timedelta(hours=3))
    late = add_run(two_step_version, created_at=now - timedelta(minutes=30))
    start = timezone.localtime(now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%f")
    page = viewer(make_user).get("/console/runs/", {"created_from": start})
    assert [run.pk for run in page.context["runs"]] == [late.pk]
    end = viewer(make_user).get("/console/runs/", {"created_before": start})
    assert [run.pk for run in end.context["runs"]] == [early.pk]


def test_each_chart_has_its_values_as_a_table_beside_it(make_user, two_step_version):
    add_run(two_step_version, created_at=timezone.now(), latency_ms=5)
    body = viewer(make_user).get(URL, {"period": "24h"}).content.decode()
    assert body.count('<details class="chart-data">') == 3
    table = body.split('<details class="chart-data">', 1)[1].split("</details>", 1)[0]
    today = timezone.localdate().isoformat()
    assert f'>{today}</a></td><td class="num">1</td>' in table
    assert f"/console/runs/?since={today}&amp;until={today}" in table
