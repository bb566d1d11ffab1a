"""Shadow mode: the candidate beside the live version, on the same live inputs."""

from __future__ import annotations

import pytest

from evals.models import ShadowRollout
from evals.shadow import shadow_report, shadow_run_of, start_shadow, stop_shadow
from runs import engine
from runs.engine.definition import freeze_candidate
from runs.engine.errors import InvalidState
from runs.models import Run
from tests.conftest import drive
from tests.evals.conftest import live_run, set_subject
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db


@pytest.fixture
def inline_shadows(settings):
    """Shadow runs started inline instead of through the queue."""
    settings.BOSUN_SHADOW_QUEUE = "evals.tasks.start_shadow_run"


@pytest.fixture
def rollout(outreach) -> ShadowRollout:
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    return start_shadow(
        workflow=outreach.workflow, candidate=freeze_candidate(workflow=outreach.workflow)
    )


def test_a_live_start_queues_a_shadow_run_of_the_candidate_after_its_commit(
    rollout, outreach, inline_shadows, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        live = engine.start_run(workflow=outreach.workflow, input={"company": "Acme"}).run
    shadow = Run.objects.get(shadow_of=live)
    assert (shadow.mode, shadow.version, shadow.input) == ("shadow", rollout.candidate, live.input)
    assert shadow.tools_from_id == live.pk
    # Started once per live run, however often the task runs.
    assert shadow_run_of(run_id=live.pk) == shadow
    assert Run.objects.filter(shadow_of=live).count() == 1


def test_a_failing_shadow_never_fails_or_holds_the_live_start(
    rollout, outreach, settings, django_capture_on_commit_callbacks
):
    settings.BOSUN_SHADOW_QUEUE = "tests.evals.test_shadow.explode"
    with django_capture_on_commit_callbacks(execute=True):
        started = engine.start_run(workflow=outreach.workflow, input={"company": "Acme"})
    assert started.created and not Run.objects.filter(mode="shadow").exists()


def explode(run_id: int) -> None:
    raise RuntimeError("the queue is down")


def test_no_shadow_without_an_active_rollout(
    rollout, outreach, inline_shadows, django_capture_on_commit_callbacks
):
    stop_shadow(rollout_id=rollout.pk)
    with django_capture_on_commit_callbacks(execute=True):
        engine.start_run(workflow=outreach.workflow, input={"company": "Acme"})
    assert not Run.objects.filter(mode="shadow").exists()


def test_one_active_shadow_per_workflow(rollout, outreach):
    with pytest.raises(InvalidState):
        start_shadow(workflow=outreach.workflow, candidate=outreach)


def test_the_report_shows_where_the_candidate_differs_from_the_live_run_and_from_people(
    rollout, outreach, inline_shadows, django_capture_on_commit_callbacks
):
    decisions = {
        "Acme": {"approve": True},
        "Bareco": {
            "approve": True,
            "edited_draft": {"subject": "Hi Bareco", "body": "We help Bareco."},
        },
        "Cobalt": {"approve": False, "reason": "off tone"},
    }
    for company, decision in decisions.items():
        with django_capture_on_commit_callbacks(execute=True):
            live = live_run(outreach, company, **decision)
        drive(Run.objects.get(shadow_of=live).pk)
    report = shadow_report(rollout=rollout)
    assert len(report.compared) == 3 and len(report.differing) == 3  # "Hi" against "Hello"
    by_company = {pair.live.input["company"]: pair for pair in report.pairs}
    assert by_company["Acme"].human == "approved" and by_company["Acme"].agrees_with_human is False
    assert by_company["Bareco"].human == "edited" and by_company["Bareco"].agrees_with_human is True
    assert (
        by_company["Cobalt"].human == "rejected" and by_company["Cobalt"].agrees_with_human is True
    )
    assert report.human_agreement == (2, 3)
    # The shadow sent nothing: only the two live sends reached the vendor.
    assert Execution.objects.count() == 2
    assert all(pair.shadow.outcome == "sent" for pair in report.pairs)


def test_the_shadow_page_lists_the_pairs(
    rollout, outreach, inline_shadows, admin_client, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        live = live_run(outreach, "Acme", approve=True)
    drive(Run.objects.get(shadow_of=live).pk)
    page = admin_client.get(f"/console/shadows/{rollout.pk}/")
    assert page.status_code == 200
    assert b"1 live run(s) shadowed" in page.content and b"candidate disagrees" in page.content
    assert admin_client.get("/console/shadows/").status_code == 200
