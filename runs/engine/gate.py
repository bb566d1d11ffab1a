"""The one way a tool is called.

`call_tool` applies, in order: the role (least privilege), the arguments'
schema, the policy's destination allowlist (every address or URL the
arguments name, whoever wrote them), the autonomy rules and the run's taint
(an approval binds the exact arguments and is consumed once), the budget
(with the call's price, known before it is made: credit caps and the USD cap
refuse a call that would go over them), the circuit breakers of the tool's limit keys, the concurrency caps and rate limits, the kill switches, the ledger, and
last, right before the call, the policy's knowledge guards. A free read (no
side effect, no price) keeps no ledger row: the switches it obeys are those
the worker read as the step started, and it costs the step no round trip.
Every path that calls a tool (a tool step, a model asking for a tool, a test calling it
directly) comes through here, so none of these can be skipped.

Taint is provenance, not phrasing: a run that has read content from an
untrusted source (see `runs.engine.checks.taint`) needs a person's approval
for every write or egress call, unless an `auto` autonomy rule trusts the
tool for every destination of the call. What the text says only changes
what the reviewer is told.

What it raises instead of calling:
- `Refused`: the call may not happen (not in the role, invalid arguments,
  a destination not allowed, blocked, approval rejected, a knowledge guard
  active). Recorded on the step; never retried.
- `NeedsApproval`: a reviewer must approve these exact arguments first.
- `NeedsReconciliation`: an unsafe write may or may not have happened (the
  worker died mid-call); a person must say which.
- `Paused`: a kill switch is engaged. `Throttled`: a limit is full.
- `BreakerOpen`: the circuit breaker of one of the tool's limit keys is
  open (runs.engine.breakers): the vendor is down, the call is not made.
- `AnswerPending`: another run is buying the shared answer this read needs.

A read whose answer is shared (`Tool.answer_key`, runs.engine.answers) is
answered from a live answer without any call; a miss claims the purchase
and asks the vendor under the answer's request key.

A sandbox run (`Run.mode` other than live: an experiment, a shadow, a dry
run) passes the role, the arguments, the destinations, a block and the
knowledge guards as a live run would, then never reaches a vendor with a
write or egress call: the call is recorded `stubbed` (its exact arguments
and the price it would have cost) and answered with the tool's stub
(`Tool.stub`); no person is asked to approve it, since nothing happens. A
read is answered from the recorded run (`Caller.tools_from`) when that run
made the same call successfully (`replayed`, no vendor, no cost); else a
free read runs as it would live and a paid one is stubbed. Shared answers
are neither read nor bought by a sandbox run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone
from pydantic import BaseModel, ValidationError

from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus
from knowledge.memory import event_summary, guarding_events
from lib import destinations as dest
from lib.conditions import evaluate
from policies.models import AutonomyMode
from policies.services import Rules
from runs.engine import answers, breakers, limits, store, switches, tracing
from runs.engine.doorbell import ring
from runs.engine.errors import (
    AnswerPending,
    BreakerOpen,
    LeaseLost,
    NeedsApproval,
    NeedsReconciliation,
    Paused,
    Refused,
    Throttled,
    limit_wait_reason,
)
from runs.models import (
    StepCacheEntry,
    StepKind,
    StepRun,
    StepRunStatus,
    ToolCallRecord,
    ToolCallStatus,
    WorkflowVersion,
)
from runs.tools.base import FREE, Tool, ToolCall, ToolCost, ToolError, UnknownTool, get_tool

log = logging.getLogger("bosun.engine")
# What bosun_open_tool_call returns when the caller's lease is gone.
LEASE_GONE = -1

__all__ = [
    "PriorApproval",
    "Caller",
    "Called",
    "NeedsApproval",
    "NeedsReconciliation",
    "Paused",
    "Refused",
    "Throttled",
    "call_tool",
]


@dataclass(frozen=True)
class Caller:
    """Who is calling: the run, its step, and the rules it is bound to."""

    run_id: int
    seq: int
    step_key: str
    attempt: int
    timeout_s: float
    workflow: str
    rules: Rules
    tainted: bool = False
    # Some untrusted content looked like an injection: no destination is
    # trusted then (the phrase signals can only add a person, never remove one).
    suspicious: bool = False
    # The worker's fencing token for the run (`RunState.fence`). With it, a
    # call starts only while the run is still this worker's and its lease
    # has not run out, and the call's outcome is recorded only if no other
    # worker has taken the run over since. None: no run lease to check (a
    # caller outside a worker).
    fence: int | None = None
    # Tools a kill switch holds, as the worker last read the switches (with
    # the claim or the last checkpoint, the moment this step started). A
    # free read, which has no ledger row, is held by these; every other
    # call reads the switches again with its ledger row. None: read them now.
    tools_off: frozenset[str] | None = None
    lease_lost: threading.Event | None = None  # passed on to the tool (ToolCall)
    # Given, a call the vendor answered leaves its ledger row to the step's
    # checkpoint, which closes it in its own statement (record id, result);
    # without, the gate closes the row itself.
    defer_close: Callable[[int, dict[str, Any]], None] | None = None
    # Called before the tool runs, with the call's known price (the price
    # table, or the tool's own `price`): raises if the run's budget is spent
    # or the call would take it over a cap.
    before_call: Callable[[ToolCost], None] | None = None
    # A person's decision at an earlier approval step of this run that the
    # step names (`approved_by`): it approves this call when the call's
    # arguments are exactly fields of the draft that person approved.
    prior_approval: PriorApproval | None = None
    # The run's mode (runs.models.RunMode); any but "live" is a sandbox.
    mode: str = "live"
    # A sandbox run's reads are answered from this recorded run's calls.
    tools_from: int | None = None

    @property
    def sandbox(self) -> bool:
        return self.mode != "live"


@dataclass(frozen=True)
class PriorApproval:
    approval_id: int
    draft: Any


@dataclass(frozen=True)
class Called:
    args: dict[str, Any]
    result: dict[str, Any]
    record_id: int  # 0 for a shared answer: no call, no ledger row
    from_ledger: bool  # the recorded result of an earlier attempt; no new call
    # What the answer cost at the vendor (`Tool.cost`); with `from_ledger`,
    # what the recorded answer cost when it was bought; with `shared`, what
    # it would have cost (a saving: another call paid for it).
    cost: ToolCost = FREE
    shared: bool = False  # an answer another call bought (runs.engine.answers)


def args_hash(args: dict[str, Any]) -> str:
    canonical = json.dumps(args, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def call_tool(name: str, raw_args: Any, caller: Caller) -> Called:
    """Call tool `name` through every check above, in a trace span (a no-op
    unless tracing is configured)."""
    with tracing.tool_call(name, caller) as span:
        called = _call_tool(name, raw_args, caller)
        span.called(from_ledger=called.from_ledger)
    return called


def _call_tool(name: str, raw_args: Any, caller: Caller) -> Called:
    tool = _tool(name, caller)
    try:
        args = tool.Args.model_validate(raw_args)
    except ValidationError as exc:
        detail = f"arguments for {name} are invalid: {_brief(exc)}"
        raise Refused("invalid_arguments", detail) from None
    args_json = args.model_dump(mode="json")
    key = f"bosun-run-{caller.run_id}-seq-{caller.seq}"
    destinations = tool.destinations(args)
    _check_destinations(tool, destinations, caller)
    needs = _approval_reason(tool, args_json, destinations, caller)
    if caller.sandbox:
        sandboxed = _sandboxed(tool, args, args_json, destinations, key, needs, caller)
        if sandboxed is not None:
            return sandboxed
    if needs and not _approved_before(tool, args_json, key, caller):
        _consume_approval(tool, args_json, args_hash(args_json), needs, key, caller)
    hold_s = caller.timeout_s + settings.BOSUN_LEASE_MARGIN_S
    # A sandbox run neither reads nor buys a shared answer.
    shared = None if caller.sandbox else _shared_answer(tool, args, key, hold_s)
    if isinstance(shared, dict):
        cost = tool.cost(args, shared)
        return Called(args_json, shared, 0, from_ledger=True, cost=cost, shared=True)
    if caller.before_call is not None:
        caller.before_call(tool.price(args))
    keys = tool.keys_for(args)
    holder = f"{key}:{caller.attempt}"
    # The vendor's circuit breakers, before its limits (a held call takes
    # no seat and no rate grant) and before the ledger (a held call leaves
    # no row to reconcile): an open one holds the run, no attempt spent.
    try:
        guard = breakers.admit(keys, holder=holder, hold_s=hold_s)
    except BreakerOpen:
        if shared is not None:
            answers.release(tool.name, shared.key, buyer=key)
        raise
    try:
        seats = limits.acquire(keys=keys, holder=holder, hold_s=hold_s)
    except BaseException:
        guard.abandon()
        raise
    try:
        if _ledgerless(tool, shared):
            return _read_freely(tool, args, args_json, destinations, key, caller, guard)
        record_id, recorded = _open(tool, args_json, args_hash(args_json), key, caller)
        if recorded is _UNKNOWN:
            raise NeedsReconciliation(record_id)
        if recorded is not None:
            _keep_answer(tool, shared, key, recorded, caller)
            return Called(args_json, recorded, record_id, True, tool.cost(args, recorded))
        _check_guards(tool, destinations, record_id, caller)
        request_key = shared.claim.request_key if shared is not None else key
        try:
            # A shared answer's purchase closes its row at once: a buyer
            # that dies before its checkpoint finds the answer and the row
            # settled, under the answer's request key, not the ledger's.
            defer = caller.defer_close if shared is None else None
            with guard.call():
                result = _invoke(
                    tool, args, record_id, key, caller, request_key=request_key, defer_close=defer
                )
        except (ToolError, BreakerOpen) as exc:
            # (A failed probe's BreakerOpen carries the tool's error as its cause.)
            failure = exc.__cause__ if isinstance(exc, BreakerOpen) else exc
            if shared is not None and not getattr(failure, "outcome_unknown", False):
                answers.release(tool.name, shared.key, buyer=key)
            raise
        _keep_answer(tool, shared, key, result, caller)
        return Called(args_json, result, record_id, False, tool.cost(args, result))
    finally:
        guard.abandon()  # no call was made (a wait, a refusal): a probe is given back
        for freed in limits.release(seats):
            _wake_one(freed)


def _sandboxed(
    tool: Tool,
    args: BaseModel,
    args_json: dict[str, Any],
    destinations: tuple[str, ...],
    key: str,
    needs: str,
    caller: Caller,
) -> Called | None:
    """A sandbox run's call: answered from the recorded run, or stubbed;
    None for a free read that may run as it would live (no egress, no
    approval needed). The knowledge guards hold as they would live: a
    held call is refused, not stubbed."""
    recorded = None
    if not tool.writes and caller.tools_from is not None:
        recorded = recorded_result(caller.tools_from, tool.name, args_json)
    if recorded is None and not (tool.writes or tool.egress or tool.paid or needs):
        return None
    _check_guards(tool, destinations, None, caller)
    if recorded is not None:
        return _stand_in(tool, args, args_json, key, caller, ToolCallStatus.REPLAYED, recorded)
    stub = tool.stub(args)
    result = tool.Result.model_validate(stub.model_dump(mode="json")).model_dump(mode="json")
    return _stand_in(tool, args, args_json, key, caller, ToolCallStatus.STUBBED, result)


def _stand_in(
    tool: Tool,
    args: BaseModel,
    args_json: dict[str, Any],
    key: str,
    caller: Caller,
    status: str,
    result: dict[str, Any],
) -> Called:
    """Record the call that was not made (its ledger key, so an attempt
    after a crash finds it and answers the same) with what it would have
    cost live: the price for a stub, the recorded answer's cost for a
    replay. Nothing is charged to the run."""
    would = tool.price(args) if status == ToolCallStatus.STUBBED else tool.cost(args, result)
    now = timezone.now()
    try:
        with transaction.atomic():
            record = ToolCallRecord.objects.create(
                run_id=caller.run_id,
                seq=caller.seq,
                step_key=caller.step_key,
                tool=tool.name,
                side_effect=tool.side_effect,
                idempotency_key=key,
                args=args_json,
                args_hash=args_hash(args_json),
                status=status,
                calls=0,
                result=result,
                started_at=now,
                finished_at=now,
                would_cost_usd=would.usd,
                would_credits=would.credits,
                would_vendor=would.vendor,
            )
    except IntegrityError:
        # An earlier attempt of this step recorded it: answer the same.
        record = ToolCallRecord.objects.get(idempotency_key=key)
        return Called(record.args, record.result or {}, record.pk, from_ledger=True)
    return Called(args_json, result, record.pk, from_ledger=True)


def recorded_result(
    run_id: int, tool: str, args: dict[str, Any], *, _depth: int = 0
) -> dict[str, Any] | None:
    """The answer run `run_id` got from a successful call of `tool` with
    exactly these arguments, or None: its ledger (writes, paid reads), else
    its tool steps' records (a free read keeps no ledger row; its step
    records the arguments and the answer), else, for a step answered from
    the step cache, the call of the run that filled the cache entry."""
    answered = (ToolCallStatus.SUCCEEDED, ToolCallStatus.RECONCILED)
    found = (
        ToolCallRecord.objects.filter(
            run_id=run_id, tool=tool, args_hash=args_hash(args), status__in=answered
        )
        .exclude(result=None)
        .order_by("seq")
        .values_list("result", flat=True)
        .first()
    )
    if isinstance(found, dict):
        return found
    definition = (
        WorkflowVersion.objects.filter(runs__pk=run_id).values_list("definition", flat=True).first()
    )
    steps = (definition or {}).get("steps", {})
    rows = StepRun.objects.filter(
        run_id=run_id, kind=StepKind.TOOL, status=StepRunStatus.SUCCEEDED
    ).order_by("seq")
    cached = []
    for step_key, step_input, output, hit in rows.values_list(
        "step_key", "input", "output", "cache_hit"
    ):
        config = (steps.get(step_key) or {}).get("config") or {}
        if config.get("tool") != tool or not isinstance(output, dict):
            continue
        if step_input == args:
            return output
        if hit and isinstance(step_input, dict) and "cache_key" in step_input:
            cached.append(step_input["cache_key"])
    if cached and _depth < 3:
        # A step answered from the step cache recorded the cache key, not
        # the arguments: the run that filled the entry made the call.
        sources = StepCacheEntry.objects.filter(key__in=cached).values_list(
            "source_run_id", flat=True
        )
        for source in sources:
            if source is not None and source != run_id:
                found = recorded_result(source, tool, args, _depth=_depth + 1)
                if found is not None:
                    return found
    return None


def _ledgerless(tool: Tool, shared: _Purchase | None) -> bool:
    """A free read keeps no ledger row: calling it again after a crash
    changes nothing and costs nothing, and the step's record holds its
    arguments and answer. So it costs the step no round trip here."""
    return tool.side_effect == "read" and not tool.paid and shared is None


def _read_freely(
    tool: Tool,
    args: BaseModel,
    args_json: dict[str, Any],
    destinations: tuple[str, ...],
    key: str,
    caller: Caller,
    guard: breakers.Guard,
) -> Called:
    """Call a free read: held by a kill switch like any call, checked
    against the knowledge guards, not recorded in the ledger."""
    if caller.tools_off is None or caller.fence is None:
        switches.refuse_if_switched_off(tool=tool.name, workflow=caller.workflow)
    elif tool.name in caller.tools_off:
        raise Paused(f"kill switch on {tool.name}")
    _check_guards(tool, destinations, None, caller)
    call = _tool_call(caller, key)
    with guard.call():
        result = tool.Result.model_validate(tool.run(args, call)).model_dump(mode="json")
    return Called(args_json, result, 0, from_ledger=False, cost=tool.cost(args, result))


@dataclass(frozen=True)
class _Purchase:
    """This call buys a shared answer under `claim`."""

    key: str
    ttl_s: int
    claim: answers.Claim


def _shared_answer(
    tool: Tool, args: BaseModel, buyer: str, hold_s: float
) -> dict[str, Any] | _Purchase | None:
    """For a read whose answer is shared (runs.engine.answers): the answer
    when one is live, else the claim to buy it (AnswerPending while another
    run holds it). None for every other call."""
    if tool.writes:
        return None
    key = tool.answer_key(args)
    if key is None:
        return None
    ttl_s = answers.reuse_s(tool.name, tool.answer_ttl_s)
    if ttl_s <= 0:
        return None
    found = answers.lookup(tool.name, key)
    if found is not None and found.buyer != buyer:
        return found.result
    if found is not None:
        # This call bought it in an earlier attempt whose checkpoint was
        # lost: the ledger answers, and books the charge that was not.
        return None
    claim = answers.claim(tool.name, key, buyer=buyer, hold_s=hold_s)
    if claim is None:
        raise AnswerPending(tool.name, key, wait_s=min(hold_s, 2.0))
    return _Purchase(key, ttl_s, claim)


def _keep_answer(
    tool: Tool, purchase: _Purchase | None, buyer: str, result: dict[str, Any], caller: Caller
) -> None:
    if purchase is not None:
        answers.fill(
            tool.name,
            purchase.key,
            buyer=buyer,
            result=result,
            ttl_s=purchase.ttl_s,
            run_id=caller.run_id,
        )


def _tool(name: str, caller: Caller) -> Tool:
    try:
        tool = get_tool(name)
    except UnknownTool as exc:
        raise Refused("unknown_tool", str(exc)) from None
    if name not in caller.rules.allowed_tools:
        raise Refused("not_in_role", f"the run's role may not call {name}")
    return tool


def _check_destinations(tool: Tool, destinations: tuple[str, ...], caller: Caller) -> None:
    """Refuse a call naming a destination the policy does not list for the
    tool. Arguments are checked as they are, whoever wrote them: a model's
    output that became a recipient is held to the same list."""
    if not destinations:
        return
    allowed = caller.rules.destinations.get(tool.name, ())
    refused = [d for d in destinations if not dest.allowed(d, allowed)]
    if refused:
        where = "lists none" if not allowed else f"allows {', '.join(allowed)}"
        raise Refused(
            "destination_not_allowed",
            f"{tool.name} may not send to {', '.join(refused)}: the policy {where}",
            {"destinations": refused},
        )


def _approval_reason(
    tool: Tool, args: dict[str, Any], destinations: tuple[str, ...], caller: Caller
) -> str:
    """Why this call needs a person's approval ('' when it does not)."""
    trusted: list[str] = []
    for rule in caller.rules.autonomy:
        if rule.tool != tool.name:
            continue
        if rule.when is not None and not evaluate(rule.when, {"args": args}):
            continue
        if rule.mode == AutonomyMode.BLOCK:
            raise Refused("blocked", f"the policy blocks {tool.name}")
        if rule.mode == AutonomyMode.APPROVE:
            return rule.reason_code or "policy_requires_approval"
        trusted = rule.trusted_destinations
        break  # auto
    if not caller.tainted or not (tool.writes or tool.egress):
        return ""
    if caller.suspicious:
        return "injection_suspected"
    return "" if _trusted(destinations, trusted) else "tainted_run"


def _trusted(destinations: tuple[str, ...], patterns: list[str]) -> bool:
    """Does a rule trusting `patterns` cover every destination of the call?
    A tool with a fixed destination names none: any pattern trusts it."""
    if not patterns:
        return False
    return all(dest.allowed(d, patterns) for d in destinations)


def _approved_before(tool: Tool, args: dict[str, Any], key: str, caller: Caller) -> bool:
    """Did a person approve exactly these arguments at the approval step
    the tool step names? Each argument must equal the field of the same
    name in the draft as the person approved it (edits included): the
    reviewer saw the recipient, the subject and the body that are sent. A
    decision the policy took on a timeout approves nothing here. Consumed by
    this call (its ledger key) and no other."""
    prior = caller.prior_approval
    if prior is None or not isinstance(prior.draft, dict):
        return False
    if not set(args) <= set(prior.draft):
        return False
    try:
        shown = tool.Args.model_validate({name: prior.draft[name] for name in args})
    except ValidationError:
        return False
    if shown.model_dump(mode="json") != args:
        return False
    consumed = (
        ApprovalRequest.objects.filter(
            pk=prior.approval_id, run_id=caller.run_id, status=ApprovalStatus.APPROVED
        )
        .exclude(decided_by_label="policy")
        .filter(Q(consumed_by="") | Q(consumed_by=key))
        .update(consumed_by=key, consumed_at=Now())
    )
    return bool(consumed)


def _check_guards(
    tool: Tool, destinations: tuple[str, ...], record_id: int | None, caller: Caller
) -> None:
    """Refuse the call while a knowledge event the policy names as a guard
    is active on an entity the call's destinations name. Checked here, at
    the moment of the call and after any approval: an account paused while
    its draft waited in review is not written to."""
    guards = caller.rules.guards_for(tool.name)
    if not guards or not destinations:
        return
    values = [d.partition(":")[2] for d in destinations]
    for guard in guards:
        events = guarding_events(
            entity_type=guard.entity_type, keys=values, event_types=[guard.event_type]
        )
        if not events:
            continue
        found = [_guard_summary(event) for event in events]
        first = found[0]
        why = f" ({first['reason']})" if first["reason"] else ""
        message = f"{tool.name} is held: {first['type']} on {first['entity']}{why}"
        if record_id is not None:
            _close(record_id, caller, status=ToolCallStatus.FAILED, error=message)
        raise Refused("guarded", message, {"events": found})


def _guard_summary(event: Any) -> dict[str, Any]:
    """The event as a knowledge step records it, and the entity it is on."""
    return {**event_summary(event), "entity": f"{event.entity.type}:{event.entity.key}"}


def _consume_approval(
    tool: Tool, args: dict[str, Any], digest: str, reason: str, key: str, caller: Caller
) -> None:
    """Pass only with an approval of exactly these arguments, consumed by
    this call (its ledger key) and no other."""
    request = ApprovalRequest.objects.filter(run_id=caller.run_id, seq=caller.seq).first()
    if request is None:
        try:
            with transaction.atomic():
                request = ApprovalRequest.objects.create(
                    run_id=caller.run_id,
                    seq=caller.seq,
                    step_key=caller.step_key,
                    kind=ApprovalKind.TOOL_CALL,
                    title=f"Call {tool.name}",
                    draft={"tool": tool.name, "args": args, "risk": tool.risk},
                    reason_code=reason,
                    args_hash=digest,
                )
        except IntegrityError:
            request = ApprovalRequest.objects.get(run_id=caller.run_id, seq=caller.seq)
    if request.status == ApprovalStatus.PENDING:
        raise NeedsApproval(request.pk, reason)
    if request.status != ApprovalStatus.APPROVED:
        why = request.decision_reason or request.status
        raise Refused("approval_rejected", f"{tool.name} was not approved: {why}")
    if request.kind != ApprovalKind.TOOL_CALL or request.args_hash != digest:
        raise Refused("approval_mismatch", "the approval was given for other arguments")
    consumed = (
        ApprovalRequest.objects.filter(
            pk=request.pk, status=ApprovalStatus.APPROVED, args_hash=digest
        )
        .filter(Q(consumed_by="") | Q(consumed_by=key))
        .update(consumed_by=key, consumed_at=Now())
    )
    if not consumed:
        raise Refused("approval_consumed", "the approval was already used by another call")


# `_open`'s answer for a call whose outcome only a person can settle.
_UNKNOWN: dict[str, Any] = {}


def _open(
    tool: Tool, args: dict[str, Any], digest: str, key: str, caller: Caller
) -> tuple[int, dict[str, Any] | None]:
    """Start the ledger row for this call, or find the one an earlier
    attempt left, in one transaction that holds the switchboard. Returns
    (record id, recorded result).

    The common case is one round trip on PostgreSQL (a function holding the
    switchboard and inserting the row, see runs/migrations/0007) and one
    IMMEDIATE transaction on SQLite.
    """
    if connection.vendor == "postgresql":
        record_id = _open_fast(tool, args, digest, key, caller)
        if record_id == LEASE_GONE:
            raise LeaseLost(caller.run_id)
        if record_id is not None:
            return record_id, None
    with transaction.atomic():
        switches.hold_switchboard()
        _hold_lease(caller)
        record_id = _insert_started(tool, args, digest, key, caller)
        if record_id is not None:
            return record_id, None
        record = ToolCallRecord.objects.select_for_update().filter(idempotency_key=key).first()
        if record is None:
            # A switch is the only other reason not to insert.
            switches.refuse_if_switched_off(tool=tool.name, workflow=caller.workflow)
            raise RuntimeError(f"ledger row {key} neither inserted nor found")
        if record.status == ToolCallStatus.SUCCEEDED or (
            record.status == ToolCallStatus.RECONCILED and record.result is not None
        ):
            return record.pk, record.result
        unknown = record.status in (ToolCallStatus.STARTED, ToolCallStatus.UNKNOWN)
        # A write_idempotent tool passes its key to a vendor that applies
        # it once, so it is asked again; a paid read only when its vendor
        # honours request keys too.
        paid_read = tool.paid and tool.side_effect == "read"
        blind = tool.side_effect == "write_unsafe" or (paid_read and not tool.vendor_dedups)
        if unknown and blind:
            # We cannot know whether the first call took effect (or was
            # charged), and the outside cannot dedupe it: a person decides.
            ToolCallRecord.objects.filter(pk=record.pk).update(status=ToolCallStatus.UNKNOWN)
            return record.pk, _UNKNOWN
        switches.refuse_if_switched_off(tool=tool.name, workflow=caller.workflow)
        # A clean failure, or a read or idempotent write whose outcome is
        # unknown: calling again with the same key is safe.
        ToolCallRecord.objects.filter(pk=record.pk).update(
            status=ToolCallStatus.STARTED, calls=F("calls") + 1, error=""
        )
    return record.pk, None


def _open_fast(
    tool: Tool, args: dict[str, Any], digest: str, key: str, caller: Caller
) -> int | None:
    params: list[Any] = [
        caller.run_id,
        caller.seq,
        caller.step_key,
        tool.name,
        tool.side_effect,
        key,
    ]
    params += [store.dump(args), digest, caller.workflow, caller.fence]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT bosun_open_tool_call(%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)", params
        )
        record_id: int | None = cursor.fetchone()[0]
        return record_id


def _hold_lease(caller: Caller) -> None:
    """Raise LeaseLost unless the run is still the caller's: same fence,
    running, lease not run out. On PostgreSQL the row is held FOR SHARE, so
    no takeover commits before this transaction does."""
    if caller.fence is None:
        return
    lock = " FOR SHARE" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {store.RUN} WHERE id = %s AND fence = %s AND status = 'running'"
            f" AND lease_expires_at > {store.now_sql()}{lock}",
            [caller.run_id, caller.fence],
        )
        if cursor.fetchone() is None:
            raise LeaseLost(caller.run_id)


def _insert_started(
    tool: Tool, args: dict[str, Any], digest: str, key: str, caller: Caller
) -> int | None:
    """Insert the `started` row unless a switch is engaged or the key has a
    row already (then None). Runs after the switchboard lock, so its
    snapshot sees every switch change that committed before."""
    sql = (
        "INSERT INTO runs_toolcallrecord (run_id, seq, step_key, tool, side_effect,"
        " idempotency_key, args, args_hash, status, calls, error, started_at, reconciled_by,"
        f" reconcile_note) SELECT %s, %s, %s, %s, %s, %s, {store.json_param()}, %s, 'started', 1,"
        f" '', {store.now_sql()}, '', '' WHERE NOT EXISTS ({switches.ENGAGED_SQL})"
        " ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
    )
    params: list[Any] = [
        caller.run_id,
        caller.seq,
        caller.step_key,
        tool.name,
        tool.side_effect,
        key,
    ]
    params += [store.dump(args), digest, caller.workflow, tool.name]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def _tool_call(caller: Caller, idempotency_key: str) -> ToolCall:
    """What the tool is told of the call: who makes it, its key, its time."""
    return ToolCall(
        run_id=caller.run_id,
        step_key=caller.step_key,
        seq=caller.seq,
        attempt=caller.attempt,
        idempotency_key=idempotency_key,
        timeout_s=caller.timeout_s,
        lease_lost=caller.lease_lost,
    )


def _invoke(
    tool: Tool,
    args: BaseModel,
    record_id: int,
    key: str,
    caller: Caller,
    *,
    request_key: str,
    defer_close: Callable[[int, dict[str, Any]], None] | None,
) -> dict[str, Any]:
    call = _tool_call(caller, request_key)
    try:
        result = tool.Result.model_validate(tool.run(args, call)).model_dump(mode="json")
    except ToolError as exc:
        status = ToolCallStatus.UNKNOWN if exc.outcome_unknown else ToolCallStatus.FAILED
        _close(record_id, caller, status=status, error=str(exc))
        raise
    except BaseException as exc:
        # A crash inside the tool: a free read failed; a write may have
        # happened, and a paid read may have been charged.
        status = ToolCallStatus.UNKNOWN if tool.writes or tool.paid else ToolCallStatus.FAILED
        _close(record_id, caller, status=status, error=f"{type(exc).__name__}: {exc}")
        raise
    if defer_close is not None:
        defer_close(record_id, result)
    elif not _close(record_id, caller, status=ToolCallStatus.SUCCEEDED, result=result):
        raise LeaseLost(caller.run_id)
    return result


def _close(
    record_id: int,
    caller: Caller,
    *,
    status: str,
    result: dict[str, Any] | None = None,
    error: str = "",
) -> bool:
    """Record the call's outcome, fenced: a worker whose run was taken over
    while it was inside the call writes nothing (the new owner has the row
    now, and may already have settled it). False when it wrote nothing."""
    sql = (
        f"UPDATE runs_toolcallrecord SET status = %s, result = {store.json_param()},"
        f" error = %s, finished_at = {store.now_sql()} WHERE id = %s"
    )
    params: list[Any] = [status, store.dump(result), error[:4000], record_id]
    if caller.fence is not None:
        sql += f" AND EXISTS (SELECT 1 FROM {store.RUN} WHERE id = %s AND fence = %s)"
        params += [caller.run_id, caller.fence]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        closed = bool(cursor.rowcount == 1)
    if not closed:
        log.warning(
            "run %s: ledger row %s: the call ended (%s) after the run was taken over; not recorded",
            caller.run_id,
            record_id,
            status,
        )
    return closed


def _wake_one(key: str) -> None:
    """A seat came free: let the longest-waiting run for it try now."""
    reason = limit_wait_reason(key)
    lock = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    now = store.now_sql()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {store.RUN} SET not_before = {now}, ring_at = {store.later_sql()}"
            f" WHERE id = (SELECT id FROM {store.RUN} WHERE status = 'waiting'"
            f" AND wait_reason = %s ORDER BY not_before LIMIT 1{lock}) RETURNING id",
            [store.REDELIVER_AFTER_S, reason],
        )
        row = cursor.fetchone()
        if row is not None:
            ring(row[0])


def _brief(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
