"""Which version a new run starts on: the live one, or a canary's share.

A workflow's live version is `Workflow.live_version`, or the newest
published version when none is pinned (as before canaries existed). A
canary (`Rollout`, active) sends `share_pct` % of NEW runs to its candidate
and the rest to its baseline; `promote_rollout` makes the candidate live,
`roll_back_rollout` the baseline (also after a promote). Runs keep the
version they started on: nothing here touches a run, and a retry resumes
the run's own version.

The draw is per run and made once, when the run is created: a run with an
idempotency key falls in bucket `sha256(rollout id, key) mod 100`, so the
same key lands on the same side of the same canary every time; a run
without one draws its bucket at random. The run records the version, so
the draw is never made again.

Every change is audited (`rollout.started`, `rollout.promoted`,
`rollout.rolled_back`) in the transaction that makes it, with who and why.
Who may act is the caller's check (`runs.manage_rollout`; the API's
`rollouts:write` scope).
"""

from __future__ import annotations

import hashlib
import secrets

from django.db import IntegrityError, transaction
from django.db.models import Case, Subquery, When
from django.db.models.functions import Now

from policies import audit
from runs.engine.errors import InvalidState, NotFound
from runs.models import Rollout, RolloutStatus, Workflow, WorkflowVersion

BUCKETS = 100


def canary_bucket(rollout_id: int, idempotency_key: str | None) -> int:
    """The run's bucket in [0, 100): below the share, it runs the candidate."""
    if idempotency_key is None:
        return secrets.randbelow(BUCKETS)
    digest = hashlib.sha256(f"{rollout_id}:{idempotency_key}".encode()).hexdigest()
    return int(digest[:8], 16) % BUCKETS


def active_rollout(workflow_id: int) -> Rollout | None:
    return (
        Rollout.objects.filter(workflow_id=workflow_id, status=RolloutStatus.ACTIVE)
        .select_related("baseline", "candidate")
        .first()
    )


def live_version(workflow_id: int) -> WorkflowVersion | None:
    """The version new runs start on when no canary runs, in one query
    (read from the database, not from a workflow instance that may be
    stale): the pinned one first, else the newest."""
    pinned = Workflow.objects.filter(pk=workflow_id).values("live_version_id")[:1]
    return (
        WorkflowVersion.objects.published()
        .filter(workflow_id=workflow_id)
        .order_by(Case(When(pk=Subquery(pinned), then=0), default=1), "-number")
        .first()
    )


def version_for_new_run(workflow: Workflow, idempotency_key: str | None) -> WorkflowVersion | None:
    """The version a new run of `workflow` binds: a canary's draw, or live."""
    rollout = active_rollout(workflow.pk)
    if rollout is not None:
        bucket = canary_bucket(rollout.pk, idempotency_key)
        return rollout.candidate if bucket < rollout.share_pct else rollout.baseline
    return live_version(workflow.pk)


def _check_share(share_pct: int) -> None:
    if not 1 <= share_pct <= 99:
        raise InvalidState("a canary's share is a whole percentage from 1 to 99")


def start_canary(
    *,
    workflow: Workflow,
    candidate: WorkflowVersion,
    share_pct: int,
    actor: str,
    reason: str = "",
    baseline: WorkflowVersion | None = None,
) -> Rollout:
    """Send `share_pct` % of new runs to `candidate`; the rest stay on the
    live version (`baseline`, by default the live one now), which is pinned
    as live so that a later publish does not move it. One canary at a time
    per workflow (a unique constraint): InvalidState if one runs."""
    _check_share(share_pct)
    if candidate.workflow_id != workflow.pk:
        raise InvalidState(f"{candidate} is not a version of {workflow.slug}")
    with transaction.atomic():
        # Serialize rollout changes of this workflow (PostgreSQL; SQLite
        # serializes writers already).
        Workflow.objects.select_for_update().filter(pk=workflow.pk).values_list("pk").first()
        baseline = baseline or live_version(workflow.pk)
        if baseline is None:
            raise InvalidState(f"workflow {workflow.slug!r} has no live version to compare with")
        if baseline.pk == candidate.pk:
            raise InvalidState(f"{candidate} is the live version already")
        try:
            with transaction.atomic():
                rollout = Rollout.objects.create(
                    workflow=workflow,
                    baseline=baseline,
                    candidate=candidate,
                    share_pct=share_pct,
                    started_by=actor[:150],
                    start_reason=reason[:4000],
                )
        except IntegrityError:
            raise InvalidState(
                f"a canary of {workflow.slug!r} is running: promote or roll it back first"
            ) from None
        Workflow.objects.filter(pk=workflow.pk).update(live_version=baseline)
        workflow.live_version = baseline
        audit.record(
            action="rollout.started",
            actor=actor,
            target=rollout,
            data={
                "workflow": workflow.slug,
                "baseline": baseline.number,
                "candidate": candidate.number,
                "share_pct": share_pct,
                "reason": reason[:4000],
            },
        )
    return rollout


def promote_rollout(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Make an active canary's candidate the live version: every new run
    starts on it. Runs already started keep their version."""
    with transaction.atomic():
        # A conditional update: of two concurrent promotes (or a promote
        # and a rollback) exactly one changes the row.
        changed = Rollout.objects.filter(pk=rollout_id, status=RolloutStatus.ACTIVE).update(
            status=RolloutStatus.PROMOTED,
            promoted_at=Now(),
            promoted_by=actor[:150],
            promote_reason=reason[:4000],
        )
        rollout = _get(rollout_id)
        if not changed:
            raise InvalidState(f"the canary is {rollout.get_status_display().lower()}, not running")
        Workflow.objects.filter(pk=rollout.workflow_id).update(live_version=rollout.candidate_id)
        _audit(rollout, "rollout.promoted", actor, reason, live=rollout.candidate)
    return rollout


def roll_back_rollout(*, rollout_id: int, actor: str, reason: str = "") -> Rollout:
    """Stop a canary and keep the baseline live, or undo a promote: the
    baseline is live again. A promote can be undone only while its
    candidate is still the live version (nothing was made live since)."""
    with transaction.atomic():
        rollout = _get(rollout_id)
        # Serialize with other rollout changes of the workflow, then decide
        # from what is committed.
        Workflow.objects.select_for_update().filter(pk=rollout.workflow_id).values_list(
            "pk"
        ).first()
        rollout = _get(rollout_id)
        was = rollout.status
        if was == RolloutStatus.ROLLED_BACK:
            raise InvalidState("the canary was rolled back already")
        if was == RolloutStatus.PROMOTED and live_version(rollout.workflow_id) != rollout.candidate:
            raise InvalidState("another version has been made live since this promote")
        changed = Rollout.objects.filter(pk=rollout_id, status=was).update(
            status=RolloutStatus.ROLLED_BACK,
            rolled_back_at=Now(),
            rolled_back_by=actor[:150],
            rollback_reason=reason[:4000],
        )
        if not changed:
            raise InvalidState("the canary changed meanwhile; look again")
        Workflow.objects.filter(pk=rollout.workflow_id).update(live_version=rollout.baseline_id)
        _audit(rollout, "rollout.rolled_back", actor, reason, live=rollout.baseline, was=was)
    return _get(rollout_id)


def _get(rollout_id: int) -> Rollout:
    rollout = Rollout.objects.select_related("workflow", "baseline", "candidate").filter(
        pk=rollout_id
    )
    found = rollout.first()
    if found is None:
        raise NotFound(f"no rollout {rollout_id}")
    return found


def _audit(
    rollout: Rollout, action: str, actor: str, reason: str, *, live: WorkflowVersion, was: str = ""
) -> None:
    audit.record(
        action=action,
        actor=actor,
        target=rollout,
        data={
            "workflow": rollout.workflow.slug,
            "baseline": rollout.baseline.number,
            "candidate": rollout.candidate.number,
            "share_pct": rollout.share_pct,
            "live": live.number,
            "reason": reason[:4000],
            **({"was": was} if was else {}),
        },
    )
