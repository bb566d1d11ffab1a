"""Experiments: an eval set run against versions, each case a sandbox run.

`start_experiment` makes one arm per version (the workflow's draft frozen
as a candidate version when asked, evals never publish it) and one trial
per (arm, case), then `dispatch` starts each trial's run through the
engine (`start_run`, mode experiment, `tools_from` the case's source run):
the workers execute them like any run. A trial's run is started under an
idempotency key of the trial and its attempt, so dispatching twice (a
retried task, two requests) starts it once.

`refresh_experiment` scores the trials whose run is over (evals.checks)
and closes the experiment when none is left; the result page, the API and
`eval_gate` call it. `cancel_experiment` cancels the runs not yet over;
`resume_experiment` starts the cancelled trials again as a new attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import Q, Sum
from django.db.models.functions import Now

from evals.checks import facts_of, run_checks
from evals.models import (
    EvalSet,
    Experiment,
    ExperimentArm,
    ExperimentStatus,
    Trial,
    Verdict,
)
from policies import audit
from runs.engine import cancel_run, start_run
from runs.engine.definition import freeze_candidate
from runs.engine.errors import InvalidState, NotFound
from runs.models import TERMINAL_STATUSES, Run, RunMode, RunStatus, ToolCallRecord, WorkflowVersion

log = logging.getLogger("bosun.evals")


def start_experiment(
    *,
    eval_set: EvalSet,
    versions: Sequence[WorkflowVersion] = (),
    draft: bool = False,
    baseline: WorkflowVersion | None = None,
    actor: str = "system",
    note: str = "",
) -> Experiment:
    """Run every case of the set against `versions` (and the draft, frozen
    as a candidate, with `draft`). `baseline` (default: the workflow's
    current version, if among them) is the one the others are compared to."""
    workflow = eval_set.workflow
    chosen = list(versions)
    if draft:
        chosen.append(freeze_candidate(workflow=workflow))
    if not chosen:
        raise InvalidState("name at least one version, or the draft")
    if any(version.workflow_id != workflow.pk for version in chosen):
        raise InvalidState(f"every version must be one of {workflow.slug}'s")
    if not eval_set.cases.exists():
        raise InvalidState(f"eval set {eval_set} has no cases")
    unique = list(dict.fromkeys(chosen))
    baseline = baseline or workflow.current_version
    with transaction.atomic():
        experiment = Experiment.objects.create(eval_set=eval_set, started_by=actor, note=note)
        arms = [
            ExperimentArm(
                experiment=experiment,
                version=version,
                position=index,
                baseline=baseline is not None and version.pk == baseline.pk,
            )
            for index, version in enumerate(unique)
        ]
        ExperimentArm.objects.bulk_create(arms)
        cases = list(eval_set.cases.values_list("pk", flat=True))
        Trial.objects.bulk_create(
            Trial(arm=arm, case_id=case_id) for arm in arms for case_id in cases
        )
        audit.record(
            action="experiment.started",
            actor=actor,
            target=experiment,
            data={"eval_set": str(eval_set), "versions": [arm.label for arm in arms]},
        )
    dispatch(experiment_id=experiment.pk)
    return experiment


def dispatch(*, experiment_id: int) -> int:
    """Start the run of every trial that has none (safe to call again:
    each run is started under the trial's idempotency key). The number of
    runs started."""
    if not Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).exists():
        return 0
    waiting = (
        Trial.objects.filter(arm__experiment_id=experiment_id, run__isnull=True)
        .exclude(verdict=Verdict.CANCELLED)
        .select_related("arm__version__workflow", "case")
    )
    started = 0
    for trial in waiting:
        version = trial.arm.version
        begun = start_run(
            workflow=version.workflow,
            input=trial.case.input,
            version=version,
            mode=RunMode.EXPERIMENT,
            tools_from=trial.case.source_run_id,
            idempotency_key=f"trial-{trial.pk}-{trial.attempt}",
        )
        Trial.objects.filter(pk=trial.pk, run__isnull=True).update(run=begun.run)
        started += begun.created
    return started


def refresh_experiment(*, experiment_id: int) -> Experiment:
    """Score each trial whose run is over; close the experiment when none
    is left to wait for."""
    over = Trial.objects.filter(
        arm__experiment_id=experiment_id,
        verdict=Verdict.PENDING,
        run__status__in=TERMINAL_STATUSES,
    ).select_related("run", "case")
    for trial in over:
        _score(trial)
    with transaction.atomic():
        left = Trial.objects.filter(arm__experiment_id=experiment_id, verdict=Verdict.PENDING)
        if not left.exists():
            Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).update(
                status=ExperimentStatus.DONE, finished_at=Now()
            )
    return Experiment.objects.get(pk=experiment_id)


def refresh_running() -> int:
    """Refresh every running experiment (a schedule does, once a minute);
    the number that closed."""
    running = Experiment.objects.filter(status=ExperimentStatus.RUNNING).values_list(
        "pk", flat=True
    )
    closed = 0
    for experiment_id in list(running):
        closed += refresh_experiment(experiment_id=experiment_id).status == ExperimentStatus.DONE
    return closed


def _score(trial: Trial) -> None:
    run = trial.run
    assert run is not None
    facts = facts_of(run)
    if run.status == RunStatus.CANCELLED:
        verdict, results = Verdict.CANCELLED, []
    else:
        results = [result.as_dict() for result in run_checks(trial.case.expectations, facts)]
        if run.status != RunStatus.SUCCEEDED and not results:
            verdict = Verdict.ERROR
        else:
            verdict = Verdict.PASSED if all(r["passed"] for r in results) else Verdict.FAILED
        if run.status in (RunStatus.FAILED, RunStatus.STOPPED):
            results.append({"name": "run", "passed": False, "detail": run.error[:300]})
            verdict = Verdict.ERROR
    would = ToolCallRecord.objects.filter(run=run).aggregate(total=Sum("would_cost_usd"))["total"]
    latency = None
    if run.started_at and run.finished_at:
        latency = (run.finished_at - run.started_at).total_seconds() * 1000
    # Scored once: a concurrent refresh that scored it first wins.
    Trial.objects.filter(pk=trial.pk, verdict=Verdict.PENDING).update(
        verdict=verdict,
        checks=results,
        facts=facts,
        cost_usd=run.cost_usd,
        would_cost_usd=would or Decimal(0),
        tokens=run.tokens_in + run.tokens_out,
        latency_ms=latency,
    )


def cancel_experiment(*, experiment_id: int, actor: str = "system") -> Experiment:
    """Stop the experiment: its runs not yet over are cancelled (a worker
    holding one stops at its next checkpoint)."""
    updated = Experiment.objects.filter(pk=experiment_id, status=ExperimentStatus.RUNNING).update(
        status=ExperimentStatus.CANCELLED
    )
    if not updated:
        raise _not_running(experiment_id)
    active = Run.objects.filter(
        pk__in=Trial.objects.filter(arm__experiment_id=experiment_id).values("run_id")
    ).exclude(status__in=TERMINAL_STATUSES)
    for run_id in active.values_list("pk", flat=True):
        try:
            cancel_run(run_id=run_id, reason="experiment cancelled", actor=actor)
        except InvalidState:
            continue  # it finished meanwhile
    Trial.objects.filter(arm__experiment_id=experiment_id, run__isnull=True).update(
        verdict=Verdict.CANCELLED
    )
    audit.record(
        action="experiment.cancelled",
        actor=actor,
        target_type="evals.experiment",
        target_id=experiment_id,
    )
    return refresh_experiment(experiment_id=experiment_id)


def resume_experiment(*, experiment_id: int, actor: str = "system") -> Experiment:
    """Go on with a cancelled experiment: its cancelled trials are started
    again as a new attempt (a new run); finished ones keep their verdict."""
    with transaction.atomic():
        updated = Experiment.objects.filter(
            pk=experiment_id, status=ExperimentStatus.CANCELLED
        ).update(status=ExperimentStatus.RUNNING, finished_at=None)
        if not updated:
            if not Experiment.objects.filter(pk=experiment_id).exists():
                raise NotFound(f"no experiment {experiment_id}")
            raise InvalidState(f"experiment {experiment_id} is not cancelled")
        cancelled = Q(verdict=Verdict.CANCELLED) | Q(run__status=RunStatus.CANCELLED)
        for trial in Trial.objects.filter(cancelled, arm__experiment_id=experiment_id):
            Trial.objects.filter(pk=trial.pk).update(
                run=None, verdict=Verdict.PENDING, attempt=trial.attempt + 1, checks=[], facts=None
            )
        audit.record(
            action="experiment.resumed",
            actor=actor,
            target_type="evals.experiment",
            target_id=experiment_id,
        )
    dispatch(experiment_id=experiment_id)
    return Experiment.objects.get(pk=experiment_id)


def _not_running(experiment_id: int) -> Exception:
    if not Experiment.objects.filter(pk=experiment_id).exists():
        return NotFound(f"no experiment {experiment_id}")
    return InvalidState(f"experiment {experiment_id} is not running")


# ------------------------------------------------------------------ the report


@dataclass
class ArmSummary:
    arm: ExperimentArm
    cases: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    pending: int = 0
    cost_usd: Decimal = Decimal(0)
    would_cost_usd: Decimal = Decimal(0)
    tokens: int = 0
    latency_ms: float = 0.0
    per_check: dict[str, list[int]] = field(default_factory=dict)  # name -> [passed, total]

    @property
    def scored(self) -> int:
        return self.passed + self.failed + self.errors

    @property
    def pass_rate(self) -> float | None:
        return self.passed / self.scored if self.scored else None

    @property
    def pass_pct(self) -> float | None:
        rate = self.pass_rate
        return None if rate is None else rate * 100

    @property
    def live_cost_usd(self) -> Decimal:
        return self.cost_usd + self.would_cost_usd

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_ms / self.scored if self.scored else None

    @property
    def cost_per_case(self) -> Decimal | None:
        return self.live_cost_usd / self.scored if self.scored else None

    def check_rates(self) -> list[tuple[str, int, int]]:
        return [(name, ok, total) for name, (ok, total) in sorted(self.per_check.items())]


@dataclass
class CaseRow:
    case_id: int
    name: str
    critical: bool
    trials: list[Trial | None]
    changed: bool = False
    diff: str = ""


@dataclass
class Report:
    experiment: Experiment
    arms: list[ArmSummary]
    rows: list[CaseRow]

    @property
    def changed(self) -> list[CaseRow]:
        return [row for row in self.rows if row.changed]

    @property
    def check_table(self) -> list[tuple[str, list[tuple[int, int] | None]]]:
        """Per check name, each arm's (passed, checked), None where the arm
        had no such check."""
        names = sorted({name for s in self.arms for name in s.per_check})
        return [
            (name, [tuple(s.per_check[name]) if name in s.per_check else None for s in self.arms])  # type: ignore[misc]
            for name in names
        ]

    @property
    def totals(self) -> dict[str, Decimal]:
        paid = sum((s.cost_usd for s in self.arms), Decimal(0))
        would = sum((s.would_cost_usd for s in self.arms), Decimal(0))
        return {"paid": paid, "would": would, "live": paid + would}


def experiment_report(*, experiment: Experiment) -> Report:
    """Side by side: per arm the pass rate (overall and per check), cost,
    tokens and latency; per case each arm's trial, and whether its verdict
    changed between arms (with a diff of what the runs produced)."""
    from runs.engine.service import draft_diff

    arms = list(experiment.arms.select_related("version"))
    summaries = [ArmSummary(arm) for arm in arms]
    index = {arm.pk: position for position, arm in enumerate(arms)}
    trials = (
        Trial.objects.filter(arm__experiment=experiment).select_related("case").order_by("case_id")
    )
    rows: dict[int, CaseRow] = {}
    for trial in trials:
        row = rows.setdefault(
            trial.case_id,
            CaseRow(trial.case_id, trial.case.name, trial.case.critical, [None] * len(arms)),
        )
        trial.arm = arms[index[trial.arm_id]]  # the arm already loaded, not a query each
        row.trials[index[trial.arm_id]] = trial
        _count(summaries[index[trial.arm_id]], trial)
    for row in rows.values():
        verdicts = {t.verdict for t in row.trials if t is not None and t.verdict != Verdict.PENDING}
        row.changed = len(verdicts) > 1
        if row.changed:
            first, *others = [t for t in row.trials if t is not None]
            row.diff = "".join(
                draft_diff(_shown(first.facts), _shown(other.facts)) for other in others
            )
    return Report(experiment, summaries, list(rows.values()))


def _shown(facts: dict[str, Any] | None) -> dict[str, Any]:
    """What a diff compares of a run, field by field: its outcome, route,
    each draft's fields (`review.subject`) and the output's."""
    facts = facts or {}
    shown: dict[str, Any] = {"outcome": facts.get("outcome"), "route": facts.get("route")}
    parts = [(f"{step}.", draft) for step, draft in (facts.get("drafts") or {}).items()]
    parts.append(("output.", facts.get("output")))
    for prefix, value in parts:
        if isinstance(value, dict):
            shown.update({f"{prefix}{key}": item for key, item in value.items()})
        else:
            shown[prefix.rstrip(".")] = value
    return shown


def _count(summary: ArmSummary, trial: Trial) -> None:
    summary.cases += 1
    if trial.verdict == Verdict.PENDING:
        summary.pending += 1
        return
    if trial.verdict == Verdict.CANCELLED:
        return
    summary.passed += trial.verdict == Verdict.PASSED
    summary.failed += trial.verdict == Verdict.FAILED
    summary.errors += trial.verdict == Verdict.ERROR
    summary.cost_usd += trial.cost_usd
    summary.would_cost_usd += trial.would_cost_usd
    summary.tokens += trial.tokens
    summary.latency_ms += trial.latency_ms or 0.0
    for check in trial.checks or []:
        tally = summary.per_check.setdefault(check["name"], [0, 0])
        tally[0] += bool(check["passed"])
        tally[1] += 1
