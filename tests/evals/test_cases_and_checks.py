"""Eval cases built from what people decided, imported from JSONL, and the checks."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from approvals.models import ReplaySet, SampleItem, SampleReview, SampleVerdict
from evals import cases
from evals.checks import Result, run_checks, validate_expectations
from evals.models import EvalCase, EvalSet
from tests.evals.conftest import live_run

pytestmark = pytest.mark.django_db

FACTS = {
    "status": "succeeded",
    "outcome": "sent",
    "success": True,
    "output": {"total": 72, "subject": "Hello Acme"},
    "steps": {"score": {"total": 72}},
    "route": "outreach",
    "drafts": {"review": {"subject": "Hello Acme", "body": "Hi"}},
    "path": ["score", "review", "done"],
}


def _passed(*expectations) -> list[bool]:
    return [result.passed for result in run_checks(list(expectations), FACTS)]


def test_deterministic_checks_pass_and_fail_on_the_facts():
    assert _passed(
        {"check": "condition", "when": {"path": "output.total", "op": ">=", "value": 70}},
        {"check": "condition", "when": {"path": "output.total", "op": ">", "value": 80}},
        {"check": "outcome", "equals": "sent"},
        {"check": "outcome", "not_equals": "sent"},
        {"check": "route", "equals": "nurture"},
        {"check": "field", "path": "steps.score.total", "equals": 72},
        {"check": "schema", "schema": {"type": "object", "required": ["subject"]}},
        {"check": "schema", "schema": {"type": "object", "required": ["missing"]}},
        {"check": "draft", "step": "review", "equals": {"subject": "Hello Acme"}},
        {"check": "draft", "step": "review", "equals": {"subject": "Hey"}},
        {"check": "draft", "step": "other", "equals": {}},
        {"check": "not_draft", "step": "review", "draft": {"subject": "Hello Acme", "body": "Hi"}},
        {"check": "not_draft", "step": "review", "draft": {"subject": "Old"}},
    ) == [True, False, True, False, False, True, True, False, True, False, False, False, True]


def test_a_failed_check_says_what_it_expected_and_what_it_got():
    [result] = run_checks(
        [{"check": "draft", "step": "review", "equals": {"subject": "Hey"}}], FACTS
    )
    assert result == Result("draft:review", False, 'subject: "Hello Acme" ≠ "Hey"')


def test_a_judge_grades_through_the_provider_registry_offline_with_scripted():
    polite = {
        "check": "judge",
        "name": "polite",
        "rubric": "The subject greets the company.",
        "path": "drafts.review",
        "provider": "scripted",
        "scripted": {
            "reply": {"pass": "{{ subject.subject.startswith('Hello') }}", "reason": "greets"}
        },
    }
    [result] = run_checks([polite], FACTS)
    assert result == Result("polite", True, "greets")


def test_a_judge_that_does_not_answer_a_verdict_fails_the_check():
    judge = {
        "check": "judge",
        "rubric": "x",
        "provider": "scripted",
        "scripted": {"reply": {"maybe": True}},
    }
    [result] = run_checks([judge], FACTS)
    assert not result.passed and "not a verdict" in result.detail


def test_expectations_are_validated_before_they_are_kept():
    assert validate_expectations([{"check": "outcome", "equals": "x"}]) == []
    problems = validate_expectations(
        [{"check": "nope"}, {"check": "condition", "when": {"op": "=="}}, {"check": "draft"}]
    )
    assert len(problems) == 3


def test_reviewer_decisions_become_cases(outreach):
    approved = live_run(outreach, "Acme", approve=True)
    edited = live_run(
        outreach, "Bareco", approve=True, edited_draft={"subject": "Hi Bareco", "body": "B"}
    )
    rejected = live_run(outreach, "Cobalt", approve=False, reason="off tone")
    live_run(outreach, "Delta")  # still waiting: no decision, no case
    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="reviews")
    assert cases.cases_from_reviews(eval_set=eval_set) == 3
    assert cases.cases_from_reviews(eval_set=eval_set) == 0  # built again: nothing new
    by_run = {case.source_run_id: case for case in eval_set.cases.all()}
    assert by_run[approved.pk].expectations == [
        {
            "check": "draft",
            "step": "review",
            "equals": {"subject": "Hello Acme", "body": "We help Acme."},
        },
        {"check": "outcome", "equals": "sent"},
    ]
    assert by_run[edited.pk].origin == "edited"
    assert by_run[edited.pk].expectations[0]["equals"] == {"subject": "Hi Bareco", "body": "B"}
    assert by_run[rejected.pk].expectations == [
        {
            "check": "not_draft",
            "step": "review",
            "draft": {"subject": "Hello Cobalt", "body": "We help Cobalt."},
        }
    ]
    assert by_run[rejected.pk].input == {"company": "Cobalt"}


def test_flagged_sample_runs_and_replay_sets_become_cases(outreach):
    flagged = live_run(outreach, "Acme", approve=True)
    kept = live_run(outreach, "Bareco", approve=True)
    review = SampleReview.objects.create(workflow=outreach.workflow, week="2026-W49", seed="s")
    SampleItem.objects.create(
        review=review, run=flagged, stratum="sent", verdict=SampleVerdict.FLAGGED, category="tone"
    )
    SampleItem.objects.create(review=review, run=kept, stratum="sent", verdict=SampleVerdict.OK)
    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="sample")
    assert cases.cases_from_samples(eval_set=eval_set) == 1
    case = eval_set.cases.get()
    assert case.tags == ["flagged", "tone"] and case.expectations[0]["check"] == "not_draft"
    replays = ReplaySet.objects.create(name="regressions", workflow=outreach.workflow)
    replays.runs.add(kept)
    other = EvalSet.objects.create(workflow=outreach.workflow, name="replays")
    assert cases.cases_from_replay_set(eval_set=other, replay_set=replays) == 1
    assert other.cases.get().expectations == [{"check": "outcome", "equals": "sent"}]


def test_a_jsonl_file_imports_every_case_or_none(outreach, tmp_path):
    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="imported")
    good = [
        {
            "name": "a",
            "input": {"company": "A"},
            "expectations": [{"check": "outcome", "equals": "sent"}],
        },
        {"name": "b", "input": {"company": "B"}, "critical": True, "tags": ["vip"]},
    ]
    assert cases.import_jsonl(eval_set=eval_set, lines=[json.dumps(c) for c in good]) == 2
    bad = [json.dumps(good[0]), '{"name": "c", "expectations": [{"check": "nope"}]}']
    with pytest.raises(cases.InvalidCase, match="line 2"):
        cases.import_jsonl(eval_set=eval_set, lines=bad)
    assert eval_set.cases.count() == 2
    exported = cases.export_jsonl(eval_set=eval_set)
    again = EvalSet.objects.create(workflow=outreach.workflow, name="again")
    assert cases.import_jsonl(eval_set=again, lines=exported.splitlines()) == 2
    assert again.cases.get(name="b").critical


def test_the_import_command_creates_the_set_and_refuses_a_bad_file(outreach, tmp_path):
    path = tmp_path / "cases.jsonl"
    path.write_text(json.dumps({"name": "a", "input": {"company": "A"}}) + "\n")
    out = io.StringIO()
    call_command("import_eval_cases", outreach.workflow.slug, "ci", str(path), stdout=out)
    assert "1 case(s) imported" in out.getvalue()
    assert EvalCase.objects.filter(eval_set__name="ci").count() == 1
    path.write_text("not json\n")
    with pytest.raises(CommandError, match="line 1"):
        call_command("import_eval_cases", outreach.workflow.slug, "ci", str(path))


def test_the_admin_action_imports_an_uploaded_file(outreach, admin_client):
    from django.core.files.uploadedfile import SimpleUploadedFile

    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="upload")
    line = json.dumps({"name": "a", "input": {"company": "A"}}).encode()
    url = "/admin/evals/evalset/"
    form = admin_client.post(url, {"action": "import_cases", "_selected_action": [eval_set.pk]})
    assert b'type="file"' in form.content
    done = admin_client.post(
        url,
        {
            "action": "import_cases",
            "_selected_action": [eval_set.pk],
            "apply": "Import",
            "file": SimpleUploadedFile("cases.jsonl", line + b"\n"),
        },
        follow=True,
    )
    assert b"1 case(s) imported" in done.content
    assert eval_set.cases.count() == 1


def test_the_admin_actions_build_cases_from_reviews_and_replay_sets(outreach, admin_client):
    approved = live_run(outreach, "Acme", approve=True)
    ReplaySet.objects.create(name="regressions", workflow=outreach.workflow).runs.add(approved)
    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="built")
    url = "/admin/evals/evalset/"
    for action in ("build_from_reviews", "build_from_replay_sets"):
        admin_client.post(url, {"action": action, "_selected_action": [eval_set.pk]})
    assert sorted(eval_set.cases.values_list("origin", flat=True)) == ["approved"]  # one per run
    other = EvalSet.objects.create(workflow=outreach.workflow, name="replays-only")
    admin_client.post(url, {"action": "build_from_replay_sets", "_selected_action": [other.pk]})
    assert list(other.cases.values_list("origin", flat=True)) == ["replay"]
