"""The demo's evaluation: an eval set from the reviewer's decisions, and a
candidate of lead qualification running in shadow beside the live version.

`load_evaluation()` (the last part of `demo.history.load_demo`, before the
queued leads start) builds, with the evals app's own functions:

- the eval set `reviewed-drafts` of `lead-qualification`: a case for each
  outreach draft the demo reviewer decided (`evals.cases.cases_from_reviews`:
  approved as is, edited, rejected);
- a candidate version (frozen from a changed draft with
  `runs.engine.definition.freeze_candidate`, never published; the draft is
  put back as it was) whose score step counts managers and leads as buyers
  (seniority 100 instead of 50: some nurture leads reach outreach, some
  archived ones nurture) and whose drafts carry the subject the reviewer
  kept writing in their edits;
- a shadow rollout of it (`evals.shadow.start_shadow`) and a shadow run of
  each of the newest `SHADOWED` scored live leads (`evals.shadow.shadow_run_of`,
  played here through the engine, offline with the scripted provider), its
  times moved beside its live run's.

So `/console/shadows/<id>/` opens with the pairs where the candidate
decided otherwise. The rollout stays active: leads started later (the
queued ones, the user's) get their shadow run from the workers.

Idempotent: the set gains only cases of runs not yet in it, an unchanged
candidate is reused, the rollout is found again, and a live run is shadowed
once (the shadow run's idempotency key).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from demo.sample_data.workflows import (
    LEAD_QUALIFICATION,
    MID_WORDS,
    SENIOR_WORDS,
)
from demo.samples import _install_steps
from evals.cases import cases_from_reviews
from evals.models import EvalSet, ShadowRollout
from evals.shadow import shadow_report, shadow_run_of, start_shadow
from runs.engine.definition import freeze_candidate
from runs.models import Run, RunMode, RunStatus, Score, Workflow, WorkflowVersion

EVAL_SET = "reviewed-drafts"
# The newest scored live leads given a shadow run as the demo loads.
SHADOWED = 120
# The subject the demo reviewer writes when they edit a draft (demo.history.decide).
EDITED_SUBJECT = "Quick question about your inbound leads"
ACTOR = "demo"


@dataclass
class ShadowSummary:
    rollout: ShadowRollout
    cases_added: int
    shadowed: int
    differing: int

    def line(self) -> str:
        return (
            f"eval set {EVAL_SET}: {self.cases_added} case(s) added; shadow of "
            f"{self.rollout.candidate}: {self.shadowed} live run(s) shadowed, "
            f"{self.differing} decided otherwise (/console/shadows/{self.rollout.pk}/)"
        )


def candidate_steps() -> list[dict[str, Any]]:
    """The sample's steps with the candidate's two changes (see the module)."""
    steps = copy.deepcopy(LEAD_QUALIFICATION["steps"])
    by_key = {step["key"]: step for step in steps}
    score = by_key["score"]["config"]
    score["system"] += (
        " Managers and team leads at a fitting company decide tools for their team: "
        "count them as decision makers."
    )
    for rule in score["scripted"]["points"]:
        if rule["criterion"] == "seniority" and rule["add"] == 100:
            rule["when"]["value"] = SENIOR_WORDS + MID_WORDS
    score["scripted"]["points"] = [
        rule
        for rule in score["scripted"]["points"]
        if not (rule["criterion"] == "seniority" and rule["add"] == 50)
    ]
    draft = by_key["draft"]["config"]
    draft["system"] += f' Use the subject line "{EDITED_SUBJECT}".'
    draft["scripted"]["reply"]["subject"] = EDITED_SUBJECT
    return steps


def freeze_demo_candidate(workflow: Workflow) -> WorkflowVersion:
    """The candidate as a version of `workflow`, the draft left as it was."""
    with transaction.atomic():
        _install_steps(workflow, candidate_steps())
        candidate = freeze_candidate(workflow=workflow)
        _install_steps(workflow, LEAD_QUALIFICATION["steps"])
    return candidate


def load_evaluation(
    *,
    workflow: Workflow,
    drive: Callable[[int], Any],
    backdate: Callable[..., None],
) -> ShadowSummary:
    """Build the eval set and the shadow rollout (see the module); `drive`
    and `backdate` are the history's run driver and time mover."""
    eval_set, _ = EvalSet.objects.get_or_create(
        workflow=workflow,
        name=EVAL_SET,
        defaults={"description": "The outreach drafts the demo reviewer decided."},
    )
    added = cases_from_reviews(eval_set=eval_set)
    candidate = freeze_demo_candidate(workflow)
    rollout = ShadowRollout.objects.filter(workflow=workflow, candidate=candidate).first()
    if rollout is None:
        # An active rollout of another candidate (the user's) is left alone.
        rollout = ShadowRollout.objects.filter(workflow=workflow, active=True).first()
    if rollout is None:
        rollout = start_shadow(workflow=workflow, candidate=candidate, actor=ACTOR)
    shadowed = 0
    if rollout.active and rollout.candidate_id == candidate.pk:
        shadowed = _shadow_lives(rollout, drive=drive, backdate=backdate)
    differing = len(shadow_report(rollout=rollout).differing)
    return ShadowSummary(rollout, added, shadowed, differing)


def _shadow_lives(
    rollout: ShadowRollout, *, drive: Callable[[int], Any], backdate: Callable[..., None]
) -> int:
    """Play a shadow run of each of the newest scored live leads not
    shadowed yet, moved beside its live run; the rollout then started
    before the first of them. How many were played."""
    lives = list(_shadowed_lives(rollout.workflow))
    done = set(
        Run.objects.filter(shadow_of__in=lives, version=rollout.candidate).values_list(
            "shadow_of_id", flat=True
        )
    )
    shadowed = 0
    for live in lives:
        if live.pk in done:
            continue  # loaded before
        shadow = shadow_run_of(run_id=live.pk)
        if shadow is None:
            continue
        drive(shadow.pk)
        backdate(shadow.pk, at=live.created_at + timedelta(seconds=1))
        shadowed += 1
    if shadowed:
        first = min(live.created_at for live in lives) - timedelta(minutes=5)
        ShadowRollout.objects.filter(pk=rollout.pk).update(started_at=first)
    return shadowed


def _shadowed_lives(workflow: Workflow) -> QuerySet[Run]:
    """The newest live runs whose lead was scored and that ran on (they
    finished, or wait for a review)."""
    scored = Score.objects.filter(run__workflow=workflow, run__mode=RunMode.LIVE).values("run_id")
    return Run.objects.filter(
        pk__in=scored, status__in=(RunStatus.SUCCEEDED, RunStatus.WAITING)
    ).order_by("-created_at", "-pk")[:SHADOWED]
