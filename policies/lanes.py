"""Autonomy lanes earned from evidence: propose `approve` → `auto` after a
streak of approvals nobody had to change, and `auto` → `approve` when the
weekly sample review keeps flagging what the lane did.

A lane is one tool under one policy. Its evidence:

* Under `approve`: the human decisions on its calls, newest first. A
  decision is a tool-call approval request for the tool, or a draft review
  that an `approval` step put in front of a person for a tool step calling
  the tool (the step names it in `approved_by`: the reviewer approved what
  the call sends). Decided by the policy (an SLA timeout) is no evidence;
  nor is a request made only because the run had read untrusted content
  (`tainted_run`, `injection_suspected`): moving the lane does not lift
  those, so they say nothing about it. When the newest
  `BOSUN_LANE_STREAK` decisions were all approvals as they stood (no edit,
  no rejection), an `auto` lane is proposed.
* Under `auto`: nobody decides the calls any more, so no approval says
  anything. The weekly sample review does: a random draw of finished runs,
  each judged by a person. Of the sampled runs that made a call of the
  tool under an `auto` rule, the share flagged is an unbiased estimate of
  how often such runs go wrong; above `BOSUN_LANE_BACK_REJECT_RATE`, once
  `BOSUN_LANE_BACK_MIN_REVIEWS` were judged, a return to `approve` is
  proposed. A flag may concern another step of the run: the estimate errs
  towards approval, the safe side.

A proposal spends the evidence up to its creation: after it is accepted
or dismissed, a new one needs a new streak (or new verdicts). Accepting
saves the policy as a new version (`save_policy`, audited as
`policy.saved`) and audits `lane.accepted`; runs started from then on bind
that version, runs already going keep theirs.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q, QuerySet
from django.db.models.functions import Now

from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, SampleItem
from lib.errors import InvalidState, NotFound
from policies import audit
from policies.models import (
    AutonomyMode,
    LaneDirection,
    LaneProposal,
    LaneProposalStatus,
    Policy,
    PolicyVersion,
)
from policies.services import save_policy
from runs.models import RunMode, ToolCallRecord, ToolCallStatus, Workflow, WorkflowVersion

# Requests the gate makes because the run read untrusted content, whatever
# the lane: no evidence about the lane.
TAINT_REASONS = ("tainted_run", "injection_suspected")
HISTORY_SHOWN = 100


class LaneError(InvalidState):
    """A proposal that cannot be decided (as it stands)."""


@dataclass(frozen=True)
class Decision:
    approval_id: int
    run_id: int
    kind: str
    verdict: str  # "approved", "edited" or "rejected"
    code: str
    reason: str
    by: str
    at: datetime | None
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Lane:
    policy: Policy
    tool: str
    modes: tuple[str, ...]  # the modes its rules give, in order

    @property
    def under_approval(self) -> bool:
        return AutonomyMode.APPROVE in self.modes

    @property
    def has_auto(self) -> bool:
        return AutonomyMode.AUTO in self.modes


def lanes_of(policy: Policy) -> list[Lane]:
    """The tools the policy's rules put under `approve` or `auto`."""
    modes: dict[str, list[str]] = {}
    for rule in policy.autonomy or []:
        if rule.get("mode") in (AutonomyMode.APPROVE, AutonomyMode.AUTO):
            modes.setdefault(rule["tool"], []).append(rule["mode"])
    return [Lane(policy, tool, tuple(found)) for tool, found in sorted(modes.items())]


# --- evidence under `approve` ---------------------------------------------------


def decisions(policy: Policy, tool: str) -> QuerySet[ApprovalRequest]:
    """Human decisions on calls of `tool` in runs bound to the policy,
    newest first."""
    calls = Q(kind=ApprovalKind.TOOL_CALL, draft__tool=tool)
    for version_id, step_keys in _review_steps(policy, tool).items():
        calls |= Q(kind=ApprovalKind.DRAFT, run__version_id=version_id, step_key__in=step_keys)
    return (
        ApprovalRequest.objects.filter(
            calls,
            run__policy_version__policy=policy,
            run__mode=RunMode.LIVE,  # a sandbox run's approvals pass by themselves
            status__in=(ApprovalStatus.APPROVED, ApprovalStatus.REJECTED),
        )
        .exclude(decided_by_label="policy")
        .exclude(reason_code__in=TAINT_REASONS)
        .order_by("-decided_at", "-id")
    )


def _review_steps(policy: Policy, tool: str) -> dict[int, list[str]]:
    """Per workflow version of the policy's workflows, the approval steps
    that review what a step calling `tool` sends (its `approved_by`)."""
    versions = WorkflowVersion.objects.filter(
        workflow__in=Workflow.objects.filter(policy=policy)
    ).values_list("pk", "definition")
    found: dict[int, list[str]] = {}
    for version_id, definition in versions:
        for step in (definition.get("steps") or {}).values():
            config = step.get("config") or {}
            reviewed_by = config.get("approved_by")
            if step.get("kind") == "tool" and config.get("tool") == tool and reviewed_by:
                found.setdefault(version_id, []).append(reviewed_by)
    return found


def decision_of(request: ApprovalRequest) -> Decision:
    if request.status == ApprovalStatus.REJECTED:
        verdict = "rejected"
    else:
        verdict = "edited" if request.edited_draft is not None else "approved"
    draft = request.draft if isinstance(request.draft, dict) else {}
    args = draft.get("args") if request.kind == ApprovalKind.TOOL_CALL else draft
    return Decision(
        approval_id=request.pk,
        run_id=request.run_id,
        kind=request.kind,
        verdict=verdict,
        code=request.decision_code,
        reason=request.decision_reason,
        by=request.decided_by_label,
        at=request.decided_at,
        args=args if isinstance(args, dict) else {},
    )


@dataclass(frozen=True)
class ApprovalEvidence:
    decisions: list[Decision]  # newest first, up to HISTORY_SHOWN
    total: int
    approved: int
    edited: int
    rejected: int
    reasons: list[tuple[str, int]]  # rejection codes (or "no code"), most frequent first
    streak: int  # newest consecutive approvals as they stood, since the last proposal
    needed: int

    @property
    def edit_rate(self) -> float | None:
        decided = self.approved + self.edited
        return self.edited / decided if decided else None

    @property
    def reject_rate(self) -> float | None:
        return self.rejected / self.total if self.total else None

    def bounds(self) -> dict[str, float]:
        """For each numeric argument of the streak's calls, the largest
        value approved: a threshold an `auto` rule can be bounded by."""
        largest: dict[str, float] = {}
        for decision in self.decisions[: self.streak]:
            for name, value in decision.args.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    largest[name] = max(largest.get(name, value), value)
        return largest


def approval_evidence(policy: Policy, tool: str) -> ApprovalEvidence:
    found = decisions(policy, tool)
    approved = Q(status=ApprovalStatus.APPROVED)
    counts = found.order_by().aggregate(
        total=Count("pk"),
        approved=Count("pk", filter=approved & Q(edited_draft__isnull=True)),
        edited=Count("pk", filter=approved & Q(edited_draft__isnull=False)),
        rejected=Count("pk", filter=Q(status=ApprovalStatus.REJECTED)),
    )
    reasons = Counter(
        found.filter(status=ApprovalStatus.REJECTED).values_list("decision_code", flat=True)
    )
    needed = settings.BOSUN_LANE_STREAK
    return ApprovalEvidence(
        decisions=[decision_of(r) for r in found[:HISTORY_SHOWN]],
        total=counts["total"],
        approved=counts["approved"],
        edited=counts["edited"],
        rejected=counts["rejected"],
        reasons=[(code or "no code", n) for code, n in reasons.most_common()],
        streak=_streak(policy, tool, needed),
        needed=needed,
    )


def _spent_before(policy: Policy, tool: str, direction: str) -> datetime | None:
    """Evidence before the newest proposal of the lane was spent by it."""
    return LaneProposal.objects.filter(policy=policy, tool=tool, direction=direction).aggregate(
        at=Max("created_at")
    )["at"]


def _streak(policy: Policy, tool: str, needed: int) -> int:
    """How many of the newest decisions (up to `needed`, since the last
    proposal) approved the call as it stood, in a row."""
    found = decisions(policy, tool)
    spent = _spent_before(policy, tool, LaneDirection.TO_AUTO)
    if spent is not None:
        found = found.filter(decided_at__gt=spent)
    streak = 0
    for status, edited in found.values_list("status", "edited_draft")[:needed]:
        if status != ApprovalStatus.APPROVED or edited is not None:
            break
        streak += 1
    return streak


# --- evidence under `auto` ------------------------------------------------------


@dataclass(frozen=True)
class SampleEvidence:
    reviewed: int
    flagged: int
    upto: int  # the newest sample item counted
    min_reviews: int
    threshold: float

    @property
    def flag_rate(self) -> float | None:
        return self.flagged / self.reviewed if self.reviewed else None

    @property
    def proposes(self) -> bool:
        rate = self.flag_rate
        return self.reviewed >= self.min_reviews and rate is not None and rate > self.threshold


def sample_evidence(policy: Policy, tool: str) -> SampleEvidence:
    """Sample review verdicts on runs that called `tool` under an `auto`
    rule of the policy, judged since the lane's last proposal back."""
    auto_versions = [
        pk
        for pk, snapshot in PolicyVersion.objects.filter(policy=policy).values_list(
            "pk", "snapshot"
        )
        if _lets_auto(snapshot.get("autonomy") or [], tool)
    ]
    called = ToolCallRecord.objects.filter(
        tool=tool,
        status__in=(ToolCallStatus.SUCCEEDED, ToolCallStatus.RECONCILED),
        run__policy_version_id__in=auto_versions,
        run__mode=RunMode.LIVE,
    ).values("run_id")
    items = SampleItem.objects.filter(run_id__in=called, verdict__in=("ok", "flagged"))
    spent = _spent_before(policy, tool, LaneDirection.TO_APPROVE)
    if spent is not None:
        items = items.filter(reviewed_at__gt=spent)
    counts = Counter(items.values_list("verdict", flat=True))
    return SampleEvidence(
        reviewed=counts["ok"] + counts["flagged"],
        flagged=counts["flagged"],
        upto=items.aggregate(top=Max("pk"))["top"] or 0,
        min_reviews=settings.BOSUN_LANE_BACK_MIN_REVIEWS,
        threshold=settings.BOSUN_LANE_BACK_REJECT_RATE,
    )


def _lets_auto(rules: list[dict[str, Any]], tool: str) -> bool:
    """Does a rule let calls of the tool run on `auto` (a bounded one too)?"""
    return any(rule.get("tool") == tool and rule.get("mode") == "auto" for rule in rules)


# --- proposals ------------------------------------------------------------------


def refresh_proposals(*, policy: Policy | None = None) -> list[LaneProposal]:
    """Propose every lane move the evidence now supports (the proposals
    made). Safe to call any number of times at once: an open proposal of
    the same lane and direction is never made twice (a unique constraint)."""
    made = []
    policies = [policy] if policy is not None else list(Policy.objects.all())
    for current in policies:
        version = current.versions.order_by("-number").first()
        if version is None:
            continue
        for lane in lanes_of(current):
            if lane.under_approval:
                evidence = approval_evidence(current, lane.tool)
                if evidence.streak >= evidence.needed:
                    made += _propose(lane, LaneDirection.TO_AUTO, version, _summary(evidence))
            if lane.has_auto:
                sample = sample_evidence(current, lane.tool)
                if sample.proposes:
                    data = {
                        "reviewed": sample.reviewed,
                        "flagged": sample.flagged,
                        "flag_rate": sample.flag_rate,
                        "threshold": sample.threshold,
                        "upto": sample.upto,
                    }
                    made += _propose(lane, LaneDirection.TO_APPROVE, version, data)
    return made


def _summary(evidence: ApprovalEvidence) -> dict[str, Any]:
    streak = evidence.decisions[: evidence.streak]
    return {
        "streak": evidence.streak,
        "needed": evidence.needed,
        "total": evidence.total,
        "edited": evidence.edited,
        "rejected": evidence.rejected,
        "approvals": [d.approval_id for d in streak],
        "bounds": evidence.bounds(),
        "upto": max((d.approval_id for d in streak), default=0),
    }


def _propose(
    lane: Lane, direction: str, version: PolicyVersion, evidence: dict[str, Any]
) -> list[LaneProposal]:
    open_ = LaneProposal.objects.filter(
        policy=lane.policy, tool=lane.tool, direction=direction, status=LaneProposalStatus.OPEN
    )
    if open_.exists():
        return []
    try:
        with transaction.atomic():
            proposal = LaneProposal.objects.create(
                policy=lane.policy,
                tool=lane.tool,
                direction=direction,
                based_on=version,
                evidence=evidence,
                evidence_upto=evidence.get("upto", 0),
            )
    except IntegrityError:
        return []  # proposed concurrently
    return [proposal]


@dataclass(frozen=True)
class Bound:
    """Accept `auto` only while a numeric argument stays at or below a value."""

    arg: str
    max: float


def accept_proposal(
    *, proposal_id: int, actor: str, note: str = "", bound: Bound | None = None
) -> LaneProposal:
    """Save the policy as a new version with the lane moved, and audit it.
    With `bound` (to `auto` only), calls above it still need approval."""
    with transaction.atomic():
        proposal = _decide(proposal_id, LaneProposalStatus.ACCEPTED, actor, note)
        policy = Policy.objects.select_for_update().get(pk=proposal.policy_id)
        policy.autonomy = moved(policy.autonomy, proposal.tool, proposal.direction, bound)
        version = save_policy(policy=policy, by=actor, actor=actor)
        LaneProposal.objects.filter(pk=proposal.pk).update(new_version=version)
        audit.record(
            action="lane.accepted",
            actor=actor,
            target=proposal,
            data={
                "policy": policy.name,
                "tool": proposal.tool,
                "direction": proposal.direction,
                "version": version.number,
                "bound": {"arg": bound.arg, "max": bound.max} if bound else None,
                "note": note[:4000],
                "evidence": proposal.evidence,
            },
        )
    proposal.refresh_from_db()
    return proposal


def dismiss_proposal(*, proposal_id: int, actor: str, note: str = "") -> LaneProposal:
    """Leave the lane as it is; the evidence counted is spent."""
    with transaction.atomic():
        proposal = _decide(proposal_id, LaneProposalStatus.DISMISSED, actor, note)
        audit.record(
            action="lane.dismissed",
            actor=actor,
            target=proposal,
            data={"tool": proposal.tool, "direction": proposal.direction, "note": note[:4000]},
        )
    return proposal


def _decide(proposal_id: int, status: str, actor: str, note: str) -> LaneProposal:
    # Of two managers deciding at once, one changes the row.
    changed = LaneProposal.objects.filter(pk=proposal_id, status=LaneProposalStatus.OPEN).update(
        status=status, decided_at=Now(), decided_by=actor[:150], decision_note=note[:4000]
    )
    proposal = LaneProposal.objects.select_related("policy").filter(pk=proposal_id).first()
    if proposal is None:
        raise NotFound(f"no lane proposal {proposal_id}")
    if not changed:
        raise LaneError(f"the proposal was {proposal.status} already")
    return proposal


def moved(
    rules: list[dict[str, Any]], tool: str, direction: str, bound: Bound | None = None
) -> list[dict[str, Any]]:
    """The autonomy rules with the tool's lane moved. To `auto`: its first
    `approve` rule becomes `auto`, or with a bound an `auto` rule for the
    calls within it goes before it (the rest still need approval). To
    `approve`: its `auto` rules become `approve`."""
    rules = [dict(rule) for rule in rules]
    if direction == LaneDirection.TO_AUTO:
        index = next(
            (i for i, r in enumerate(rules) if r["tool"] == tool and r["mode"] == "approve"), None
        )
        if index is None:
            raise LaneError(f"the policy no longer asks approval for {tool}")
        rule = rules[index]
        if bound is None:
            rule["mode"] = AutonomyMode.AUTO.value
            rule.pop("reason_code", None)
            return rules
        within = {"path": f"args.{bound.arg}", "op": "<=", "value": bound.max}
        when = {"all": [rule["when"], within]} if rule.get("when") else within
        return [*rules[:index], {"tool": tool, "mode": "auto", "when": when}, *rules[index:]]
    if bound is not None:
        raise LaneError("a bound applies to a move to auto only")
    autos = [r for r in rules if r["tool"] == tool and r["mode"] == "auto"]
    if not autos:
        raise LaneError(f"the policy no longer lets {tool} run on auto")
    for rule in autos:
        rule["mode"] = AutonomyMode.APPROVE.value
        rule["reason_code"] = "lane_returned"
        rule.pop("trusted_destinations", None)
    return rules
