"""Saving roles and policies as versions, and throwing kill switches.

Admin, console and API call these; nothing here is called from `save()`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Max
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticError

from lib import destinations as dest
from lib.conditions import Condition
from policies import audit
from policies.models import (
    AgentRole,
    AgentRoleVersion,
    AutonomyMode,
    Policy,
    PolicyVersion,
)


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
    # In a run that has read untrusted content, an `auto` rule lets a write
    # or egress call through without approval only when every destination
    # of the call matches one of these (lib.destinations patterns; "*" for
    # a tool whose destination is fixed, such as a vendor's API). Empty: a
    # tainted run's calls of this tool need approval.
    trusted_destinations: list[str] = Field(default_factory=list, max_length=200)

    @field_validator("trusted_destinations")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return _valid_patterns(value)


class Guard(BaseModel):
    """A knowledge event that blocks calls: while an event of `event_type`
    is active on the `entity_type` entity a call's destination names (the
    recipient `bob@acme.com` names the account `acme.com`), the gate
    refuses the call of any of `tools`, at the moment of the call."""

    model_config = ConfigDict(extra="forbid")
    event_type: str = Field(pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)+$")
    entity_type: str = Field(pattern=r"^[-a-zA-Z0-9_]+$", max_length=60)
    tools: list[str] = Field(min_length=1)


def _valid_patterns(value: list[str]) -> list[str]:
    problems = [problem for problem in map(dest.pattern_problem, value) if problem]
    if problems:
        raise ValueError("; ".join(problems))
    return [pattern.strip().lower() for pattern in value]


@dataclass(frozen=True)
class Budget:
    max_steps: int
    max_llm_calls: int
    max_tool_calls: int
    max_cost_usd: Decimal  # model plus vendor spend
    max_wall_s: float
    # Vendor -> the credits a run may spend at it; a vendor not listed is
    # capped by max_cost_usd alone.
    max_credits: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """What a run is bound to: its role's tools, its budget, its autonomy rules."""

    allowed_tools: frozenset[str]
    budget: Budget
    autonomy: tuple[AutonomyRule, ...]
    redact_prompts: bool
    # Tool name -> the destinations its arguments may name (no entry: none).
    destinations: dict[str, tuple[str, ...]] = field(default_factory=dict)
    guards: tuple[Guard, ...] = ()

    def guards_for(self, tool: str) -> tuple[Guard, ...]:
        return tuple(guard for guard in self.guards if tool in guard.tools)


def autonomy_problems(rules: Any) -> list[str]:
    if not isinstance(rules, list):
        return ["autonomy must be a list of rules"]
    problems = []
    for index, rule in enumerate(rules):
        try:
            AutonomyRule.model_validate(rule)
        except PydanticError as exc:
            problems.append(_first_problem(f"rule {index + 1}", exc))
    return problems


def _first_problem(label: str, exc: PydanticError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(whole)"
    return f"{label}: {where}: {first['msg']}"


def destination_problems(value: Any) -> list[str]:
    """What is wrong with a policy's `destinations` ([] when nothing)."""
    from runs.tools.base import tool_names

    if not isinstance(value, dict):
        return ['destinations must be an object: {"tool": ["pattern", ...]}']
    known = set(tool_names())
    problems = []
    for tool, patterns in value.items():
        if tool not in known:
            problems.append(f"{tool}: no such tool")
        elif not isinstance(patterns, list):
            problems.append(f'{tool}: a list of destinations, e.g. ["@acme.com"]')
        else:
            problems += [f"{tool}: {p}" for p in map(dest.pattern_problem, patterns) if p]
    return problems


def guard_problems(value: Any) -> list[str]:
    """What is wrong with a policy's `guards` ([] when nothing)."""
    from runs.tools.base import tool_names

    if not isinstance(value, list):
        return ["guards must be a list"]
    known = set(tool_names())
    problems = []
    for index, raw in enumerate(value):
        try:
            guard = Guard.model_validate(raw)
        except PydanticError as exc:
            problems.append(_first_problem(f"guard {index + 1}", exc))
            continue
        unknown = sorted(set(guard.tools) - known)
        if unknown:
            problems.append(f"guard {index + 1}: no such tool: {', '.join(unknown)}")
    return problems


def credit_problems(value: Any) -> list[str]:
    """What is wrong with a policy's `max_credits` ([] when nothing): an
    object of vendor -> whole credits, each vendor one whose credits the
    price table prices (settings.BOSUN_CREDIT_PRICES), so a misspelt vendor
    cannot leave the real one uncapped."""
    if not isinstance(value, dict):
        return ['max_credits must be an object: {"vendor": credits, ...}']
    known = set(settings.BOSUN_CREDIT_PRICES)
    problems = []
    for vendor, cap in value.items():
        if vendor not in known:
            listed = ", ".join(sorted(known)) or "none"
            problems.append(f"{vendor}: no vendor of that name has a credit price ({listed})")
        elif not isinstance(cap, int) or isinstance(cap, bool) or cap < 0:
            problems.append(f"{vendor}: a whole number of credits, 0 or more")
    return problems


def _next_number(versions) -> int:
    return (versions.aggregate(top=Max("number"))["top"] or 0) + 1


def save_role(*, role: AgentRole, by: str = "", actor: str = "system") -> AgentRoleVersion:
    """Save the role and freeze the result as its next version; audited as
    `role.saved` (with what changed) in the same transaction."""
    from runs.tools.base import tool_names

    unknown = sorted(set(role.allowed_tools) - set(tool_names()))
    if unknown:
        raise ValidationError({"allowed_tools": f"no such tool: {', '.join(unknown)}"})
    return _save_versioned(role, AgentRoleVersion, "role", by, actor)


def save_policy(*, policy: Policy, by: str = "", actor: str = "system") -> PolicyVersion:
    """Save the policy and freeze the result as its next version; audited
    as `policy.saved` (with what changed) in the same transaction."""
    problems = {
        "autonomy": autonomy_problems(policy.autonomy),
        "destinations": destination_problems(policy.destinations),
        "guards": guard_problems(policy.guards),
        "max_credits": credit_problems(policy.max_credits),
    }
    if any(problems.values()):
        raise ValidationError({field: found for field, found in problems.items() if found})
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
        role_version = workflow.role.versions.order_by("-number").first() or save_role(
            role=workflow.role, by="bosun"
        )
    if workflow.policy_id:
        policy_version = workflow.policy.versions.order_by("-number").first() or save_policy(
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
    credits: dict[str, int] = data.pop("max_credits", None) or {}
    autonomy: list[Any] = []
    allowlists: dict[str, list[str]] = {}
    guards: list[Any] = []
    redact = True
    if policy_version_id is not None:
        snapshot = PolicyVersion.objects.values_list("snapshot", flat=True).get(
            pk=policy_version_id
        )
        data = {k: snapshot[k] for k in data}
        autonomy = snapshot["autonomy"]
        # Versions saved before allowlists and guards existed have neither:
        # they allow no argument-named destination.
        allowlists = snapshot.get("destinations") or {}
        guards = snapshot.get("guards") or []
        # Versions saved before credit caps cap no vendor's credits.
        credits = snapshot.get("max_credits") or {}
        redact = snapshot["redact_prompts"]
    budget = Budget(
        max_steps=int(data["max_steps"]),
        max_llm_calls=int(data["max_llm_calls"]),
        max_tool_calls=int(data["max_tool_calls"]),
        max_cost_usd=Decimal(str(data["max_cost_usd"])),
        max_wall_s=float(data["max_wall_s"]),
        max_credits={vendor: int(cap) for vendor, cap in credits.items()},
    )
    rules = tuple(AutonomyRule.model_validate(rule) for rule in autonomy)
    return Rules(
        allowed,
        budget,
        rules,
        redact,
        destinations={tool: tuple(p.lower() for p in found) for tool, found in allowlists.items()},
        guards=tuple(Guard.model_validate(guard) for guard in guards),
    )
