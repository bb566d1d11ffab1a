"""The publish gate: a new version must pass its eval set before it is published.

`check_publish` is one of `settings.BOSUN_PUBLISH_CHECKS`, called by
`runs.engine.publish_workflow` inside its transaction, before the version
is made, so every way to publish (admin action, API, command) passes it.
For a workflow with an enabled `PublishGate` it looks for the latest
finished experiment that ran the draft being published (a version with
the same checksum: a candidate frozen from it) and judges it:

- the pass rate of the draft's arm is at least `min_pass_rate` %;
- with `no_critical_regressions`, no critical case that passes on the
  baseline arm (the live version) fails on the draft;
- with `max_cost_increase_pct`, the draft's cost per case, as it would be
  live (paid plus stubbed), is at most that much above the baseline's.

A failure refuses the publish with the failing cases listed, unless a
named override (`GateOverride`: who and why, for this draft's checksum)
is there: it is used once and audited (`workflow.gate_overridden`) in the
publish's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db.models.functions import Now

from evals.experiments import experiment_report
from evals.models import (
    Experiment,
    ExperimentArm,
    ExperimentStatus,
    GateOverride,
    PublishGate,
    Trial,
    Verdict,
)
from policies import audit
from runs.engine.errors import PublishError
from runs.models import Workflow


@dataclass
class GateVerdict:
    passed: bool
    problems: list[str] = field(default_factory=list)
    failing: list[str] = field(default_factory=list)  # the failing cases' names
    experiment_id: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "problems": self.problems,
            "failing": self.failing,
            "experiment": self.experiment_id,
        }


def latest_experiment_of(*, gate: PublishGate, checksum: str) -> Experiment | None:
    """The latest finished experiment of the gate's eval set with an arm of
    a version of this checksum (the draft frozen as a candidate, or a
    version)."""
    return (
        Experiment.objects.filter(
            status=ExperimentStatus.DONE,
            eval_set=gate.eval_set,
            arms__version__workflow=gate.workflow,
            arms__version__checksum=checksum,
        )
        .order_by("-pk")
        .first()
    )


def judge(*, gate: PublishGate, experiment: Experiment, checksum: str) -> GateVerdict:
    """Does the arm of `checksum` in the experiment pass the gate?"""
    report = experiment_report(experiment=experiment)
    arms = {s.arm.version.checksum: s for s in report.arms}
    candidate = arms.get(checksum)
    if candidate is None:
        return GateVerdict(False, ["the experiment did not run this draft"], [], experiment.pk)
    baseline = next((s for s in report.arms if s.arm.baseline and s is not candidate), None)
    verdict = GateVerdict(True, experiment_id=experiment.pk)
    failing = Trial.objects.filter(arm=candidate.arm).exclude(verdict=Verdict.PASSED)
    failing_rows = list(failing.select_related("case").order_by("case_id"))
    verdict.failing = [_case_line(trial) for trial in failing_rows]
    rate = Decimal(candidate.passed * 100) / candidate.scored if candidate.scored else Decimal(0)
    if rate < gate.min_pass_rate:
        verdict.problems.append(
            f"pass rate {rate:.1f}% is below the minimum {gate.min_pass_rate}%"
            f" ({candidate.passed} of {candidate.scored} cases)"
        )
    if baseline is not None and gate.no_critical_regressions:
        for name in _critical_regressions(candidate.arm, baseline.arm):
            verdict.problems.append(f"critical case regressed: {name}")
    if baseline is not None and gate.max_cost_increase_pct is not None:
        mine, theirs = candidate.cost_per_case, baseline.cost_per_case
        if mine is not None and theirs:
            increase = (mine - theirs) * 100 / theirs
            if increase > gate.max_cost_increase_pct:
                verdict.problems.append(
                    f"cost per case ${mine:.4f} is {increase:.0f}% above the live version's"
                    f" ${theirs:.4f} (at most {gate.max_cost_increase_pct}%)"
                )
    if verdict.problems:
        verdict.passed = False
        verdict.problems += [f"failing case: {line}" for line in verdict.failing]
    return verdict


def _case_line(trial: Trial) -> str:
    failed = [c for c in trial.checks or [] if not c.get("passed")]
    why = "; ".join(f"{c['name']}: {c['detail']}" if c.get("detail") else c["name"] for c in failed)
    critical = " (critical)" if trial.case.critical else ""
    return f"{trial.case.name}{critical}" + (f" — {why}" if why else f" — {trial.verdict}")


def _critical_regressions(candidate: ExperimentArm, baseline: ExperimentArm) -> list[str]:
    passed_before = set(
        Trial.objects.filter(arm=baseline, verdict=Verdict.PASSED, case__critical=True).values_list(
            "case_id", flat=True
        )
    )
    failing_now = Trial.objects.filter(
        arm=candidate, case_id__in=passed_before, case__critical=True
    ).exclude(verdict=Verdict.PASSED)
    return list(failing_now.order_by("case_id").values_list("case__name", flat=True))


def gate_verdict(*, workflow: Workflow, checksum: str) -> GateVerdict | None:
    """The gate's verdict on a draft or version of this checksum; None when
    the workflow has no enabled gate."""
    gate = PublishGate.objects.filter(workflow=workflow, enabled=True).first()
    if gate is None:
        return None
    experiment = latest_experiment_of(gate=gate, checksum=checksum)
    if experiment is None:
        return GateVerdict(
            False,
            [
                f"the eval gate needs an experiment of this draft on eval set"
                f" {gate.eval_set.name}: run `manage.py eval_gate {workflow.slug} --draft`"
                " or start one in the console"
            ],
        )
    return judge(gate=gate, experiment=experiment, checksum=checksum)


def check_publish(*, workflow: Workflow, checksum: str, actor: str) -> None:
    """Refuse the publish of a draft that fails the gate (PublishError with
    the failing cases), unless an override of this draft is used (audited)."""
    verdict = gate_verdict(workflow=workflow, checksum=checksum)
    if verdict is None or verdict.passed:
        return
    override = (
        GateOverride.objects.select_for_update()
        .filter(workflow=workflow, checksum=checksum, used_at__isnull=True)
        .order_by("-pk")
        .first()
    )
    if override is None or not GateOverride.objects.filter(
        pk=override.pk, used_at__isnull=True
    ).update(used_at=Now()):
        raise PublishError([f"eval gate: {problem}" for problem in verdict.problems])
    audit.record(
        action="workflow.gate_overridden",
        actor=actor,
        target=workflow,
        data={
            "by": override.by,
            "reason": override.reason,
            "checksum": checksum,
            "problems": verdict.problems,
            "experiment": verdict.experiment_id,
        },
    )
