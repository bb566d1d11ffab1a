"""The publish gate: enforced where versions are published, overridable by name."""

from __future__ import annotations

import io
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from evals.experiments import start_experiment
from evals.gate import gate_verdict
from evals.models import GateOverride, PublishGate
from policies.models import AuditEntry
from runs import engine
from runs.engine.definition import checksum_of, snapshot
from tests.evals.conftest import finish, set_subject

pytestmark = pytest.mark.django_db


@pytest.fixture
def gate(eval_set) -> PublishGate:
    return PublishGate.objects.create(
        workflow=eval_set.workflow, eval_set=eval_set, min_pass_rate=Decimal("80")
    )


def _try_draft(eval_set, live):
    return finish(start_experiment(eval_set=eval_set, versions=[live], draft=True))


def test_a_draft_without_an_experiment_is_not_published(gate, outreach):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    with pytest.raises(engine.PublishError) as refused:
        engine.publish_workflow(workflow=outreach.workflow)
    assert "eval_gate" in refused.value.problems[0]
    assert outreach.workflow.versions.filter(candidate=False).count() == 1


def test_a_draft_that_flips_cases_is_refused_with_the_failing_cases_listed(
    gate, outreach, eval_set
):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    _try_draft(eval_set, outreach)
    with pytest.raises(engine.PublishError) as refused:
        engine.publish_workflow(workflow=outreach.workflow)
    problems = refused.value.problems
    assert "eval gate: pass rate 40.0% is below the minimum 80.00% (2 of 5 cases)" in problems
    assert "eval gate: critical case regressed: Acme greeting" in problems
    failing = [p for p in problems if p.startswith("eval gate: failing case:")]
    assert [p.split(": ")[2].split(" —")[0] for p in failing] == [
        "Acme greeting (critical)",
        "Bareco greeting",
        "Cobalt greeting",
    ]
    assert 'subject: "Hi Bareco" ≠ "Hello Bareco"' in failing[1]


def test_a_draft_that_passes_is_published(gate, outreach, eval_set):
    set_subject(outreach.workflow, "Hello {{ input.company }}!!")
    gate.min_pass_rate = Decimal("40")
    gate.no_critical_regressions = False
    gate.save()
    _try_draft(eval_set, outreach)
    assert engine.publish_workflow(workflow=outreach.workflow).number == 2


def test_a_draft_changed_after_its_experiment_needs_a_new_one(gate, outreach, eval_set):
    _try_draft(eval_set, outreach)  # the draft as published: passes
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    with pytest.raises(engine.PublishError, match="needs an experiment of this draft"):
        engine.publish_workflow(workflow=outreach.workflow)


def test_the_cost_per_case_may_not_rise_beyond_the_limit(gate, outreach, eval_set):
    # The draft asks a dearer model a longer prompt (same answers): every
    # case passes, each costs more.
    from runs.models import Step

    step = Step.objects.get(workflow=outreach.workflow, key="draft")
    prompt = "Write to {{ input.company }}." + " Be brief." * 200
    step.config = {**step.config, "model": "test-priced", "prompt": prompt}
    step.save()
    gate.max_cost_increase_pct = Decimal("10")
    gate.save()
    _try_draft(eval_set, outreach)
    verdict = gate_verdict(
        workflow=outreach.workflow, checksum=checksum_of(snapshot(outreach.workflow))
    )
    assert verdict is not None and not verdict.passed
    assert verdict.failing == []
    [problem] = verdict.problems
    assert "above the live version's" in problem and "(at most 10.00%)" in problem


def test_a_named_override_publishes_once_and_is_audited(gate, outreach, eval_set):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    _try_draft(eval_set, outreach)
    checksum = checksum_of(snapshot(outreach.workflow))
    GateOverride.objects.create(
        workflow=outreach.workflow,
        checksum=checksum,
        by="user:maria",
        reason="launch copy approved by legal",
    )
    version = engine.publish_workflow(workflow=outreach.workflow, actor="user:maria")
    assert version.number == 2
    entry = AuditEntry.objects.get(action="workflow.gate_overridden")
    assert (
        entry.data["by"] == "user:maria" and entry.data["reason"] == "launch copy approved by legal"
    )
    assert any("Acme greeting" in problem for problem in entry.data["problems"])
    assert GateOverride.objects.get().used_at is not None


def test_a_disabled_gate_lets_any_valid_draft_through(gate, outreach):
    gate.enabled = False
    gate.save()
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    assert engine.publish_workflow(workflow=outreach.workflow).number == 2


def test_eval_gate_exits_non_zero_when_the_draft_fails(gate, outreach):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("eval_gate", outreach.workflow.slug, "--draft", "--inline", stdout=out)
    assert failed.value.returncode == 1
    assert "critical case regressed: Acme greeting" in out.getvalue()


def test_eval_gate_passes_a_good_draft_and_the_publish_then_goes_through(gate, outreach):
    set_subject(outreach.workflow, "Hello {{ input.company }}")  # unchanged output
    from runs.models import Step

    step = Step.objects.get(workflow=outreach.workflow, key="draft")
    step.config = {**step.config, "prompt": "Write a short email to {{ input.company }}"}
    step.save()
    out = io.StringIO()
    call_command("eval_gate", outreach.workflow.slug, "--inline", stdout=out)
    assert "the eval gate passes" in out.getvalue()
    assert engine.publish_workflow(workflow=outreach.workflow).number == 2


def test_eval_gate_exits_two_when_the_cases_do_not_finish_in_time(gate, outreach):
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    with pytest.raises(CommandError) as late:
        call_command(
            "eval_gate",
            outreach.workflow.slug,
            "--timeout",
            "0",
            "--poll",
            "0",
            stdout=io.StringIO(),
        )
    assert late.value.returncode == 2


def test_only_an_experiment_of_the_gates_own_eval_set_counts(gate, outreach, eval_set):
    from evals.models import EvalCase, EvalSet

    easy = EvalSet.objects.create(workflow=outreach.workflow, name="easy")
    EvalCase.objects.create(eval_set=easy, name="anything", input={"company": "Z"})
    set_subject(outreach.workflow, "Hi {{ input.company }}")
    _try_draft(easy, outreach)  # passes, but on another set
    with pytest.raises(engine.PublishError, match="needs an experiment of this draft"):
        engine.publish_workflow(workflow=outreach.workflow)
