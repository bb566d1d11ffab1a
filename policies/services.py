"""Saving roles and policies as versions, and throwing kill switches.

Admin, console and API call these; nothing here is called from `save()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticError

from policies import audit
from policies.models import (
    AgentRole,
    AgentRoleVersion,
    AutonomyMode,
    KillSwitch,
    KillSwitchChange,
    Policy,
    PolicyVersion,
    SwitchScope,
)
from runs.conditions import Condition


class AutonomyRule(BaseModel):
    """One rule of a policy: the first rule naming the tool (and whose
    condition on `args` holds, when it has one) decides the mode."""

    model_config = ConfigDict(extra="forbid")
    tool: str = Field(min_length=1)
    mode: AutonomyMode
    when: Condition | None = None
    # Shown to the reviewer and counted on the dashboard, e.g.
    # "refund_over_limit"; without one, "policy_requires_approval".
    reason_code: str = Field(default="", max_length=80, pattern=r"^[a-z0-9_.:-]*$")


@dataclass(frozen=True)
class Budget:
    max_steps: int
    max_llm_calls: int
    max_tool_calls: int
    max_cost_usd: Decimal
    max_wall_s: float


@dataclass(frozen=True)
class Rules:
    """What a run is bound to: its role's tools, its budget, its autonomy rules."""

    allowed_tools: frozenset[str]
    budget: Budget
    autonomy: tuple[AutonomyRule, ...]
    redact_prompts: bool


def autonomy_problems(rules: Any) -> list[str]:
    if not isinstance(rules, list):
        return ["autonomy must be a list of rules"]
    problems = []
    for index, rule in enumerate(rules):
        try:
            AutonomyRule.model_validate(rule)
        except PydanticError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(rule)"
            problems.append(f"rule {index + 1}: {where}: {first['msg']}")
    return problems


def _next_number(versions) -> int:
    return (versions.aggregate(top=Max("number"))["top"] or 0) + 1


def role_save(*, role: AgentRole, by: str = "", actor: str = "system") -> AgentRoleVersion:
    """Save the role and freeze the result as its next version; audited as
    `role.saved` (with what changed) in the same transaction."""
    from runs.tools.base import tool_names

    unknown = sorted(set(role.allowed_tools) - set(tool_names()))
    if unknown:
        raise ValidationError({"allowed_tools": f"no such tool: {', '.join(unknown)}"})
    return _save_versioned(role, AgentRoleVersion, "role", by, actor)


def policy_save(*, policy: Policy, by: str = "", actor: str = "system") -> PolicyVersion:
    """Save the policy and freeze the result as its next version; audited
    as `policy.saved` (with what changed) in the same transaction."""
    problems = autonomy_problems(policy.autonomy)
    if problems:
        raise ValidationError({"autonomy": problems})
    return _save_versioned(policy, PolicyVersion, "policy", by, actor)


def _save_versioned(obj, version_model, owner: str, by: str, actor: str):
    with transaction.atomic():
        # Lock the row so two saves cannot take the same version number.
        if obj.pk:
            type(obj).objects.select_for_update().filter(pk=obj.pk).first()
        number = _next_number(obj.versions) if obj.pk else 1
        previous = obj.versions.order_by("-number").first() if obj.pk else None
        obj.version = number
        obj.save()
        version = version_model.objects.create(
            **{owner: obj}, number=number, snapshot=obj.snapshot(), created_by=by[:150]
        )
        before = previous.snapshot if previous else {}
        changed = {
            key: [before.get(key), value]
            for key, value in version.snapshot.items()
            if before.get(key) != value
        }
        audit.record(
            action=f"{owner}.saved",
            actor=actor,
            target=obj,
            data={"version": number, "by": by[:150], "changed": changed},
        )
        return version


def current_versions(workflow) -> tuple[int | None, int | None]:
    """(role version id, policy version id) a new run of `workflow` binds."""
    role_version = policy_version = None
    if workflow.role_id:
        role_version = workflow.role.versions.order_by("-number").first() or role_save(
            role=workflow.role, by="bosun"
        )
    if workflow.policy_id:
        policy_version = workflow.policy.versions.order_by("-number").first() or policy_save(
            policy=workflow.policy, by="bosun"
        )
    return (
        role_version.pk if role_version else None,
        policy_version.pk if policy_version else None,
    )


@lru_cache(maxsize=512)
def rules_for(role_version_id: int | None, policy_version_id: int | None) -> Rules:
    """The rules of a pair of versions. Versions never change, so this caches."""
    allowed: frozenset[str] = frozenset()
    if role_version_id is not None:
        snapshot = AgentRoleVersion.objects.values_list("snapshot", flat=True).get(
            pk=role_version_id
        )
        allowed = frozenset(snapshot["allowed_tools"])
    data: dict[str, Any] = dict(settings.BOSUN_DEFAULT_BUDGET)
    autonomy: list[Any] = []
    redact = True
    if policy_version_id is not None:
        snapshot = PolicyVersion.objects.values_list("snapshot", flat=True).get(
            pk=policy_version_id
        )
        data = {k: snapshot[k] for k in data}
        autonomy = snapshot["autonomy"]
        redact = snapshot["redact_prompts"]
    budget = Budget(
        max_steps=int(data["max_steps"]),
        max_llm_calls=int(data["max_llm_calls"]),
        max_tool_calls=int(data["max_tool_calls"]),
        max_cost_usd=Decimal(str(data["max_cost_usd"])),
        max_wall_s=float(data["max_wall_s"]),
    )
    rules = tuple(AutonomyRule.model_validate(rule) for rule in autonomy)
    return Rules(allowed, budget, rules, redact)


# Kill switches --------------------------------------------------------------


def switch_set(
    *,
    scope: str,
    target: str = "",
    engaged: bool,
    reason: str,
    by: str,
    user=None,
    actor: str | None = None,
) -> KillSwitch:
    """Engage or lift a kill switch, recording who and why.

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
        from runs.engine import resume_paused

        resume_paused(actor=actor)
    return switch


def global_switch(*, lock: bool = False) -> KillSwitch:
    """The global switch row (a migration creates it; get_or_create covers a
    flushed table). Locking it FOR UPDATE waits for every tool gate holding
    it FOR SHARE, and holds new ones until the change commits."""
    manager = KillSwitch.objects.select_for_update() if lock else KillSwitch.objects
    switch, _ = manager.get_or_create(scope=SwitchScope.GLOBAL, target="")
    return switch
