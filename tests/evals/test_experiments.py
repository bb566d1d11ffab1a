"""Experiments: each case a sandbox run through the real engine, versions compared."""

from __future__ import annotations

from decimal import Decimal

import pytest

from evals.experiments import (
    cancel_experiment,
    experiment_report,
    refresh_experiment,
    resume_experiment,
    start_experiment,
)
from evals.models import EvalCase, Trial
from runs import engine
from runs.engine.definition import freeze_candidate
from runs.models import Run, ToolCallRecord
from tests.conftest import drive
from tests.evals.conftest import finish, set_subject
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db


def test_each_case_runs_as_an_experiment_run_of_each_version(outreach, eval_set):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    v2 = engine.publish_workflow(workflow=outreach.workflow)
    experiment = start_experiment(eval_set=eval_set, versions=[outreach, v2])
    runs = Run.objects.filter(pk__in=Trial.objects.values("run_id"))
    assert runs.count() == 10 and set(runs.values_list("mode", flat=True)) == {"experiment"}
    experiment = finish(experiment)
    assert experiment.status == "done"
    report = experiment_report(experiment=experiment)
    first, second = report.arms
    assert (first.passed, first.failed) == (5, 0)
    assert (second.passed, second.failed) == (2, 3)
    assert second.pass_rate == pytest.approx(0.4)
    assert {row.name for row in report.changed} == {
        "Acme greeting",
        "Bareco greeting",
        "Cobalt greeting",
    }
    acme = next(row for row in report.changed if row.name == "Acme greeting")
    assert "-Hello Acme" in acme.diff and "+Hi Acme" in acme.diff
    assert dict(report.check_table)["draft:review"] == [(3, 3), (0, 3)]
    # Ten emails "sent", none reached the vendor.
    assert Execution.objects.count() == 0
    assert ToolCallRecord.objects.filter(status="stubbed").count() == 10


def test_the_draft_runs_as_a_candidate_that_is_never_current(outreach, eval_set):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    experiment = start_experiment(eval_set=eval_set, versions=[outreach], draft=True)
    candidate = experiment.arms.get(version__candidate=True).version
    assert candidate.number == 0  # below every published version
    assert outreach.workflow.current_version == outreach
    # Frozen again unchanged, the draft reuses its candidate.
    assert freeze_candidate(workflow=outreach.workflow) == candidate
    # Publishing numbers past the published versions only.
    published = engine.publish_workflow(workflow=outreach.workflow)
    assert published.number == 2 and outreach.workflow.current_version == published


def test_a_new_run_of_the_workflow_never_binds_a_candidate(outreach, eval_set):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    freeze_candidate(workflow=outreach.workflow)
    run = engine.start_run(workflow=outreach.workflow, input={"company": "Acme"}).run
    assert run.version == outreach


def test_a_workflow_with_only_a_candidate_has_no_version_to_run(make_workflow):
    from tests.evals.conftest import outreach_steps

    workflow = make_workflow(outreach_steps(), publish=False)
    freeze_candidate(workflow=workflow)
    assert workflow.current_version is None
    with pytest.raises(engine.InvalidState, match="no published version"):
        engine.start_run(workflow=workflow, input={"company": "Acme"})
    assert engine.publish_workflow(workflow=workflow).number == 1


def test_reads_answer_from_the_case_source_run_and_stubs_report_their_price(make_workflow):
    from evals.models import EvalSet

    steps = [
        {
            "key": "lookup",
            "kind": "tool",
            "config": {"tool": "test.metered", "args": {"limit": 40, "found": "{{ input.rows }}"}},
            "edges": {"next": "done"},
        },
        {"key": "done", "kind": "end", "config": {"outcome": "done"}},
    ]
    version = make_workflow(steps)
    recorded = engine.start_run(workflow=version.workflow, input={"rows": 7}).run
    recorded = drive(recorded.pk)
    eval_set = EvalSet.objects.create(workflow=version.workflow, name="reads")
    EvalCase.objects.create(
        eval_set=eval_set, name="recorded", input={"rows": 7}, source_run=recorded
    )
    EvalCase.objects.create(eval_set=eval_set, name="new", input={"rows": 9})
    experiment = finish(start_experiment(eval_set=eval_set, versions=[version]))
    assert Execution.objects.count() == 1  # only the recorded live run's call
    [arm] = experiment_report(experiment=experiment).arms
    assert arm.cost_usd == 0
    # The recording's answer cost 7 credits live; the stubbed call's price 40.
    assert arm.would_cost_usd == Decimal("0.47")
    assert arm.live_cost_usd == Decimal("0.47")


def test_a_cancelled_experiment_cancels_its_runs_and_resumes_with_new_ones(outreach, eval_set):
    experiment = start_experiment(eval_set=eval_set, versions=[outreach])
    first_runs = list(Trial.objects.values_list("run_id", flat=True))
    drive(first_runs[0])  # one case finished before the cancel
    experiment = cancel_experiment(experiment_id=experiment.pk)
    assert experiment.status == "cancelled"
    assert Run.objects.filter(pk__in=first_runs, status="cancelled").count() == 4
    assert refresh_experiment(experiment_id=experiment.pk).status == "cancelled"
    experiment = resume_experiment(experiment_id=experiment.pk)
    assert experiment.status == "running"
    runs_now = list(Trial.objects.values_list("run_id", flat=True))
    assert len(set(runs_now) - set(first_runs)) == 4  # new runs for the cancelled cases
    assert first_runs[0] in runs_now  # the finished case keeps its run
    experiment = finish(experiment)
    assert experiment.status == "done"
    assert set(Trial.objects.values_list("verdict", flat=True)) == {"passed"}


def test_dispatching_twice_starts_each_run_once(outreach, eval_set):
    from evals.experiments import dispatch

    experiment = start_experiment(eval_set=eval_set, versions=[outreach])
    Trial.objects.update(run=None)  # as if the first dispatch died before recording them
    dispatch(experiment_id=experiment.pk)
    assert Run.objects.filter(mode="experiment").count() == 5


def test_an_experiment_case_uses_recorded_runs_not_the_live_review_queue(outreach, eval_set):
    from approvals.models import ApprovalRequest

    finish(start_experiment(eval_set=eval_set, versions=[outreach]))
    assert not ApprovalRequest.objects.exists()


def test_trial_figures_count_tokens_and_latency(outreach, eval_set):
    experiment = finish(start_experiment(eval_set=eval_set, versions=[outreach]))
    [arm] = experiment_report(experiment=experiment).arms
    assert arm.tokens > 0 and arm.mean_latency_ms is not None


def test_the_schedule_closes_experiments_nobody_looks_at(outreach, eval_set):
    from django_q.models import Schedule

    from evals import tasks

    experiment = start_experiment(eval_set=eval_set, versions=[outreach])
    for run_id in Trial.objects.values_list("run_id", flat=True):
        drive(run_id)
    assert Schedule.objects.filter(func="evals.tasks.refresh_running").exists()
    assert tasks.refresh_running() == 1
    experiment.refresh_from_db()
    assert experiment.status == "done"
