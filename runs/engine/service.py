"""The engine's operations on runs: start, retry, cancel, decide, sweep.

Admin actions, console views, API handlers, tasks and management commands
all call these; none of them changes a run's state by itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from runs.engine import store
from runs.engine.doorbell import ring
from runs.engine.errors import AlreadyDecided, InvalidState, NotFound
from runs.models import TERMINAL_STATUSES, Run, RunStatus, Workflow, WorkflowVersion

log = logging.getLogger("bosun.engine")


@dataclass(frozen=True)
class Started:
    run: Run
    created: bool


def start_run(
    *,
    workflow: Workflow | str,
    input: dict[str, Any],
    idempotency_key: str | None = None,
    version: WorkflowVersion | None = None,
    replay_of: int | None = None,
) -> Started:
    """Create a queued run of the workflow's latest version and ring for it.

    With an idempotency key, a second start returns the first run: the
    unique constraint refuses the duplicate row and we read the winner.
    With `replay_of`, llm steps answer from that run's recorded outputs.
    """
    if isinstance(workflow, str):
        try:
            workflow = Workflow.objects.get(slug=workflow)
        except Workflow.DoesNotExist:
            raise NotFound(f"no workflow {workflow!r}") from None
    version = version or workflow.current_version
    if version is None:
        raise InvalidState(f"workflow {workflow.slug!r} has no published version")
    run = Run(
        workflow=workflow,
        version=version,
        input=input,
        idempotency_key=idempotency_key,
        current_step=version.definition["entry"],
        ring_at=_later(store.REDELIVER_AFTER_S),
        replay_of_id=replay_of,
    )
    try:
        with transaction.atomic():
            run.save()
            ring(run.pk)
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = Run.objects.get(workflow=workflow, idempotency_key=idempotency_key)
        return Started(existing, created=False)
    return Started(run, created=True)


def replay_run(*, run_id: int, version: WorkflowVersion | None = None) -> Started:
    """Run a recorded run's input again (on `version`, by default the latest)
    with every llm step answered from the recording: no model is paid."""
    original = Run.objects.select_related("workflow").filter(pk=run_id).first()
    if original is None:
        raise NotFound(f"no run {run_id}")
    return start_run(
        workflow=original.workflow, input=original.input, version=version, replay_of=run_id
    )


def retry_run(*, run_id: int) -> Run:
    """Re-queue a failed run at the step that failed; earlier outputs stay."""
    with transaction.atomic():
        # The failed step runs again as the next attempt, with a fresh
        # allowance of attempts; every step before it keeps its output.
        updated = Run.objects.filter(pk=run_id, status=RunStatus.FAILED).update(
            status=RunStatus.QUEUED,
            attempts_before=F("attempt"),
            attempt=F("attempt") + 1,
            error="",
            dead_lettered_at=None,
            finished_at=None,
            ring_at=_later(store.REDELIVER_AFTER_S),
        )
        if not updated:
            raise _not_in_state(run_id, "only a failed run can be retried")
        ring(run_id)
    return Run.objects.get(pk=run_id)


def cancel_run(*, run_id: int, reason: str = "") -> Run:
    """Cancel a run that has not finished. A worker holding it stops at its
    next checkpoint (the fenced update no longer matches)."""
    with transaction.atomic():
        updated = (
            Run.objects.filter(pk=run_id)
            .exclude(status__in=TERMINAL_STATUSES)
            .update(
                status=RunStatus.CANCELLED,
                error=reason[:4000],
                finished_at=Now(),
                ring_at=None,
                lease_owner="",
                lease_expires_at=None,
            )
        )
        if not updated:
            raise _not_in_state(run_id, "the run has already finished")
        ApprovalRequest.objects.filter(run_id=run_id, status=ApprovalStatus.PENDING).update(
            status=ApprovalStatus.CANCELLED, decided_at=Now()
        )
    return Run.objects.get(pk=run_id)


def decide_approval(
    *,
    approval_id: int,
    approve: bool,
    actor=None,
    actor_label: str = "",
    edited_draft: Any = None,
    reason: str = "",
) -> ApprovalRequest:
    """Record a decision and wake the run. Of concurrent deciders one wins;
    the others get AlreadyDecided."""
    if not approve and not reason.strip():
        raise InvalidState("a rejection needs a reason")
    label = actor_label or (getattr(actor, "get_username", lambda: "")() if actor else "")
    with transaction.atomic():
        decided = ApprovalRequest.objects.filter(
            pk=approval_id, status=ApprovalStatus.PENDING
        ).update(
            status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
            edited_draft=edited_draft if approve else None,
            decision_reason=reason,
            decided_by=actor if getattr(actor, "pk", None) else None,
            decided_by_label=label[:150],
            decided_at=Now(),
        )
        request = ApprovalRequest.objects.filter(pk=approval_id).first()
        if request is None:
            raise NotFound(f"no approval request {approval_id}")
        if not decided:
            raise AlreadyDecided(f"approval {approval_id} was already {request.status}")
        Run.objects.filter(
            pk=request.run_id, status=RunStatus.WAITING, wait_reason="approval"
        ).update(status=RunStatus.QUEUED, wait_reason="", ring_at=_later(store.REDELIVER_AFTER_S))
        ring(request.run_id)
    return request


def sweep(*, limit: int = 500) -> list[int]:
    """Ring for every run whose timer is due: a due retry, an expired lease,
    a queued run whose task was lost. Each due run is pushed
    `store.REDELIVER_AFTER_S` into the future as it is rung, so concurrent
    sweepers do not ring the same run twice."""
    pg = connection.vendor == "postgresql"
    pick = (
        f"SELECT id FROM {store.RUN} WHERE ring_at <= {store.now_sql()}"
        f" ORDER BY ring_at LIMIT %s{' FOR UPDATE SKIP LOCKED' if pg else ''}"
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {store.RUN} SET ring_at = {store.later_sql()} WHERE id IN ({pick}) RETURNING id",
            [store.REDELIVER_AFTER_S, limit],
        )
        due = [row[0] for row in cursor.fetchall()]
        for run_id in due:
            ring(run_id)
    if due:
        log.info("sweeper rang %d run(s)", len(due))
    return due


def _later(seconds: float):
    return Now() + timezone.timedelta(seconds=seconds)


def _not_in_state(run_id: int, message: str) -> Exception:
    if not Run.objects.filter(pk=run_id).exists():
        return NotFound(f"no run {run_id}")
    return InvalidState(message)
