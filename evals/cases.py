"""Building eval cases: from what people decided on recorded runs, or a JSONL file.

- A draft a reviewer **approved** becomes the expected draft of its step,
  with the run's outcome; one a reviewer **edited** then approved, the
  edited draft (what the human wanted is what the workflow should write).
- A draft a reviewer **rejected**: the case expects the workflow not to
  produce that draft again (a different draft, or a route that does not
  reach the step).
- A run **flagged** in the weekly sample review: it expects another outcome
  than the flagged run's, or for a run with a draft, not that draft.
- The runs of a **replay set**: they expect the recorded outcome (a
  regression set).

A case keeps its source run: its recorded tool calls answer the case's
reads in an experiment. Building again adds only runs not yet in the set
(one case per set and run, a unique constraint).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction

from approvals.models import (
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    ReplaySet,
    SampleItem,
    SampleVerdict,
)
from evals.checks import validate_expectations
from evals.models import CaseOrigin, EvalCase, EvalSet
from runs.models import Run, RunMode


class InvalidCase(ValueError):
    """A JSONL line that is not a usable case (the message names the line)."""


def _add(eval_set: EvalSet, **fields: Any) -> bool:
    """Add one case; False when the set already has a case of that run."""
    try:
        with transaction.atomic():
            EvalCase.objects.create(eval_set=eval_set, **fields)
    except IntegrityError:
        return False
    return True


def cases_from_reviews(*, eval_set: EvalSet, limit: int = 500) -> int:
    """A case for each live run of the set's workflow whose draft a person
    decided (approved, edited or rejected; not the policy on a timeout).
    The number of cases added."""
    decided = (
        ApprovalRequest.objects.filter(
            run__workflow=eval_set.workflow,
            run__mode=RunMode.LIVE,
            kind=ApprovalKind.DRAFT,
            status__in=(ApprovalStatus.APPROVED, ApprovalStatus.REJECTED),
        )
        .exclude(decided_by_label="policy")
        .select_related("run")
        .order_by("-decided_at")[:limit]
    )
    added = 0
    for request in decided:
        added += _add(eval_set, **_from_review(request))
    return added


def _from_review(request: ApprovalRequest) -> dict[str, Any]:
    run = request.run
    name = f"run {run.pk}: {request.step_key} {request.status}"
    if request.status == ApprovalStatus.REJECTED:
        reason = request.decision_code or request.decision_reason
        return {
            "name": f"{name} ({reason})"[:200] if reason else name,
            "input": run.input,
            "source_run": run,
            "origin": CaseOrigin.REJECTED,
            "tags": ["rejected", *([request.decision_code] if request.decision_code else [])],
            "expectations": [
                {"check": "not_draft", "step": request.step_key, "draft": request.draft}
            ],
        }
    edited = request.edited_draft is not None
    expectations: list[dict[str, Any]] = [
        {
            "check": "draft",
            "step": request.step_key,
            "equals": request.edited_draft if edited else request.draft,
        }
    ]
    if run.outcome:
        expectations.append({"check": "outcome", "equals": run.outcome})
    return {
        "name": f"run {run.pk}: {request.step_key} {'edited' if edited else 'approved'}",
        "input": run.input,
        "source_run": run,
        "origin": CaseOrigin.EDITED if edited else CaseOrigin.APPROVED,
        "tags": ["edited" if edited else "approved"],
        "expectations": expectations,
    }


def cases_from_samples(*, eval_set: EvalSet) -> int:
    """A case for each run of the workflow flagged in a weekly sample."""
    flagged = SampleItem.objects.filter(
        review__workflow=eval_set.workflow, verdict=SampleVerdict.FLAGGED
    ).select_related("run")
    added = 0
    for item in flagged:
        run = item.run
        draft_step = (
            ApprovalRequest.objects.filter(run=run, kind=ApprovalKind.DRAFT)
            .order_by("seq")
            .values_list("step_key", "draft")
            .first()
        )
        if draft_step is not None:
            expectation = {"check": "not_draft", "step": draft_step[0], "draft": draft_step[1]}
        else:
            expectation = {"check": "outcome", "not_equals": run.outcome}
        added += _add(
            eval_set,
            name=f"run {run.pk}: flagged ({item.category or 'sample'})"[:200],
            input=run.input,
            source_run=run,
            origin=CaseOrigin.FLAGGED,
            tags=["flagged", *([item.category] if item.category else [])],
            expectations=[expectation],
        )
    return added


def cases_from_replay_set(*, eval_set: EvalSet, replay_set: ReplaySet) -> int:
    """A case for each finished run of the replay set: its recorded outcome."""
    added = 0
    for run in replay_set.runs.exclude(outcome="").order_by("pk"):
        added += _add(
            eval_set,
            name=f"run {run.pk}: {run.outcome}",
            input=run.input,
            source_run=run,
            origin=CaseOrigin.REPLAY,
            tags=["replay", replay_set.name],
            expectations=[{"check": "outcome", "equals": run.outcome}],
        )
    return added


def import_jsonl(*, eval_set: EvalSet, lines: Iterable[str]) -> int:
    """Add a case per JSON line: {"name", "input", "expectations",
    "critical"?, "tags"?, "source_run"?}. Every line is checked before any
    case is added: one bad line adds nothing (InvalidCase names it)."""
    cases = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidCase(f"line {number}: not JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("input", {}), dict):
            raise InvalidCase(f"line {number}: a case is an object with an object `input`")
        problems = validate_expectations(item.get("expectations", []))
        if problems:
            raise InvalidCase(f"line {number}: {'; '.join(problems)}")
        source = item.get("source_run")
        if source is not None and not Run.objects.filter(pk=source).exists():
            raise InvalidCase(f"line {number}: no run {source}")
        cases.append(
            EvalCase(
                eval_set=eval_set,
                name=str(item.get("name") or f"imported case {number}")[:200],
                input=item.get("input", {}),
                expectations=item.get("expectations", []),
                critical=bool(item.get("critical", False)),
                tags=list(item.get("tags", [])),
                source_run_id=source,
                origin=CaseOrigin.IMPORT,
            )
        )
    with transaction.atomic():
        EvalCase.objects.bulk_create(cases)
    return len(cases)


def export_jsonl(*, eval_set: EvalSet) -> str:
    """The set's cases in the import's format, one JSON object a line."""
    lines = []
    for case in eval_set.cases.order_by("pk"):
        lines.append(
            json.dumps(
                {
                    "name": case.name,
                    "input": case.input,
                    "expectations": case.expectations,
                    "critical": case.critical,
                    "tags": case.tags,
                    "source_run": case.source_run_id,
                },
                ensure_ascii=False,
                sort_keys=True,
            )
        )
    return "\n".join(lines) + ("\n" if lines else "")
