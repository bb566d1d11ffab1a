"""The dead-letter queue: dead runs grouped by failed step and error type,
and the bulk retry that confirms the count before it retries."""

from __future__ import annotations

import pytest
from django.test import Client

from runs import engine, views
from runs.models import Run
from tests.conftest import drive
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version

HX = {"HTTP_HX_REQUEST": "true"}
URL = "/console/dead-letters/"
RETRY = "/console/dead-letters/retry/"


def client_for(make_user, role: str | None = "operator", **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(make_user(role))
    return client


def dead(version, step: str, error_type: str, **fields) -> Run:
    """A dead run whose attempt at `step` failed with `error_type`."""
    return add_run(
        version,
        status="failed",
        dead=True,
        latency_ms=10,
        current_step=step,
        error=f"{step}: it broke",
        steps=[{"step_key": step, "status": "failed", "error_type": error_type}],
        **fields,
    )


@pytest.fixture
def dead_runs(two_step_version):
    """Three timeouts at `work`, two refusals at `work`, one timeout at
    `done`; plus a failed run that is not dead-lettered and a running one."""
    runs = {
        "timeout": [dead(two_step_version, "work", "timeout") for _ in range(3)],
        "refused": [dead(two_step_version, "work", "refused:not_in_role") for _ in range(2)],
        "other": [dead(two_step_version, "done", "timeout")],
    }
    add_run(two_step_version, status="failed", current_step="work")
    add_run(two_step_version, status="running")
    return runs


def key(version, step: str, error_type: str) -> str:
    return views.group_key(version.workflow_id, step, error_type)


def test_dead_runs_are_grouped_by_failed_step_and_error_type(
    make_user, dead_runs, two_step_version
):
    response = client_for(make_user, "viewer").get(URL)
    assert response.status_code == 200
    groups = [(g["current_step"], g["error_type"], g["runs"]) for g in response.context["groups"]]
    assert groups == [
        ("work", "timeout", 3),
        ("work", "refused:not_in_role", 2),
        ("done", "timeout", 1),
    ]
    assert len(response.context["runs"]) == 6
    body = response.content.decode()
    assert "<html" in body and "refused:not_in_role" in body
    assert 'name="group"' not in body  # a viewer sees no retry controls


def test_a_group_shows_its_runs_in_a_partial(make_user, dead_runs, two_step_version):
    client = client_for(make_user)
    chosen = key(two_step_version, "work", "refused:not_in_role")
    response = client.get(URL, {"group": chosen}, **HX)
    assert response.status_code == 200
    assert response.content.decode().lstrip().startswith('<div id="deadletters">')
    assert {r.pk for r in response.context["runs"]} == {r.pk for r in dead_runs["refused"]}
    assert client.get(URL, {"group": "x|y"}).status_code == 400


def test_the_list_takes_the_same_queries_for_few_and_many_dead_runs(
    make_user, two_step_version, django_assert_num_queries
):
    client = client_for(make_user)
    for _ in range(3):
        dead(two_step_version, "work", "timeout")
    # session, user, two permission look-ups, the groups, the runs, the
    # engaged kill switches (the banner)
    with django_assert_num_queries(7):
        client.get(URL)
    for index in range(27):
        dead(two_step_version, f"step{index % 5}", f"type{index % 3}")
    with django_assert_num_queries(6):  # a partial has no banner
        response = client.get(URL, **HX)
    assert len(response.context["runs"]) == 30


@pytest.mark.parametrize("headers", [{}, HX])
def test_a_bulk_retry_shows_the_count_then_retries_exactly_those_runs(
    make_user, dead_runs, two_step_version, headers
):
    client = client_for(make_user)
    single = dead_runs["other"][0]
    confirm = client.post(
        RETRY,
        {"group": key(two_step_version, "work", "timeout"), "run": [str(single.pk)]},
        **headers,
    )
    assert confirm.status_code == 200
    expected = sorted([r.pk for r in dead_runs["timeout"]] + [single.pk])
    assert confirm.context["run_ids"] == expected
    text = confirm.content.decode()
    assert "Retry 4 dead runs from their failed step?" in text
    assert ("<html" in text) == (not headers)
    assert Run.objects.filter(status="failed", dead_lettered_at__isnull=False).count() == 6

    # a run that dies after the confirmation is not part of it
    late = dead(two_step_version, "work", "timeout")
    done = client.post(RETRY, {"confirm": "yes", "run": expected}, **headers)
    report = URL + "?retried=" + "%2C".join(str(pk) for pk in expected)
    if headers:
        assert done["HX-Redirect"] == report
    else:
        assert (done.status_code, done["Location"]) == (302, report)
    retried = set(Run.objects.filter(status="queued").values_list("id", flat=True))
    assert retried == set(expected)
    assert Run.objects.get(pk=late.pk).status == "failed"
    page = client.get(URL).content.decode()
    assert "Retried 4 run(s) from their failed step" in page


def test_runs_that_cannot_be_retried_any_more_are_reported(make_user, dead_runs):
    client = client_for(make_user)
    first, second = dead_runs["refused"]
    engine.retry_run(run_id=first.pk)  # someone else was quicker
    response = client.post(RETRY, {"confirm": "yes", "run": [first.pk, second.pk]}, follow=True)
    body = response.content.decode()
    assert "Retried 1 run(s)" in body
    assert f"1 run(s) were not retried: run {first.pk}: only a failed run can be retried" in body
    assert Run.objects.get(pk=second.pk).status == "queued"


def test_a_real_dead_run_is_retried_from_its_failed_step(make_user, make_workflow):
    version = make_workflow(
        [
            {
                "key": "call",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"failures": 1, "retryable": False}},
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
        ]
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed"
    client = client_for(make_user)
    [group] = client.get(URL).context["groups"]
    assert group["current_step"] == "call" and group["runs"] == 1
    confirm = client.post(RETRY, {"group": group["key"]})
    assert confirm.context["run_ids"] == [run.pk]
    client.post(RETRY, {"confirm": "yes", "run": [run.pk]})
    run = drive(run.pk)
    assert (run.status, run.success) == ("succeeded", True)


def test_a_selection_beyond_the_limit_is_cut_and_says_so(make_user, two_step_version, monkeypatch):
    monkeypatch.setattr(views, "BULK_LIMIT", 2)
    runs = [dead(two_step_version, "work", "timeout") for _ in range(3)]
    response = client_for(make_user).post(
        RETRY, {"group": key(two_step_version, "work", "timeout")}
    )
    assert response.context["run_ids"] == [runs[0].pk, runs[1].pk]  # the oldest first
    assert "The selection holds 3 runs; this retries the oldest 2." in response.content.decode()


def test_an_empty_or_bad_selection_retries_nothing(make_user, dead_runs):
    client = client_for(make_user)
    empty = client.post(RETRY, {}, follow=True)
    assert "Nothing to retry" in empty.content.decode()
    assert client.post(RETRY, {"run": ["12x"]}).status_code == 400
    assert client.post(RETRY, {"group": "nonsense"}).status_code == 400
    assert not Run.objects.filter(status="queued").exists()


def test_the_bulk_retry_needs_a_csrf_token(make_user, dead_runs):
    client = client_for(make_user, enforce_csrf_checks=True)
    ids = [r.pk for r in dead_runs["timeout"]]
    assert client.post(RETRY, {"confirm": "yes", "run": ids}).status_code == 403
    assert client.post(RETRY, {"confirm": "yes", "run": ids}, **HX).status_code == 403
    assert not Run.objects.filter(status="queued").exists()


@pytest.mark.parametrize("role", ["operator", "manager", "reviewer", "viewer", None, "anonymous"])
def test_who_may_see_and_retry_dead_letters(make_user, dead_runs, role):
    client = Client() if role == "anonymous" else client_for(make_user, role)
    page = client.get(URL)
    ids = [r.pk for r in dead_runs["timeout"]]
    retry = client.post(RETRY, {"confirm": "yes", "run": ids})
    if role == "anonymous":
        assert page.status_code == retry.status_code == 302
        assert retry["Location"].startswith("/accounts/login/")
    else:
        assert page.status_code == (200 if role else 403)
        assert retry.status_code == (302 if role == "operator" else 403)
    queued = Run.objects.filter(status="queued").count()
    assert queued == (3 if role == "operator" else 0)


def _failing(make_workflow, **args):
    return make_workflow(
        [
            {
                "key": "call",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"failures": 1, **args}},
                "max_attempts": 1,
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
        ]
    )


def test_the_confirmation_warns_of_errors_not_worth_another_attempt(make_user, make_workflow):
    hard = _failing(make_workflow, retryable=False)  # not worth another attempt
    flaky = _failing(make_workflow, retryable=True)  # retries exhausted
    ids = [drive(engine.start_run(workflow=v.workflow, input={}).run.pk).pk for v in (hard, flaky)]
    client = client_for(make_user)
    confirm = client.post(RETRY, {"run": ids})
    assert confirm.context["doubtful_runs"] == 1
    body = confirm.content.decode()
    assert "1 of these failed with an error that was not worth another attempt" in body
    assert "tool: 1" in body
    only_flaky = client.post(RETRY, {"run": [ids[1]]})
    assert 'id="retry-doubtful"' not in only_flaky.content.decode()


def test_after_a_bulk_retry_the_list_reports_what_became_of_each_run(make_user, make_workflow):
    version = _failing(make_workflow, retryable=True)
    ids = [drive(engine.start_run(workflow=version.workflow, input={}).run.pk).pk for _ in range(2)]
    client = client_for(make_user)
    done = client.post(RETRY, {"confirm": "yes", "run": ids})
    assert done.status_code == 302 and f"retried={ids[0]}%2C{ids[1]}" in done["Location"]
    drive(ids[0])  # one has run since (and succeeded on its second attempt)
    report = client.get(done["Location"])
    retried = report.context["retried"]
    assert [(run.pk, run.status) for run in retried["runs"]] == [
        (ids[0], "succeeded"),
        (ids[1], "queued"),
    ]
    assert retried["active"] and "1 succeeded, 1 queued" in report.content.decode()


def test_a_run_keeps_the_error_of_the_attempt_that_dead_lettered_it(make_user, make_workflow):
    hard = _failing(make_workflow, retryable=False)
    flaky = _failing(make_workflow, retryable=True)
    runs = [drive(engine.start_run(workflow=v.workflow, input={}).run.pk) for v in (hard, flaky)]
    assert [(r.dead_step, r.dead_error_type, r.dead_retryable) for r in runs] == [
        ("call", "tool", False),
        ("call", "tool", True),
    ]
    for run in runs:  # the same as the attempt's own record
        record = run.step_runs.get(seq=run.seq, attempt=run.attempt)
        assert (record.error_type, record.retryable) == (run.dead_error_type, run.dead_retryable)
    engine.retry_run(run_id=runs[0].pk)  # no longer dead: nothing kept
    retried = Run.objects.get(pk=runs[0].pk)
    assert (retried.dead_step, retried.dead_error_type, retried.dead_retryable) == ("", "", None)


def test_the_queue_groups_and_counts_by_what_the_dead_runs_keep(make_user, make_workflow):
    version = _failing(make_workflow, retryable=False)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    # The run's own record is what the page reads, not its step runs.
    Run.objects.filter(pk=run.pk).update(dead_error_type="kept", dead_retryable=True)
    response = client_for(make_user).get(URL)
    [group] = response.context["groups"]
    assert (group["current_step"], group["error_type"], group["not_retryable"]) == (
        "call",
        "kept",
        0,
    )
    assert group["cause"] == "attempts exhausted on a retryable error"
    assert [r.error_type for r in response.context["runs"]] == ["kept"]
    doubtful = client_for(make_user).post(RETRY, {"run": [run.pk]}).context["doubtful_runs"]
    assert doubtful == 0


def test_the_queue_reads_no_step_runs(make_user, dead_runs):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for(make_user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL)
    assert len(response.context["groups"]) == 3
    assert not [q["sql"] for q in queries if "runs_steprun" in q["sql"]]


def test_the_migration_fills_what_the_dead_runs_keep(two_step_version, monkeypatch):
    from importlib import import_module

    from django.apps import apps

    migration = import_module("runs.migrations.0028_dead_letter_summary")
    timeouts = [dead(two_step_version, "work", "timeout") for _ in range(3)]
    refused = dead(two_step_version, "work", "refused:not_in_role")
    refused.step_runs.update(retryable=False)
    unrecorded = add_run(two_step_version, status="failed", dead=True, current_step="work")
    alive = add_run(
        two_step_version, status="failed", current_step="work",
        steps=[{"step_key": "work", "status": "failed", "error_type": "timeout"}],
    )  # fmt: skip
    Run.objects.update(dead_step="", dead_error_type="", dead_retryable=None)  # as before
    monkeypatch.setattr(migration, "BATCH", 2)  # more than one batch
    migration.fill_dead_runs(apps, None)
    assert dict(Run.objects.values_list("pk", "dead_step")) == {
        **{r.pk: "work" for r in [*timeouts, refused, unrecorded]},
        alive.pk: "",
    }
    kept = dict(Run.objects.values_list("pk", "dead_error_type"))
    assert [kept[r.pk] for r in timeouts] == ["timeout"] * 3
    assert kept[refused.pk] == "refused:not_in_role"
    assert Run.objects.get(pk=refused.pk).dead_retryable is False
    assert kept[unrecorded.pk] == ""  # no step run: as the page showed it
    assert kept[alive.pk] == ""  # not dead-lettered
