"""The demo's evaluation: an eval set from the reviewer's decisions and a
candidate in shadow whose disagreements the console shows as it opens."""

from __future__ import annotations

import pytest

from demo.evaluation import EDITED_SUBJECT, EVAL_SET
from demo.history import load_demo
from evals.models import EvalCase, ShadowRollout
from evals.shadow import shadow_report
from runs.models import Run, Workflow

SMALL = {"weeks": 2, "per_week": 40, "jobs": 1}

pytestmark = pytest.mark.django_db


@pytest.fixture
def loaded():
    return load_demo(**SMALL)


def test_the_demo_builds_an_eval_set_from_the_reviewers_decisions(loaded):
    cases = EvalCase.objects.filter(eval_set__name=EVAL_SET)
    origins = set(cases.values_list("origin", flat=True))
    assert cases.exists() and {"approved", "rejected"} <= origins
    assert not cases.filter(source_run__mode="shadow").exists()


def test_the_demo_shadows_its_live_leads_with_a_candidate_that_decides_otherwise(loaded):
    rollout = ShadowRollout.objects.get()
    assert rollout.active and rollout.candidate.candidate  # never published
    workflow = Workflow.objects.get(slug="lead-qualification")
    assert workflow.current_version.number == 1  # the draft was put back
    report = shadow_report(rollout=rollout)
    assert len(report.compared) > 10 and report.differing
    # The candidate counts managers as buyers: some leads route higher,
    # none lower.
    routes = {(p.live_facts["route"], p.shadow_facts["route"]) for p in report.differing}
    assert ("archive", "nurture") in routes
    assert not routes & {("outreach", "nurture"), ("outreach", "archive"), ("nurture", "archive")}
    # No shadow read was stubbed: the live runs' calls answered them.
    shadows = Run.objects.filter(mode="shadow")
    assert shadows.count() == len(report.pairs) == loaded.evaluation.shadowed
    assert not shadows.filter(
        tool_calls_made__status="stubbed", tool_calls_made__side_effect="read"
    )


def test_the_shadow_page_lists_the_disagreements_as_the_demo_opens(loaded, admin_client):
    rollout = ShadowRollout.objects.get()
    page = admin_client.get(f"/console/shadows/{rollout.pk}/")
    assert page.status_code == 200
    html = page.content.decode()
    table = html.split('id="disagreements"')[1].split("</table>")[0]
    report = shadow_report(rollout=rollout)
    rows = table.count('class="differs"')
    assert rows == len(report.differing) > 0
    # Leads no person looked at (the live run archived them) ...
    assert "archive / archive → nurture / nurture" in table
    # ... and drafts a person decided: approved as the live version wrote
    # it (the candidate's differs), and rejected (the candidate's is
    # another draft).
    assert "approved · candidate disagrees" in table
    assert "rejected · candidate agrees" in table


def test_the_candidate_writes_the_subject_the_reviewer_chose_in_edits(loaded):
    pairs = shadow_report(rollout=ShadowRollout.objects.get()).compared
    drafts = [p.shadow_facts["drafts"]["review"] for p in pairs if p.shadow_facts["drafts"]]
    assert drafts and all(draft["subject"] == EDITED_SUBJECT for draft in drafts)


def test_loading_again_shadows_nothing_twice(loaded):
    runs, cases = Run.objects.count(), EvalCase.objects.count()
    again = load_demo(**SMALL)
    assert again.evaluation.shadowed == 0 and again.evaluation.cases_added == 0
    assert (Run.objects.count(), EvalCase.objects.count()) == (runs, cases)
    assert ShadowRollout.objects.count() == 1
    assert Workflow.objects.get(slug="lead-qualification").versions.count() == 2


def test_the_shadow_page_reads_its_pairs_in_a_fixed_number_of_queries(
    loaded, admin_client, django_assert_max_num_queries
):
    rollout = ShadowRollout.objects.get()
    assert len(shadow_report(rollout=rollout).pairs) > 40
    with django_assert_max_num_queries(12):
        assert admin_client.get(f"/console/shadows/{rollout.pk}/").status_code == 200
