"""The runs list and the run timeline: pages and htmx partials, filters,
keyset pages, redaction, live polling, retry and cancel, roles."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest
from policies.models import AuditEntry
from runs import engine, views
from runs.models import Run
from tests.conftest import drive, waiting_for_review
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

# The shared fixtures, under their own names (pytest finds them here).
two_step_version = fx.two_step_version
many_runs = fx.many_runs

HX = {"HTTP_HX_REQUEST": "true"}
LIST = reverse("console-run-list")
ROLES = ["operator", "manager", "reviewer", "viewer"]


def client_for(make_user, role: str | None = "operator", **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(make_user(role))
    return client


def failing_version(make_workflow):
    return make_workflow(
        [
            {
                "key": "call",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"retryable": False}},
                "edges": {"next": "done"},
            },
            {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
        ]
    )


# --- the list ------------------------------------------------------------------


def test_the_list_is_a_whole_page_and_its_filter_answers_the_table_alone(make_user, many_runs):
    runs = many_runs(3)
    client = client_for(make_user, "viewer")
    page = client.get(LIST)
    assert page.status_code == 200
    body = page.content.decode()
    assert "<html" in body and 'id="run-table"' in body and 'hx-get="/console/runs/"' in body
    assert all(f"#{run.pk}<" in body for run in runs)
    partial = client.get(LIST, {"status": "failed"}, **HX)
    assert partial.status_code == 200
    text = partial.content.decode()
    assert "<html" not in text and text.lstrip().startswith('<div id="run-table">')
    [failed] = [run for run in runs if run.status == "failed"]
    assert f"#{failed.pk}<" in text
    assert all(f"#{run.pk}<" not in text for run in runs if run is not failed)
    assert page["Vary"].count("HX-Request") == 1


def test_the_list_filters_by_workflow_version_date_outcome_and_success(
    make_user, two_step_version, make_workflow
):
    other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}])
    old = add_run(two_step_version, created_at=timezone.now() - timedelta(days=10))
    won = add_run(two_step_version, outcome="qualified", success=True)
    lost = add_run(two_step_version, outcome="disqualified", success=False)
    elsewhere = add_run(other)
    client = client_for(make_user, "viewer")

    def shown(**params) -> set[int]:
        response = client.get(LIST, params, **HX)
        assert response.status_code == 200
        return {run.pk for run in response.context["runs"]}

    assert shown(workflow=other.workflow.slug) == {elsewhere.pk}
    assert shown(version=two_step_version.pk) == {old.pk, won.pk, lost.pk}
    assert shown(outcome="qualified") == {won.pk}
    assert shown(success="no") == {lost.pk}
    week_ago = (timezone.now() - timedelta(days=7)).date().isoformat()
    assert old.pk not in shown(since=week_ago)
    assert shown(until=(timezone.now() - timedelta(days=9)).date().isoformat()) == {old.pk}


def test_the_list_pages_by_keyset_both_ways(make_user, two_step_version, monkeypatch):
    monkeypatch.setattr(views, "PAGE_SIZE", 2)
    ids = [add_run(two_step_version).pk for _ in range(5)]
    client = client_for(make_user, "viewer")
    first = client.get(LIST)
    assert [r.pk for r in first.context["runs"]] == ids[:-3:-1]
    assert first.context["page"]["newer"] == ""
    second = client.get(LIST + first.context["page"]["older"])
    assert [r.pk for r in second.context["runs"]] == [ids[2], ids[1]]
    third = client.get(LIST + second.context["page"]["older"], **HX)
    assert [r.pk for r in third.context["runs"]] == [ids[0]]
    assert third.context["page"]["older"] == ""
    back = client.get(LIST + third.context["page"]["newer"])
    assert [r.pk for r in back.context["runs"]] == [ids[2], ids[1]]


def test_bad_filters_are_a_form_error(make_user, many_runs):
    many_runs(1)
    client = client_for(make_user, "viewer")
    response = client.get(LIST, {"status": "sleeping", "since": "2024-13-40"})
    assert response.status_code == 400
    assert (
        "status" in response.context["form"].errors and "since" in response.context["form"].errors
    )
    swapped = client.get(LIST, {"since": "2025-02-02", "until": "2025-02-01"}, **HX)
    assert swapped.status_code == 200  # htmx swaps only 2xx: the errors must show
    assert "The end date is before the start date." in swapped.content.decode()


@pytest.mark.parametrize(
    "headers,queries",
    # session, user, the user's and the groups' permissions, the runs; the
    # whole page also fills the workflow and version choices of the filter,
    # and reads the engaged kill switches for its banner.
    [({}, 8), (HX, 5)],
)
def test_the_list_takes_the_same_queries_for_3_runs_as_for_30(
    make_user, many_runs, django_assert_num_queries, headers, queries
):
    client = client_for(make_user, "viewer")
    many_runs(3)
    with django_assert_num_queries(queries) as three:
        client.get(LIST, {"status": "failed"}, **headers)
    many_runs(27)
    with django_assert_num_queries(len(three)):
        response = client.get(LIST, **headers)
    assert len(response.context["runs"]) == 30


# --- the timeline ----------------------------------------------------------------


def test_the_timeline_shows_steps_decisions_versions_and_totals(make_user, make_workflow):
    run_id = waiting_for_review(make_workflow)
    run = Run.objects.get(pk=run_id)
    Run.objects.filter(pk=run_id).update(trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    client = client_for(make_user, "operator")
    response = client.get(reverse("console-run-detail", args=[run_id]))
    assert response.status_code == 200
    body = response.content.decode()
    assert "4bf92f3577b34da6a3ce929d0e0e4736" in body
    assert f"{run.workflow.slug} v{run.version.number}" in body
    assert str(run.role_version) in body
    # the approval step records its attempt once decided; until then it is the current step
    assert 'id="step-current"' in body and "for approval" in body
    assert "Waiting" in body and 'hx-trigger="every 2s"' in body
    assert "Pending" in body  # the approval request, undecided
    assert "Cancel the run" in body and "Retry from the failed step" not in body
    # Who held the run: the one claim that executed it up to the review.
    (claim,) = run.lease_history
    assert "Lease holders (1)" in body and claim["worker"] in body


def test_the_timeline_lists_each_attempt_with_its_error_and_the_decisions(
    make_user, two_step_version
):
    run = add_run(
        two_step_version,
        status="failed",
        dead=True,
        cost="0.5",
        latency_ms=50,
        error="work: planned failure",
        steps=[
            {
                "step_key": "draft",
                "kind": "llm",
                "edge": "next",
                "model_requested": "claude-haiku-4-5",
                "model_answered": "claude-haiku-4-5-20251001",
                "provider": "anthropic",
                "tokens_in": 1200,
                "tokens_out": 345,
                "cost_usd": Decimal("0.4"),
                "duration_ms": 812.5,
                "flags": ["competitor_mention"],
            },
            {"step_key": "work", "status": "failed", "error": "timed out", "error_type": "timeout"},
        ],
    )
    add_approval(
        run,
        status="approved",
        decided_by_label="rita",
        decision_reason="tone fixed",
        edit_diff="-Hello\n+Hi",
    )
    body = (
        client_for(make_user, "operator")
        .get(reverse("console-run-detail", args=[run.pk]))
        .content.decode()
    )
    for text in (
        "claude-haiku-4-5-20251001",
        "1200 / 345",
        "812.5 ms",
        "competitor_mention",
        "timeout: timed out",
        "rita",
        "tone fixed",
        "+Hi",
        "Retry from the failed step",
    ):
        assert text in body, text
    assert 'hx-trigger="every 2s"' not in body  # a finished run does not poll


def test_people_without_personal_data_permission_see_step_records_redacted(
    make_user, two_step_version
):
    run = add_run(
        two_step_version,
        input={"email": "dana@acme.example"},
        steps=[{"input": {"to": "dana@acme.example"}, "output": {"phone": "+1 415 555 0100"}}],
    )
    url = reverse("console-run-detail", args=[run.pk])
    seen = client_for(make_user, "viewer").get(url).content.decode()
    assert "dana@acme.example" not in seen and "+1 415 555 0100" not in seen
    assert "[EMAIL]" in seen and "[PHONE]" in seen
    full = client_for(make_user, "operator").get(url).content.decode()
    assert "dana@acme.example" in full and "+1 415 555 0100" in full


def test_polling_stops_with_286_once_the_run_is_terminal(make_user, make_workflow):
    run_id = waiting_for_review(make_workflow)
    client = client_for(make_user, "viewer")
    url = reverse("console-run-detail", args=[run_id])
    live = client.get(url, **HX)
    assert live.status_code == 200
    assert live.content.decode().startswith('<section id="timeline" hx-get=')
    engine.cancel_run(run_id=run_id, reason="test")
    done = client.get(url, **HX)
    assert done.status_code == 286
    text = done.content.decode()
    assert "Cancelled" in text and "every 2s" not in text and "<html" not in text
    assert client.get(url).status_code == 200  # the page itself is a plain 200


def test_the_timeline_of_an_unknown_run_is_404(make_user):
    assert client_for(make_user, "viewer").get("/console/runs/999999/").status_code == 404


def test_the_timeline_takes_a_fixed_number_of_queries(
    make_user, two_step_version, django_assert_num_queries
):
    client = client_for(make_user, "operator")
    few = add_run(two_step_version, steps=[{}] * 3)
    many = add_run(two_step_version, steps=[{}] * 30)
    add_approval(many)
    client.get(reverse("console-run-detail", args=[few.pk]))
    with django_assert_num_queries(9) as first:
        client.get(reverse("console-run-detail", args=[few.pk]), **HX)
    with django_assert_num_queries(len(first)):
        client.get(reverse("console-run-detail", args=[many.pk]), **HX)


# --- retry and cancel ----------------------------------------------------------------


def test_an_operator_retries_a_dead_run_from_the_console(make_user, make_workflow):
    version = failing_version(make_workflow)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed" and run.dead_lettered_at is not None
    client = client_for(make_user, "operator")
    response = client.post(reverse("console-run-retry", args=[run.pk]), **HX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == reverse("console-run-detail", args=[run.pk])
    run.refresh_from_db()
    assert (run.status, run.dead_lettered_at, run.attempt) == ("queued", None, 2)
    assert AuditEntry.objects.get(action="run.retried").actor.startswith("user:operator-")
    # without htmx: a plain redirect, and the message on the page
    again = client.post(reverse("console-run-retry", args=[run.pk]), follow=True)
    assert again.redirect_chain[-1][1] == 302
    assert "was not retried" in again.content.decode()


@pytest.mark.parametrize("headers", [{}, HX])
def test_an_operator_cancels_an_active_run_and_its_approval(make_user, make_workflow, headers):
    run_id = waiting_for_review(make_workflow)
    operator = make_user("operator")
    client = Client()
    client.force_login(operator)
    response = client.post(reverse("console-run-cancel", args=[run_id]), **headers)
    detail = reverse("console-run-detail", args=[run_id])
    if headers:  # htmx follows HX-Redirect itself
        assert (response.status_code, response["HX-Redirect"]) == (200, detail)
    else:
        assert (response.status_code, response["Location"]) == (302, detail)
    run = Run.objects.get(pk=run_id)
    assert run.status == "cancelled" and "in the console" in run.error
    assert ApprovalRequest.objects.get(run_id=run_id).status == "cancelled"
    assert f"Run {run_id} is cancelled." in client.get(detail).content.decode()
    # the audit log names the person who cancelled
    entry = AuditEntry.objects.get(action="run.cancelled", target_id=str(run_id))
    assert entry.actor == f"user:{operator.username}"


def test_unsafe_requests_without_a_csrf_token_are_refused(make_user, make_workflow):
    run_id = waiting_for_review(make_workflow)
    client = client_for(make_user, "operator", enforce_csrf_checks=True)
    assert client.post(reverse("console-run-cancel", args=[run_id])).status_code == 403
    assert client.post(reverse("console-run-retry", args=[run_id]), **HX).status_code == 403
    assert Run.objects.get(pk=run_id).status == "waiting"


def test_actions_refuse_get(make_user, make_workflow):
    run_id = waiting_for_review(make_workflow)
    client = client_for(make_user, "operator")
    assert client.get(reverse("console-run-cancel", args=[run_id])).status_code == 405


# --- roles ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", [*ROLES, None, "anonymous"])
@pytest.mark.parametrize("page", ["list", "detail"])
def test_who_may_see_the_run_pages(make_user, many_runs, role, page):
    [run] = many_runs(1)
    url = LIST if page == "list" else reverse("console-run-detail", args=[run.pk])
    client = Client() if role == "anonymous" else client_for(make_user, role)
    response = client.get(url)
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
    else:
        assert response.status_code == (200 if role else 403)


def test_an_anonymous_htmx_request_is_sent_to_the_login_page(many_runs):
    response = Client().get(LIST, HTTP_HX_CURRENT_URL="http://testserver/console/runs/", **HX)
    assert response.status_code == 200
    assert response["HX-Redirect"] == "/accounts/login/?next=/console/runs/"


@pytest.mark.parametrize("role", [*ROLES, None, "anonymous"])
@pytest.mark.parametrize("action", ["retry", "cancel"])
def test_only_operators_retry_and_cancel(make_user, two_step_version, role, action):
    run = add_run(two_step_version, status="failed" if action == "retry" else "running")
    client = Client() if role == "anonymous" else client_for(make_user, role)
    response = client.post(reverse(f"console-run-{action}", args=[run.pk]))
    expected = {"operator": 302, "anonymous": 302}.get(role, 403)
    assert response.status_code == expected
    run.refresh_from_db()
    changed = run.status != ("failed" if action == "retry" else "running")
    assert changed == (role == "operator")
    if role in ROLES:
        page = client.get(reverse("console-run-detail", args=[run.pk])).content.decode()
        button = "Retry from the failed step" if action == "retry" else "Cancel the run"
        assert (button in page) == (role == "operator" and not changed)


@pytest.mark.parametrize(
    "role,target", [("viewer", "/console/dashboard/"), (None, None), ("anonymous", None)]
)
def test_the_console_home_leads_to_the_dashboard(make_user, role, target):
    client = Client() if role == "anonymous" else client_for(make_user, role)
    response = client.get("/console/")
    if role == "anonymous":
        assert response["Location"].startswith("/accounts/login/")
    elif role is None:
        assert response.status_code == 403
    else:
        assert (response.status_code, response["Location"]) == (302, target)


def test_the_timeline_shows_model_and_vendor_spend_credits_and_savings(make_user, two_step_version):
    spent = {"model_usd": Decimal("0.01"), "vendor_usd": Decimal("0.1"), "credits": {"enrichco": 5}}
    run = add_run(
        two_step_version,
        cost="0.11",
        **spent,
        steps=[
            {"vendor": "enrichco", "credits": 5, "vendor_usd": Decimal("0.1")},
            {"cache_hit": True, "vendor": "enrichco", "credits_saved": 5},
        ],
    )
    page = client_for(make_user).get(reverse("console-run-detail", args=[run.pk]))
    body = page.content.decode()
    assert "(model $0.010000 · vendors $0.100000)" in body
    assert "enrichco 5 cr" in body and "(saved enrichco 5 cr)" in body
    assert "enrichco 5 cr $0.1000" in body


def test_the_list_filters_runs_by_what_they_wait_for(make_user, two_step_version):
    paused = add_run(two_step_version, status="waiting", wait_reason="paused")
    held = add_run(two_step_version, status="waiting", wait_reason="breaker:vendor:enrichco")
    review = add_run(two_step_version, status="waiting", wait_reason="approval")
    add_run(two_step_version)
    client = client_for(make_user)
    for waiting_for, run in (("paused", paused), ("breaker", held), ("approval", review)):
        page = client.get(reverse("console-run-list"), {"waiting_for": waiting_for})
        assert [r.pk for r in page.context["runs"]] == [run.pk], waiting_for
