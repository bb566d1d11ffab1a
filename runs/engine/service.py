"""The engine's operations on runs: start, retry, cancel, decide, sweep.

Admin actions, console views, API handlers, tasks and management commands
all call these; none of them changes a run's state by itself.
"""

from __future__ import annotations

import difflib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

import jsonschema
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Greatest, Now
from django.utils.module_loading import import_string

from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from policies import audit
from policies.services import current_versions
from runs.engine import breakers, checks, rollout, store
from runs.engine.doorbell import ring
from runs.engine.errors import (
    AlreadyDecided,
    ClaimedByOther,
    InvalidInput,
    InvalidState,
    NotFound,
    QueueFull,
)
from runs.models import (
    TERMINAL_STATUSES,
    RollupDay,
    Run,
    RunMode,
    RunStatus,
    ToolCallRecord,
    ToolCallStatus,
    Workflow,
    WorkflowVersion,
)

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser

ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.WAITING)
# The audit log's target type for runs (what `record(target=run)` would say).
_RUN = Run._meta.label_lower

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
    mode: str = RunMode.LIVE,
    tools_from: int | None = None,
    shadow_of: int | None = None,
) -> Started:
    """Create a queued run of the workflow's live version (or, while a
    canary runs, of the version its draw picks: runs.engine.rollout) and
    ring for it.

    The input is screened first: it must match the workflow's entry schema
    (InvalidInput names each field), and any filled field the workflow
    marks untrusted taints the run (see runs.engine.checks). The run binds the current versions of
    the workflow's role and policy. A workflow at its `max_active_runs`
    refuses with QueueFull (backpressure).

    With an idempotency key, a second start returns the first run: the
    unique constraint refuses the duplicate row and we read the winner.
    With `replay_of`, llm steps answer from that run's recorded outputs.

    `mode` other than live starts a sandbox run (runs.models.RunMode): it
    has no effect outside (see runs.engine.gate), its reads are answered
    from `tools_from`'s recorded calls, it is not counted against the
    workflow's queue, and its idempotency keys are its own, apart from
    live runs'. `shadow_of` names the live run a shadow run runs beside.
    """
    if mode not in RunMode.values:
        raise InvalidState(f"no run mode {mode!r}")
    live = mode == RunMode.LIVE
    if not live and idempotency_key is not None:
        idempotency_key = f"{mode}:{idempotency_key}"
    if isinstance(workflow, str):
        try:
            workflow = Workflow.objects.select_related("role", "policy").get(slug=workflow)
        except Workflow.DoesNotExist:
            raise NotFound(f"no workflow {workflow!r}") from None
    if idempotency_key is not None:
        existing = Run.objects.filter(workflow=workflow, idempotency_key=idempotency_key).first()
        if existing is not None:
            return Started(existing, created=False)
    # The live version, or a canary's share of new live runs on its
    # candidate; the run keeps the version drawn here for good (retries
    # included). A sandbox run not given a version runs the live one: the
    # canary's share is of live traffic.
    if version is None:
        version = (
            rollout.version_for_new_run(workflow, idempotency_key)
            if live
            else rollout.live_version(workflow.pk)
        )
    if version is None:
        raise InvalidState(f"workflow {workflow.slug!r} has no published version")
    definition = version.definition
    _check_input(definition.get("input_schema"), input)
    taint = checks.taint_of_input(input, definition.get("untrusted_fields") or [])
    role_version_id, policy_version_id = current_versions(workflow)
    run = Run(
        workflow=workflow,
        version=version,
        input=input,
        idempotency_key=idempotency_key,
        current_step=definition["entry"],
        ring_at=_later(store.REDELIVER_AFTER_S),
        replay_of_id=replay_of,
        mode=mode,
        tools_from_id=tools_from,
        shadow_of_id=shadow_of,
        role_version_id=role_version_id,
        policy_version_id=policy_version_id,
        tainted=taint is not None,
        taint_reason=taint.source[:300] if taint else "",
        taint_signals=taint.signals[:500] if taint else "",
    )
    try:
        with transaction.atomic():
            if workflow.max_active_runs is not None and live:
                _admit(workflow)
            run.save()
            ring(run.pk)
            if live and settings.BOSUN_RUN_STARTED_HOOKS:
                transaction.on_commit(partial(_started_hooks, run.pk, workflow.pk))
    except IntegrityError:
        if idempotency_key is None:
            raise
        existing = Run.objects.get(workflow=workflow, idempotency_key=idempotency_key)
        return Started(existing, created=False)
    return Started(run, created=True)


def _started_hooks(run_id: int, workflow_id: int) -> None:
    """Tell the hooks of `settings.BOSUN_RUN_STARTED_HOOKS` that a live run
    started (after its commit). A hook that fails is logged: it never fails
    or holds the start."""
    for path in settings.BOSUN_RUN_STARTED_HOOKS:
        try:
            import_string(path)(run_id=run_id, workflow_id=workflow_id)
        except Exception:
            log.exception("run %s: the run-started hook %s failed", run_id, path)


# Runs waiting on a person do not count against a workflow's queue.
_HUMAN_WAITS = ("approval", "needs_reconciliation", "paused")


def _admit(workflow: Workflow) -> None:
    """Refuse a new run when the workflow's queue is full. The workflow row
    is locked (PostgreSQL; SQLite serializes writers) so concurrent starts
    count one after the other and never overshoot."""
    assert workflow.max_active_runs is not None  # the caller admits only limited workflows
    Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk").first()
    active = (
        Run.objects.filter(workflow=workflow, status__in=ACTIVE_STATUSES, mode=RunMode.LIVE)
        .exclude(status=RunStatus.WAITING, wait_reason__in=_HUMAN_WAITS)
        .count()
    )
    if active >= workflow.max_active_runs:
        raise QueueFull(
            f"workflow {workflow.slug!r} has {active} active runs, its limit; try again later",
            retry_after=settings.BOSUN_QUEUE_FULL_RETRY_AFTER_S,
        )


def _check_input(schema: dict[str, Any] | None, value: Any) -> None:
    if schema is None:
        return
    errors = sorted(
        jsonschema.Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.path)
    )
    if errors:
        fields: dict[str, str] = {}
        for error in errors:
            path = ".".join(str(p) for p in error.absolute_path)
            if error.validator == "required" and not path:
                # Name the missing field itself, not the object holding it.
                missing = error.message.split("'")[1] if "'" in error.message else ""
                path = missing or path
            fields.setdefault(path or "(input)", error.message)
        raise InvalidInput(fields)


def replay_run(*, run_id: int, version: WorkflowVersion | None = None) -> Started:
    """Run a recorded run's input again (on `version`, by default the latest)
    with every llm step answered from the recording: no model is paid."""
    original = Run.objects.select_related("workflow").filter(pk=run_id).first()
    if original is None:
        raise NotFound(f"no run {run_id}")
    return start_run(
        workflow=original.workflow, input=original.input, version=version, replay_of=run_id
    )


def retry_run(*, run_id: int, actor: str = "system") -> Run:
    """Re-queue a failed run at the step that failed; earlier outputs stay.
    Audited as `run.retried`, and its day's roll-up marked stale, in the
    same transaction."""
    with transaction.atomic():
        # The failed step runs again as the next attempt, with a fresh
        # allowance of attempts; every step before it keeps its output.
        updated = Run.objects.filter(pk=run_id, status=RunStatus.FAILED).update(
            status=RunStatus.QUEUED,
            attempts_before=F("attempt"),
            attempt=F("attempt") + 1,
            error="",
            dead_lettered_at=None,
            dead_step="",
            dead_error_type="",
            dead_retryable=None,
            finished_at=None,
            wall_from=None,  # a fresh wall-time allowance from the next claim
            ring_at=_later(store.REDELIVER_AFTER_S),
        )
        if not updated:
            raise _not_in_state(run_id, "only a failed run can be retried")
        # The run is active again: a daily roll-up that counted it as
        # finished no longer holds (see runs.rollup), committed with the retry.
        created = Run.objects.filter(pk=run_id).values_list("created_at", flat=True).get()
        RollupDay.mark_active_again(run_id, created)
        audit.record(action="run.retried", actor=actor, target_type=_RUN, target_id=run_id)
        ring(run_id)
    return Run.objects.get(pk=run_id)


def cancel_run(*, run_id: int, reason: str = "", actor: str = "system") -> Run:
    """Cancel a run that has not finished. A worker holding it stops at its
    next checkpoint (the fenced update no longer matches). Audited as
    `run.cancelled` in the same transaction."""
    with transaction.atomic():
        updated = (
            Run.objects.filter(pk=run_id)
            .exclude(status__in=TERMINAL_STATUSES)
            .update(
                status=RunStatus.CANCELLED,
                error=reason[:4000],
                # created_at is the app's clock (to the microsecond), Now()
                # the database's (to the millisecond on SQLite): a run
                # cancelled as it is created must not finish before it began.
                finished_at=Greatest(Now(), F("created_at")),
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
        audit.record(
            action="run.cancelled",
            actor=actor,
            target_type=_RUN,
            target_id=run_id,
            data={"reason": reason[:4000]},
        )
    return Run.objects.get(pk=run_id)


def decide_approval(
    *,
    approval_id: int,
    approve: bool,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    actor_label: str = "",
    edited_draft: Any = None,
    reason: str = "",
    decision_code: str = "",
    honour_claims: bool = False,
) -> ApprovalRequest:
    """Record a decision and wake the run. Of concurrent deciders one wins;
    the others get AlreadyDecided (naming who decided).

    `edited_draft` (approve only) replaces the draft the run goes on with;
    a unified diff of the draft's text is kept in `edit_diff`. A tool call
    is approved or rejected as it stands, never edited. The winner's
    decision is appended to the audit log in the same transaction, as
    `approval.approved`, `approval.edited` or `approval.rejected`, by
    `actor` (a user) or else `actor_label` ("policy", "key:…", a name).

    `decision_code` is a rejection's reason code (a code or a reason text
    is required to reject). With `honour_claims` (the console's review
    flow) a request another reviewer has claimed is not decided until the
    claim runs out: ClaimedByOther, decided in the same conditional UPDATE,
    so no check-then-act race."""
    if not approve and not (reason.strip() or decision_code):
        raise InvalidState("a rejection needs a reason")
    label = actor_label or (getattr(actor, "get_username", lambda: "")() if actor else "")
    current = ApprovalRequest.objects.filter(pk=approval_id).values("kind", "draft").first()
    if current is None:
        raise NotFound(f"no approval request {approval_id}")
    if edited_draft is not None and current["kind"] == ApprovalKind.TOOL_CALL:
        raise InvalidState("a tool call is approved or rejected as it stands, not edited")
    if not approve or edited_draft == current["draft"]:
        edited_draft = None  # an unchanged "edit" is a plain approval
    diff = "" if edited_draft is None else draft_diff(current["draft"], edited_draft)
    pending = ApprovalRequest.objects.filter(pk=approval_id, status=ApprovalStatus.PENDING)
    if honour_claims:
        mine = Q(claimed_by=actor) if getattr(actor, "pk", None) else Q(pk__in=[])
        pending = pending.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=Now()) | mine)
    with transaction.atomic():
        decided = pending.update(
            status=ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED,
            edited_draft=edited_draft,
            edit_diff=diff,
            decision_reason=reason,
            decision_code=decision_code,
            claimed_by=None,
            claimed_by_label="",
            claimed_until=None,
            decided_by=actor if getattr(actor, "pk", None) else None,
            decided_by_label=label[:150],
            decided_at=Now(),
        )
        request = ApprovalRequest.objects.get(pk=approval_id)
        if not decided and request.status == ApprovalStatus.PENDING:
            until = request.claimed_until.strftime("%H:%M UTC") if request.claimed_until else ""
            raise ClaimedByOther(
                f"{request.claimed_by_label or 'another reviewer'} has approval {approval_id}"
                f" open (until {until})"
            )
        if not decided:
            who = request.decided_by_label or "someone else"
            raise AlreadyDecided(f"approval {approval_id} was already {request.status} by {who}")
        # Only the winner gets here: one audit entry per decision, committed
        # with it or not at all.
        action = "edited" if edited_draft is not None else "approved" if approve else "rejected"
        audit.record(
            action=f"approval.{action}",
            actor=_audit_actor(actor, label),
            target=request,
            data={
                "reason": reason,
                **({"code": decision_code} if decision_code else {}),
                "run": request.run_id,
                "step": request.step_key,
            },
        )
        # The run keeps its time waiting for people (the dashboard's).
        assert request.decided_at is not None  # just set, by this UPDATE
        waited = (request.decided_at - request.created_at).total_seconds() * 1000
        Run.objects.filter(pk=request.run_id).update(
            decisions=F("decisions") + 1, wait_ms=F("wait_ms") + max(waited, 0.0)
        )
        Run.objects.filter(
            pk=request.run_id, status=RunStatus.WAITING, wait_reason="approval"
        ).update(status=RunStatus.QUEUED, wait_reason="", ring_at=_later(store.REDELIVER_AFTER_S))
        ring(request.run_id)
    return request


def draft_diff(before: Any, after: Any) -> str:
    """What a reviewer changed. Two objects (an email's to, subject, body):
    field by field, each changed field under `@@ <field>` with its removed
    (`-`) and added (`+`) lines. Anything else: a unified diff of the
    drafts' text (JSON pretty-printed)."""
    if isinstance(before, dict) and isinstance(after, dict):
        return "".join(_field_diff(key, before, after) for key in _keys(before, after))
    lines = [_draft_text(value).splitlines(keepends=True) for value in (before, after)]
    return "".join(difflib.unified_diff(lines[0], lines[1], fromfile="draft", tofile="edited"))


def _keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return [*before, *(key for key in after if key not in before)]


def _field_diff(key: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    old, new = before.get(key, _ABSENT), after.get(key, _ABSENT)
    if old == new:
        return ""
    lines = [_field_lines(value) for value in (old, new)]
    body = difflib.unified_diff(lines[0], lines[1], n=1, lineterm="")
    # Drop the file headers and hunk ranges: the field's name heads it.
    kept = [line for line in body if not line.startswith(("---", "+++", "@@"))]
    return f"@@ {key}\n" + "".join(f"{line}\n" for line in kept)


_ABSENT = object()


def _field_lines(value: Any) -> list[str]:
    if value is _ABSENT:
        return []
    if isinstance(value, str):
        return value.splitlines() or [""]
    return [json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)]


def _draft_text(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    return text if text.endswith("\n") else text + "\n"


def _audit_actor(actor: AbstractBaseUser | AnonymousUser | None, label: str) -> str:
    if getattr(actor, "is_authenticated", False):
        return audit.actor_of(actor)
    if label in ("policy", "system") or ":" in label:
        return label
    return f"user:{label}" if label else "system"


def decide_timed_out_approvals(*, limit: int = 200) -> list[int]:
    """Decide, as the policy, the pending approvals past their timeout (by
    their step's `on_timeout`); the ids decided. A person who decided first
    wins: that approval is skipped. Safe to run anywhere, any number of
    times at once."""
    timed_out = (
        ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING, timeout_after__lte=Now())
        .exclude(on_timeout="")
        .values_list("pk", "on_timeout")
    )
    decided = []
    for approval_id, on_timeout in timed_out[:limit]:
        try:
            decide_approval(
                approval_id=approval_id,
                approve=on_timeout == "approve",
                actor_label="policy",
                reason="sla timeout",
            )
        except AlreadyDecided:
            continue  # a person (or another sweep) decided it meanwhile
        decided.append(approval_id)
    if decided:
        log.info("%d approval(s) past their timeout decided by policy", len(decided))
    return decided


def reconcile_tool_call(
    *,
    record_id: int,
    happened: bool,
    result: dict[str, Any] | None = None,
    note: str,
    by: str,
    actor: str = "system",
) -> ToolCallRecord:
    """A person settles a call whose outcome was unknown: it happened (the
    run goes on with `result`, nothing is called again) or it did not (the
    run calls it again). Then the waiting run resumes. Audited as
    `toolcall.reconciled` in the same transaction."""
    if not note.strip():
        raise InvalidState("say how you checked (a note is required)")
    with transaction.atomic():
        updated = ToolCallRecord.objects.filter(
            pk=record_id, status__in=(ToolCallStatus.UNKNOWN, ToolCallStatus.STARTED)
        ).update(
            status=ToolCallStatus.RECONCILED if happened else ToolCallStatus.FAILED,
            result=(result or {}) if happened else None,
            reconciled_by=by[:150],
            reconcile_note=note,
            finished_at=Now(),
        )
        record = ToolCallRecord.objects.filter(pk=record_id).first()
        if record is None:
            raise NotFound(f"no tool call {record_id}")
        if not updated:
            raise InvalidState(f"tool call {record_id} is {record.status}, not unknown")
        audit.record(
            action="toolcall.reconciled",
            actor=actor,
            target=record,
            data={
                "run": record.run_id,
                "tool": record.tool,
                "happened": happened,
                "by": by[:150],
                "note": note[:4000],
            },
        )
        Run.objects.filter(
            pk=record.run_id, status=RunStatus.WAITING, wait_reason="needs_reconciliation"
        ).update(status=RunStatus.QUEUED, wait_reason="", ring_at=_later(store.REDELIVER_AFTER_S))
        ring(record.run_id)
    return record


def sweep(*, limit: int = 500) -> list[int]:
    """Ring for every run whose timer is due: a due retry, an expired lease,
    a queued run whose task was lost. Each due run is pushed
    `store.REDELIVER_AFTER_S` into the future as it is rung, so concurrent
    sweepers do not ring the same run twice. A circuit breaker whose
    cool-down is over gets one waiting run made due to probe it."""
    breakers.nominate_probers()
    breakers.alert_long_outages()
    breakers.dead_letter_outlasted()
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


def expire_leases_of(workers: list[str]) -> int:
    """End now the leases held by these worker processes, known to be dead
    (`worker_id()` values, or their `host:pid:` prefix): their runs are due
    for the sweeper at once instead of when the lease would have run out.
    A dead process writes nothing more, so nothing is fenced out that could
    still commit."""
    if not workers:
        return 0
    held = Q()
    for worker in workers:
        held |= Q(lease_owner__startswith=worker)
    return Run.objects.filter(held, status=RunStatus.RUNNING).update(
        lease_expires_at=Now(), ring_at=Now()
    )


def mark_queued_runs_due() -> int:
    """Make every queued run due for the sweeper now. A worker cluster that
    lost its queue calls it: the doorbells that queue held are rung again
    within a sweep instead of after `store.REDELIVER_AFTER_S`. A run whose
    doorbell was not lost is rung twice, which is harmless."""
    return Run.objects.filter(status=RunStatus.QUEUED, ring_at__gt=Now()).update(ring_at=Now())


def _later(seconds: float) -> CombinedExpression:
    return Now() + timedelta(seconds=seconds)


def _not_in_state(run_id: int, message: str) -> Exception:
    if not Run.objects.filter(pk=run_id).exists():
        return NotFound(f"no run {run_id}")
    return InvalidState(message)
