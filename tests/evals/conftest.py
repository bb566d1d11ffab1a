"""An outreach workflow to evaluate: a scripted model drafts an email, a
person reviews it, a write tool sends it. And drivers for experiments."""

from __future__ import annotations

from typing import Any

import pytest

from evals.models import EvalCase, EvalSet, Experiment, Trial
from runs import engine
from runs.models import Run, Step, Workflow, WorkflowVersion
from tests.conftest import drive


def outreach_steps(subject: str = "Hello {{ input.company }}") -> list[dict[str, Any]]:
    return [
        {
            "key": "draft",
            "kind": "llm",
            "config": {
                "provider": "scripted",
                "prompt": "Write to {{ input.company }}",
                "output_schema": {"type": "object", "required": ["subject"]},
                "scripted": {"reply": {"subject": subject, "body": "We help {{ input.company }}."}},
            },
            "edges": {"next": "review"},
        },
        {
            "key": "review",
            "kind": "approval",
            "config": {"draft": "{{ steps.draft }}", "title": "Send?"},
            "edges": {"approved": "send", "rejected": "dropped"},
        },
        {
            "key": "send",
            "kind": "tool",
            "config": {"tool": "test.send", "args": {"to": "{{ input.company }}"}},
            "edges": {"next": "done"},
        },
        {"key": "done", "kind": "end", "config": {"outcome": "sent"}},
        {"key": "dropped", "kind": "end", "config": {"outcome": "dropped", "success": False}},
    ]


def set_subject(workflow: Workflow, subject: str) -> None:
    """Edit the draft's prompt rules (a prompt change), unpublished."""
    step = Step.objects.get(workflow=workflow, key="draft")
    step.config = {
        **step.config,
        "scripted": {"reply": {"subject": subject, "body": "We help {{ input.company }}."}},
    }
    step.save()


@pytest.fixture
def outreach(make_workflow) -> WorkflowVersion:
    return make_workflow(outreach_steps())


@pytest.fixture
def eval_set(outreach) -> EvalSet:
    """Five cases: three expect the subject `Hello <company>`, two only
    that the email is sent."""
    eval_set = EvalSet.objects.create(workflow=outreach.workflow, name="outreach")
    for company in ("Acme", "Bareco", "Cobalt"):
        EvalCase.objects.create(
            eval_set=eval_set,
            name=f"{company} greeting",
            input={"company": company},
            critical=company == "Acme",
            expectations=[
                {"check": "draft", "step": "review", "equals": {"subject": f"Hello {company}"}},
                {"check": "outcome", "equals": "sent"},
            ],
        )
    for company in ("Delta", "Echo"):
        EvalCase.objects.create(
            eval_set=eval_set,
            name=f"{company} is sent",
            input={"company": company},
            expectations=[{"check": "outcome", "equals": "sent"}],
        )
    return eval_set


def finish(experiment: Experiment) -> Experiment:
    """Run every trial's run to its end here (as the workers would), then score."""
    from evals.experiments import refresh_experiment

    for run_id in Trial.objects.filter(arm__experiment=experiment).values_list("run_id", flat=True):
        if run_id is not None:
            drive(run_id)
    return refresh_experiment(experiment_id=experiment.pk)


def live_run(version: WorkflowVersion, company: str, **decision: Any) -> Run:
    """A live run of the outreach workflow, its draft decided as asked
    (approve=True/False, edited_draft=..., reason=...)."""
    run = engine.start_run(workflow=version.workflow, input={"company": company}).run
    drive(run.pk)
    if decision:
        approval = run.approvals.get()
        engine.decide_approval(approval_id=approval.pk, actor_label="ana", **decision)
        drive(run.pk)
    return Run.objects.get(pk=run.pk)
