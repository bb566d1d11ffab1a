"""Kill switches, evaluated by the engine (the rows live in `policies`).

A switch is engaged or lifted only through `set_switch`, which records who
and why and, on a lift, wakes the runs it paused (`resume_paused`). The
engine reads switches at two points: in the statement of every claim and
checkpoint (`store._switches_sql`), the moment the next step starts, so no
step starts after a switch change has committed, at no extra round trip;
and in the tool gate at the moment of a write or paid call, in the same
transaction as its ledger row (`ENGAGED_SQL`, under the switchboard lock),
so no such call starts after a switch change has committed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Now
from django.utils import timezone

from policies import audit
from policies.models import KillSwitch, KillSwitchChange, SwitchScope
from runs.engine import store
from runs.engine.doorbell import ring
from runs.engine.errors import Paused
from runs.models import Run, RunStatus

_RUN = Run._meta.label_lower


def set_switch(
    *,
    scope: str,
    target: str = "",
    engaged: bool,
    reason: str,
    by: str,
    user: Any = None,
    actor: str | None = None,
) -> KillSwitch:
    """Engage or lift a kill switch, recording who and why (`user`: the
    Django user who did it, when one did).

    The change is audited (`killswitch.engaged` / `killswitch.lifted`) in
    its transaction; `actor` defaults to the user's label ("system"
    without one). Runs woken by a lift are audited by `resume_paused`.

    Every change also updates the global switch row, which the tool gate
    reads with FOR SHARE in the same transaction as its ledger insert: so
    once this commits, no tool call can start that did not see it.
    """
    if not reason.strip():
        raise ValidationError({"reason": "say why the switch changes"})
    if scope not in SwitchScope.values:
        raise ValidationError({"scope": f"unknown scope {scope!r}"})
    target = "" if scope == SwitchScope.GLOBAL else target.strip()
    if scope != SwitchScope.GLOBAL and not target:
        raise ValidationError({"target": "name the workflow or tool"})
    with transaction.atomic():
        board = global_switch(lock=True)
        switch = board
        if scope != SwitchScope.GLOBAL:
            switch, _ = KillSwitch.objects.select_for_update().get_or_create(
                scope=scope, target=target
            )
        now = timezone.now()
        switch.engaged, switch.reason, switch.changed_by, switch.changed_at = (
            engaged,
            reason,
            by[:150],
            now,
        )
        switch.save()
        KillSwitchChange.objects.create(
            switch=switch,
            engaged=engaged,
            reason=reason,
            changed_by=by[:150],
            user=user if getattr(user, "pk", None) else None,
        )
        actor = actor or audit.actor_of(user)
        audit.record(
            action="killswitch.engaged" if engaged else "killswitch.lifted",
            actor=actor,
            target=switch,
            data={"scope": scope, "target": target, "reason": reason, "by": by[:150]},
        )
    if not engaged:
        resume_paused(actor=actor)
    return switch


def global_switch(*, lock: bool = False) -> KillSwitch:
    """The global switch row (a migration creates it; get_or_create covers a
    flushed table). Locking it FOR UPDATE waits for every tool gate holding
    it FOR SHARE, and holds new ones until the change commits."""
    manager = KillSwitch.objects.select_for_update() if lock else KillSwitch.objects
    switch, _ = manager.get_or_create(scope=SwitchScope.GLOBAL, target="")
    return switch


def resume_paused(*, workflow: str | None = None, actor: str = "system") -> list[int]:
    """Wake the runs a kill switch paused; each resumes where it stood (and
    parks again at once if another switch still holds it). Each woken run
    is audited as `run.resumed` in the same transaction."""
    runs = Run.objects.filter(status=RunStatus.WAITING, wait_reason="paused")
    if workflow:
        runs = runs.filter(workflow__slug=workflow)
    woken = []
    with transaction.atomic():
        for run_id in runs.values_list("pk", flat=True):
            if Run.objects.filter(pk=run_id, status=RunStatus.WAITING, wait_reason="paused").update(
                status=RunStatus.QUEUED, wait_reason="", ring_at=_later(store.REDELIVER_AFTER_S)
            ):
                audit.record(
                    action="run.resumed",
                    actor=actor,
                    target_type=_RUN,
                    target_id=run_id,
                    data={"was": "paused"},
                )
                ring(run_id)
                woken.append(run_id)
    return woken


# Switches that stop this call: global, its workflow's, its tool's.
# Two parameters: the workflow's slug and the tool's name.
ENGAGED_SQL = (
    "SELECT 1 FROM policies_killswitch WHERE engaged AND (scope = 'global'"
    " OR (scope = 'workflow' AND target = %s) OR (scope = 'tool' AND target = %s))"
)


def hold_switchboard() -> None:
    """Lock the global switch row FOR SHARE: a switch change (FOR UPDATE on
    the same row) waits for this transaction, and the statements after this
    one see any change that committed first. So no call starts after a
    switch commits. (SQLite: the IMMEDIATE transaction serializes writers.)"""
    if connection.vendor != "postgresql":
        return
    sql = "SELECT id FROM policies_killswitch WHERE scope = 'global' AND target = '' FOR SHARE"
    with connection.cursor() as cursor:
        cursor.execute(sql)
        if cursor.fetchone() is None:
            global_switch()
            cursor.execute(sql)


def refuse_if_switched_off(*, tool: str, workflow: str) -> None:
    """Raise Paused when a switch holds a call of `tool` in `workflow`."""
    engaged = KillSwitch.objects.filter(engaged=True).filter(
        Q(scope=SwitchScope.GLOBAL)
        | Q(scope=SwitchScope.WORKFLOW, target=workflow)
        | Q(scope=SwitchScope.TOOL, target=tool)
    )
    switch = engaged.first()
    if switch is not None:
        raise Paused(f"kill switch on {switch.target or 'everything'}: {switch.reason}")


def _later(seconds: float) -> CombinedExpression:
    return Now() + timedelta(seconds=seconds)
