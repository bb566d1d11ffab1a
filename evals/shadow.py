"""Shadow mode: a candidate version runs beside the live one on live inputs.

While a workflow has an active `ShadowRollout`, each live run started on
it gets a shadow run of the candidate (mode shadow, `shadow_of` the live
run, `tools_from` the live run: the candidate's reads are answered by the
live run's calls where they match). The live start is never held or
failed by it: `live_run_started` is a run-started hook (called after the
live run commits, its failures logged by the engine) that only looks for
an active rollout and queues a task; the task starts the shadow run, once
per live run (an idempotency key of the live run).

`shadow_report` puts each pair side by side: where the candidate's route,
outcome or drafts differ from the live run's, and from what people
decided on the live run (approved as is, edited, rejected), and the cost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.db.models.functions import Now
from django.utils.module_loading import import_string

from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from evals.checks import facts_of_runs
from evals.models import ShadowRollout
from policies import audit
from runs.engine import start_run
from runs.engine.errors import InvalidState, NotFound
from runs.models import TERMINAL_STATUSES, Run, RunMode, ToolCallRecord, Workflow, WorkflowVersion

log = logging.getLogger("bosun.evals")


def start_shadow(
    *, workflow: Workflow, candidate: WorkflowVersion, actor: str = "system"
) -> ShadowRollout:
    """Run `candidate` in shadow beside every new live run of the workflow.
    One active rollout per workflow (a unique constraint): InvalidState."""
    if candidate.workflow_id != workflow.pk:
        raise InvalidState(f"{candidate} is not a version of {workflow.slug}")
    try:
        with transaction.atomic():
            rollout = ShadowRollout.objects.create(
                workflow=workflow, candidate=candidate, started_by=actor
            )
            audit.record(
                action="shadow.started",
                actor=actor,
                target=rollout,
                data={"workflow": workflow.slug, "candidate": str(candidate)},
            )
    except IntegrityError:
        raise InvalidState(f"{workflow.slug} already has an active shadow; stop it first") from None
    return rollout


def stop_shadow(*, rollout_id: int, actor: str = "system") -> ShadowRollout:
    with transaction.atomic():
        if not ShadowRollout.objects.filter(pk=rollout_id, active=True).update(
            active=False, stopped_at=Now()
        ):
            if not ShadowRollout.objects.filter(pk=rollout_id).exists():
                raise NotFound(f"no shadow rollout {rollout_id}")
            raise InvalidState(f"shadow rollout {rollout_id} is already stopped")
        audit.record(
            action="shadow.stopped",
            actor=actor,
            target_type="evals.shadowrollout",
            target_id=rollout_id,
        )
    return ShadowRollout.objects.get(pk=rollout_id)


def live_run_started(*, run_id: int, workflow_id: int) -> None:
    """The run-started hook: queue the shadow run when the workflow has an
    active rollout (one indexed look-up; nothing else on the start path)."""
    if ShadowRollout.objects.filter(workflow_id=workflow_id, active=True).exists():
        import_string(settings.BOSUN_SHADOW_QUEUE)(run_id)


def shadow_run_of(*, run_id: int) -> Run | None:
    """Start the shadow run of live run `run_id` if its workflow has an
    active rollout (once: the live run names its idempotency key). The
    shadow run, or None."""
    live = Run.objects.select_related("workflow").filter(pk=run_id, mode=RunMode.LIVE).first()
    if live is None:
        return None
    rollout = (
        ShadowRollout.objects.filter(workflow=live.workflow, active=True)
        .select_related("candidate")
        .first()
    )
    if rollout is None or rollout.candidate_id == live.version_id:
        return None
    started = start_run(
        workflow=live.workflow,
        input=live.input,
        version=rollout.candidate,
        mode=RunMode.SHADOW,
        tools_from=live.pk,
        shadow_of=live.pk,
        idempotency_key=f"shadow-of-{live.pk}",
    )
    return started.run


@dataclass
class Pair:
    live: Run
    shadow: Run
    live_facts: dict[str, Any]
    shadow_facts: dict[str, Any]
    human: str  # what people decided on the live run's drafts: approved, edited, rejected, —
    human_draft: Any
    would_cost_usd: Decimal

    @property
    def over(self) -> bool:
        return self.live.status in TERMINAL_STATUSES and self.shadow.status in TERMINAL_STATUSES

    @property
    def same_route(self) -> bool:
        return self.live_facts.get("route") == self.shadow_facts.get("route")

    @property
    def same_outcome(self) -> bool:
        return self.live.outcome == self.shadow.outcome

    @property
    def same_drafts(self) -> bool:
        return self.live_proposed == self.shadow_facts.get("drafts")

    @property
    def live_proposed(self) -> dict[str, Any]:
        """The drafts the live version proposed (before any person's edit)."""
        return self.live_facts.get("proposed", {})

    @property
    def agrees_with_human(self) -> bool | None:
        """Would the candidate's draft have been accepted as the person
        left it? None when no person decided a draft on the live run."""
        if self.human in ("", "—"):
            return None
        drafts = list((self.shadow_facts.get("drafts") or {}).values())
        if self.human == "rejected":
            return not drafts or drafts[0] != self.human_draft
        return bool(drafts) and drafts[0] == self.human_draft

    @property
    def differs(self) -> bool:
        return not (self.same_route and self.same_outcome and self.same_drafts)


@dataclass
class ShadowReport:
    rollout: ShadowRollout
    pairs: list[Pair]

    @property
    def compared(self) -> list[Pair]:
        return [pair for pair in self.pairs if pair.over]

    @property
    def differing(self) -> list[Pair]:
        return [pair for pair in self.compared if pair.differs]

    @property
    def cost_usd(self) -> Decimal:
        return sum((pair.shadow.cost_usd for pair in self.pairs), Decimal(0))

    @property
    def would_cost_usd(self) -> Decimal:
        return sum((pair.would_cost_usd for pair in self.pairs), Decimal(0))

    @property
    def live_cost_usd(self) -> Decimal:
        return sum((pair.live.cost_usd for pair in self.pairs), Decimal(0))

    @property
    def human_agreement(self) -> tuple[int, int]:
        judged = [p.agrees_with_human for p in self.compared if p.agrees_with_human is not None]
        return sum(judged), len(judged)


def shadow_report(*, rollout: ShadowRollout, limit: int = 200) -> ShadowReport:
    shadows = list(
        Run.objects.filter(mode=RunMode.SHADOW, version=rollout.candidate, shadow_of__isnull=False)
        .select_related("shadow_of")
        .order_by("-pk")[:limit]
    )
    would = dict(
        ToolCallRecord.objects.filter(run__in=shadows)
        .values("run_id")
        .annotate(total=Sum("would_cost_usd"))
        .values_list("run_id", "total")
    )
    lives = [shadow.shadow_of for shadow in shadows if shadow.shadow_of is not None]
    facts = facts_of_runs([*shadows, *lives])
    requests: dict[int, list[ApprovalRequest]] = {live.pk: [] for live in lives}
    for request in ApprovalRequest.objects.filter(run__in=lives, kind=ApprovalKind.DRAFT).order_by(
        "run_id", "seq"
    ):
        requests[request.run_id].append(request)
    pairs = []
    for shadow in shadows:
        live = shadow.shadow_of
        assert live is not None
        live_facts = facts[live.pk]
        human, human_draft, proposed = _decisions(requests[live.pk])
        live_facts["proposed"] = proposed
        pairs.append(
            Pair(
                live,
                shadow,
                live_facts,
                facts[shadow.pk],
                human,
                human_draft,
                would.get(shadow.pk) or Decimal(0),
            )
        )
    return ShadowReport(rollout, pairs)


def _decisions(requests: list[ApprovalRequest]) -> tuple[str, Any, dict[str, Any]]:
    """What people decided on the run's first draft (approved, edited,
    rejected, or "—"), the draft as they left it, and every draft step's
    draft as the live version proposed it, from the run's draft requests
    in order."""
    proposed = {request.step_key: request.draft for request in requests}
    for request in requests:
        if request.decided_by_label == "policy":
            continue
        if request.status == ApprovalStatus.REJECTED:
            return "rejected", request.draft, proposed
        if request.status == ApprovalStatus.APPROVED:
            if request.edited_draft is not None:
                return "edited", request.edited_draft, proposed
            return "approved", request.draft, proposed
    return "—", None, proposed
