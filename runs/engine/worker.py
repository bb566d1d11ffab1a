"""`advance_run`: claim a run and execute its steps until it waits or ends.

Consecutive steps run inside one call; the queue is involved only when the
run waits (approval, a long backoff) or its time slice is used up. Every
step is checkpointed before the next starts, and no transaction is open
while a step runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import partial
from time import monotonic  # a name of this module: tests replace it to control time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.db.models.functions import Now

from approvals.models import ApprovalStatus
from policies.audit import record as audit_record
from policies.services import Rules, rules_for
from runs.engine import breakers, cache, checks, heartbeat, store, tracing
from runs.engine.definition import Definition, StepDef, load_definition
from runs.engine.doorbell import ring
from runs.engine.errors import BudgetExceeded, LeaseLost, StepError
from runs.engine.kinds import Outcome, StepContext
from runs.engine.timing import backoff_delay, step_room_s, time_limit
from runs.models import Run, RunStatus
from runs.tools.base import ToolCost

log = logging.getLogger("bosun.engine")

_worker: tuple[int, str] | None = None


def worker_id() -> str:
    """This process's worker id (host, pid, a random suffix), made in the
    process itself: the workers a cluster forks each get their own, not
    the parent's."""
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        _worker = (pid, f"{worker_prefix(pid)}{uuid.uuid4().hex[:8]}")
    return _worker[1]


def worker_prefix(pid: int) -> str:
    """How the worker ids of process `pid` on this host begin."""
    return f"{socket.gethostname()}:{pid}:"


# Exceptions outside StepError that are worth another attempt.
TRANSIENT = (TimeoutError, ConnectionError, DatabaseError)


class Advance(StrEnum):
    NOT_CLAIMED = "not_claimed"
    WAITING = "waiting"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    YIELDED = "yielded"
    LEASE_LOST = "lease_lost"


@dataclass
class _Walk:
    """The run as this worker sees it while it holds the lease."""

    state: store.RunState
    definition: Definition
    rules: Rules
    variables: dict[str, Any]
    visits: dict[str, int]
    retry_delay: float | None = None  # set when the last step scheduled a retry
    record: dict[str, Any] | None = None  # the current step's StepRun row, once made
    # Set when a heartbeat finds the run no longer this worker's.
    lease_lost: threading.Event = field(default_factory=threading.Event)


def advance_run(
    run_id: int,
    *,
    worker: str | None = None,
    lease_s: float | None = None,
    slice_s: float | None = None,
    task_s: float | None = None,
) -> Advance:
    """Execute the run from where it stands. Safe to call any number of times.

    `task_s`: how long the caller may take in all before it is stopped (the
    queue's task timeout). A step then starts only if its own time limit
    ends before that, with BOSUN_LEASE_MARGIN_S to spare for its checkpoint;
    otherwise the run goes back to the queue and the step starts a task of
    its own."""
    task = None
    if task_s is not None:
        room = step_room_s(task_s)
        task = _Task(end=monotonic() + room, room=room)
    worker = worker or worker_id()
    lease_s = lease_s if lease_s is not None else settings.BOSUN_LEASE_S
    slice_s = slice_s if slice_s is not None else settings.BOSUN_TASK_SLICE_S
    walk = _claim(run_id, worker=worker, lease_s=lease_s)
    if walk is None:
        return Advance.NOT_CLAIMED
    # One trace span per slice (a no-op unless tracing is configured).
    span_of_slice = tracing.run_span(
        run_id=run_id,
        workflow=walk.definition.workflow,
        version=walk.definition.version,
        trace_id=walk.state.trace_id,
    )
    with span_of_slice as span:
        result = _advance(walk, run_id, worker=worker, lease_s=lease_s, slice_s=slice_s, task=task)
        span.finish(result)
    return result


def _advance(
    walk: _Walk,
    run_id: int,
    *,
    worker: str,
    lease_s: float,
    slice_s: float,
    task: _Task | None,
) -> Advance:
    """Execute consecutive steps of a claimed run until it waits, ends, or
    its slice is used up.

    The heartbeat keeps the lease (and the sweeper's timer) while the worker
    holds the run; a checkpoint leaves both alone, so a step's update of the
    run changes no indexed column and PostgreSQL can make it HOT."""
    deadline = monotonic() + slice_s
    try:
        while True:
            with heartbeat.beating(run_id, walk.state.fence, lease_s) as lease_lost:
                walk.lease_lost = lease_lost
                result = _steps(walk, run_id, worker=worker, deadline=deadline, task=task)
            delay = walk.retry_delay
            if (
                result is Advance.WAITING
                and delay is not None
                and delay <= settings.BOSUN_INLINE_WAIT_S
            ):
                # A short backoff is slept here rather than paying a trip
                # through the sweeper; the lease is free meanwhile.
                reclaimed = _claim_after(run_id, delay, worker=worker, lease_s=lease_s)
                if reclaimed is None:
                    return Advance.NOT_CLAIMED
                walk = reclaimed
                continue
            return result
    except LeaseLost:
        log.warning("run %s: lease lost by %s; another worker owns it now", run_id, worker)
        return Advance.LEASE_LOST


@dataclass(slots=True)
class _Task:
    """The queue's time for this task: when its steps must be done by (on
    the monotonic clock), the longest step limit a task has room for, and
    whether a step has started in it yet."""

    end: float
    room: float
    stepped: bool = False


def _steps(
    walk: _Walk, run_id: int, *, worker: str, deadline: float, task: _Task | None
) -> Advance:
    """Steps of one claim, until the run waits, ends or yields its slice."""
    if walk.state.takeovers >= settings.BOSUN_MAX_TAKEOVERS:
        return _abandon(walk, worker=worker)
    while True:
        if task is not None:
            step = walk.definition.steps[walk.state.current_step]
            if step.timeout_s > task.room:  # published before the queue's timeout was cut
                return _too_long(walk, step, task.room, worker=worker)
            # The queue would stop it first. (A task's first step always
            # has the room: it starts at once.)
            if task.stepped and monotonic() + step.timeout_s > task.end:
                return _yield(walk, run_id)
            task.stepped = True
        result = _step(walk, worker=worker)
        if result is not None:
            return result
        if monotonic() >= deadline:
            return _yield(walk, run_id)


def _yield(walk: _Walk, run_id: int) -> Advance:
    """Hand the run back to the queue between two steps."""
    store.checkpoint(
        walk.state,
        store.Update()
        .value("status", "queued")
        .release()
        .after("ring_at", store.REDELIVER_AFTER_S),
        None,
    )
    ring(run_id)
    return Advance.YIELDED


def _too_long(walk: _Walk, step: StepDef, room: float, *, worker: str) -> Advance:
    """The step's time limit is longer than any task of the queue may take:
    started, its worker would be stopped before it, every time."""
    message = (
        f"its time limit ({step.timeout_s:g} s) is longer than a worker's task may take"
        f" ({room:g} s: BOSUN_TASK_TIMEOUT_S less BOSUN_LEASE_MARGIN_S); not started"
    )
    return _refuse_to_start(walk, step, message, "step_too_long", worker=worker)


def _abandon(walk: _Walk, *, worker: str) -> Advance:
    """The workers that took this step on were lost, again and again: dead-
    letter it instead of handing it to one more. A person decides whether
    to retry it (the dead-letter queue), which starts the count again."""
    state = walk.state
    message = (
        f"its worker was lost {state.takeovers} times in a row in this step (killed, out of"
        " memory, or stopped by the queue's task timeout); not executed again"
    )
    step = walk.definition.steps[state.current_step]
    return _refuse_to_start(walk, step, message, "worker_lost", worker=worker)


def _refuse_to_start(
    walk: _Walk, step: StepDef, message: str, error_type: str, *, worker: str
) -> Advance:
    """Fail the step without executing it, for good (it is dead-lettered)."""
    record = _record(walk, step, datetime.now(UTC), time.perf_counter(), worker)
    error = StepError(message, retryable=False, error_type=error_type)
    return _fail(walk, step, error, record, None)


def _claim(run_id: int, *, worker: str, lease_s: float) -> _Walk | None:
    state = store.claim(run_id, worker=worker, lease_s=lease_s, trace_id=tracing.new_trace_id())
    if state is None:
        return None
    definition = load_definition(state.version_id)
    steps: dict[str, Any] = {}
    flags: dict[str, list[str]] = {}
    visits: dict[str, int] = {}
    if state.seq > 1:
        for key, output, step_flags in store.load_outputs(run_id):
            steps[key] = output
            flags[key] = step_flags
            visits[key] = visits.get(key, 0) + 1
    variables = {"input": state.input, "steps": steps, "run": {"id": run_id}, "flags": flags}
    rules = rules_for(state.role_version_id, state.policy_version_id)
    return _Walk(state, definition, rules, variables, visits)


def _execute(walk: _Walk, step: StepDef, ctx: StepContext) -> Outcome:
    """Execute the step, or answer from the step cache when it may."""
    if not step.cache_ttl_s or ctx.replay_of is not None or ctx.sandbox:
        # A sandbox run neither reads nor fills the step cache.
        return step.kind.execute(step.config, ctx)
    key = cache.cache_key(
        workflow_id=walk.state.workflow_id,
        step_key=step.key,
        kind=step.kind.name,
        config=step.config.model_dump(mode="json"),
        material=step.kind.cache_material(step.config, ctx),
    )
    token = f"{ctx.run_id}:{ctx.seq}:{ctx.attempt}"
    hit = cache.lookup(key)
    claimed = False
    if hit is None:
        claim: dict[str, Any] = {
            "workflow_id": walk.state.workflow_id,
            "step_key": step.key,
            "token": token,
            "hold_s": step.timeout_s + settings.BOSUN_LEASE_MARGIN_S,
        }
        claimed = cache.claim(key, **claim)
        if not claimed:  # someone else is computing it: wait for their answer
            hit = cache.wait_for(key, timeout_s=step.timeout_s)
            claimed = hit is None and cache.claim(key, **claim)
    if hit is not None:
        outcome = Outcome(
            output=hit.output,
            edge=hit.edge,
            input={"cache_key": key},
            model_answered=hit.model,
            cache_hit=True,
            cost_saved_usd=hit.cost_usd,
        )
        # The model spend the entry recorded, and the vendor's price for
        # the answer now: what this step did not pay again.
        outcome.spared(step.kind.cost_of_answer(step.config, ctx, hit.output))
        return outcome
    try:
        outcome = step.kind.execute(step.config, ctx)
    except BaseException:
        if claimed:
            cache.release(key, token=token)
        raise
    if claimed and outcome.edge == "next" and not outcome.wait:
        cache.fill(
            key,
            token=token,
            output=outcome.output,
            edge=outcome.edge,
            model=outcome.model_answered,
            cost_usd=outcome.model_usd,  # a hit prices the vendor's part itself
            ttl_s=step.cache_ttl_s,
            run_id=ctx.run_id,
        )
    elif claimed:
        cache.release(key, token=token)
    return outcome


def _claim_after(run_id: int, delay: float, *, worker: str, lease_s: float) -> _Walk | None:
    time.sleep(delay)
    walk = _claim(run_id, worker=worker, lease_s=lease_s)
    if walk is None:
        time.sleep(0.01)  # the database clock may be a hair behind ours
        walk = _claim(run_id, worker=worker, lease_s=lease_s)
    return walk


def _step(walk: _Walk, *, worker: str) -> Advance | None:
    """Run the current step and checkpoint it, in a trace span (a no-op
    unless tracing is configured). None means: go on."""
    state = walk.state
    kind = walk.definition.steps[state.current_step].kind.name
    walk.record = None
    with tracing.step_span(
        run_id=state.run_id, key=state.current_step, kind=kind, seq=state.seq, attempt=state.attempt
    ) as span:
        result = _run_step(walk, worker=worker)
        span.finish(walk.record, result)
    return result


def _run_step(walk: _Walk, *, worker: str) -> Advance | None:
    state = walk.state
    walk.retry_delay = None
    step = walk.definition.steps[state.current_step]
    if walk.visits.get(step.key, 0) >= step.max_visits:
        return _leave_exhausted(walk, step, worker=worker)
    started = datetime.now(UTC)  # timezone.now(), less its settings lookup
    t0 = time.perf_counter()
    breach = checks.over_budget(state, walk.rules.budget, step.kind.name)
    if breach is not None:
        return _stop(walk, step, breach, _record(walk, step, started, t0, worker), None)
    if state.switched_off:  # as read by the claim or the last checkpoint
        return _park(walk, "paused")
    ctx = _context(walk, step)
    outcome: Outcome | None = None
    error: StepError | None
    try:
        ctx.lease_lost = walk.lease_lost
        with time_limit(step.timeout_s):
            outcome = _execute(walk, step, ctx)
    except BudgetExceeded as exc:
        return _stop(walk, step, exc, _record(walk, step, started, t0, worker), exc.outcome)
    except LeaseLost:
        raise  # the run is no longer this worker's: write nothing more
    except StepError as exc:
        error = exc
    except TRANSIENT as exc:
        error = StepError(f"{type(exc).__name__}: {exc}", retryable=True, error_type="transient")
    except Exception as exc:  # a bug or bad data: fail fast, keep the reason
        log.exception("run %s step %s raised", state.run_id, step.key)
        error = StepError(f"{type(exc).__name__}: {exc}", retryable=False, error_type="exception")
    else:
        error = None
    refusal = _refusal(state, step, error)
    if error is not None and error.error_type.startswith("refused") and "refused" in step.edges:
        # The workflow routes refusals itself: record it and take that edge.
        code = error.error_type.partition(":")[2]
        refused = {"refused": True, "code": code, "reason": str(error), **(error.detail or {})}
        outcome = Outcome(output=refused)
        outcome.edge, error = "refused", None
    if (
        error is None
        and outcome is not None  # always, without an error: for the type checker
        and outcome.end is None
        and not outcome.wait
        and outcome.edge not in step.edges
    ):
        error = StepError(_missing_edge(outcome), retryable=False, error_type="no_edge")
    record = _record(walk, step, started, t0, worker)
    if error is not None:
        return _fail(walk, step, error, record, outcome, refusal)
    assert outcome is not None  # the step returned one, or its refusal made one
    if outcome.wait:
        return _park(walk, outcome.wait, outcome.wait_s)
    flags = checks.flags(step, outcome.output, walk.variables)
    if flags:
        outcome.edge = "flagged"
    record.update(
        _usage(outcome),
        status="succeeded",
        edge=outcome.edge,
        input=outcome.input,
        output=outcome.output,
        flags=flags,
    )
    update = _charged(store.Update(), outcome).add("steps_executed", 1).set("seq", "seq + 1")
    taint = checks.taint(step, outcome.output, walk.definition)
    if taint is not None:
        _mark_tainted(update, state, taint)
    if outcome.end is not None:
        label, success = outcome.end
        update.value("status", "succeeded").value("outcome", label).value("success", success)
        update.at_now("finished_at").release().set("ring_at", "NULL")
        _finish(state, update, record, outcome.commit_with)
        return Advance.FINISHED
    next_key = step.edges[outcome.edge]
    update.value("current_step", next_key).value("attempt", 1).value("attempts_before", 0)
    _commit(state, update, record, refusal)
    walk.variables["steps"][step.key] = outcome.output
    walk.variables["flags"][step.key] = flags
    walk.visits[step.key] = walk.visits.get(step.key, 0) + 1
    state.current_step, state.seq, state.attempt = next_key, state.seq + 1, 1
    state.attempts_before = 0
    _count(state, outcome)
    return None


def _context(walk: _Walk, step: StepDef) -> StepContext:
    state = walk.state
    redact = walk.definition.sensitive_fields if walk.rules.redact_prompts else ()

    def before_call(kind: str, spent: Decimal, calls: int, price: ToolCost) -> None:
        breach = checks.over_budget(
            state, walk.rules.budget, kind, spent=spent, calls=calls, price=price
        )
        if breach is not None:
            raise breach

    return StepContext(
        run_id=state.run_id,
        seq=state.seq,
        attempt=state.attempt,
        step_key=step.key,
        timeout_s=step.timeout_s,
        variables=walk.variables,
        replay_of=state.replay_of,
        workflow=walk.definition.workflow,
        rules=walk.rules,
        tainted=state.tainted,
        suspicious=state.suspicious,
        fence=state.fence,
        tools_off=state.tools_off,
        defer_close=partial(_close_with_checkpoint, state),
        redact_fields=tuple(redact),
        before_call=before_call,
        mode=state.mode,
        tools_from=state.tools_from,
    )


def _close_with_checkpoint(state: store.RunState, record_id: int, result: Any) -> None:
    state.closing = (record_id, result)


def _park(walk: _Walk, reason: str, wait_s: float | None = None) -> Advance:
    """The run waits (for a person, a switch, a seat, a token), holding no worker.
    With `wait_s` it is tried again after that long."""
    update = store.Update().value("status", "waiting").value("wait_reason", reason).release()
    if wait_s is None:
        update.set("ring_at", "NULL").set("not_before", "NULL")
    else:
        update.after("not_before", wait_s).after("ring_at", wait_s)
    store.checkpoint(walk.state, update, None)
    if reason == "approval":
        _wake_if_decided(walk.state.run_id)
    elif reason.startswith("breaker:"):
        breakers.wake_if_closed(walk.state.run_id, reason)  # the same race, for a breaker
    return Advance.WAITING


def _wake_if_decided(run_id: int) -> None:
    """A decision that committed while the step was parking found the run
    still running, so its wake-up matched nothing. Look once more, after the
    park committed: with no request left pending the run goes back to the
    queue. (A decision committing after the park finds the run waiting and
    wakes it itself; the conditional updates let only one of the two win.)"""
    with transaction.atomic():
        woken = (
            Run.objects.filter(pk=run_id, status=RunStatus.WAITING, wait_reason="approval")
            .exclude(approvals__status=ApprovalStatus.PENDING)
            .update(
                status=RunStatus.QUEUED,
                wait_reason="",
                ring_at=Now() + timedelta(seconds=store.REDELIVER_AFTER_S),
            )
        )
        if woken:
            ring(run_id)


def _stop(
    walk: _Walk,
    step: StepDef,
    breach: BudgetExceeded,
    record: dict[str, Any],
    outcome: Outcome | None,
) -> Advance:
    """A budget is spent: stop the run gracefully, charging what was spent."""
    state = walk.state
    record.update(status="failed", error=str(breach)[:4000], error_type="budget")
    update = store.Update()
    if outcome is not None:
        record.update(_usage(outcome), input=outcome.input, output=outcome.output)
        _charged(update, outcome)
    update.value("status", "stopped").value("stop_reason", "budget")
    update.value("error", f"{step.key}: {breach}"[:4000])
    update.at_now("finished_at").release().set("ring_at", "NULL")
    stopped = {
        "action": "run.stopped",
        "actor": "policy",
        "target_type": "runs.run",
        "target_id": state.run_id,
        "data": {"reason": "budget", "step": step.key, "seq": state.seq, "detail": str(breach)},
    }
    _commit(state, update, record, stopped)
    return Advance.STOPPED


def _count(state: store.RunState, outcome: Outcome, *, steps: int = 1) -> None:
    """Keep the worker's copy of the run's totals in step with the row."""
    state.steps_executed += steps
    state.llm_calls += outcome.llm_calls
    state.tool_calls += outcome.tool_calls
    state.cost_usd += outcome.cost_usd
    if outcome.credits:
        state.credits[outcome.vendor] = state.credits.get(outcome.vendor, 0) + outcome.credits


def _fail(
    walk: _Walk,
    step: StepDef,
    error: StepError,
    record: dict[str, Any],
    outcome: Outcome | None,
    audit: dict[str, Any] | None = None,
) -> Advance:
    state = walk.state
    record.update(
        status="failed",
        error=str(error)[:4000],
        error_type=error.error_type,
        retryable=error.retryable,
    )
    update = store.Update()
    if outcome is not None:
        record.update(_usage(outcome), input=outcome.input, output=outcome.output)
        _charged(update, outcome)
        _count(state, outcome, steps=0)
    if error.retryable and state.attempt - state.attempts_before < step.max_attempts:
        delay = backoff_delay(
            state.attempt,
            base_s=step.backoff_base_s,
            cap_s=step.backoff_cap_s,
            retry_after=error.retry_after,
        )
        record["retry_delay_s"] = delay
        update.value("status", "waiting").value("wait_reason", "retry").set(
            "attempt", "attempt + 1"
        )
        update.release().after("not_before", delay).after("ring_at", delay)
        store.checkpoint(state, update, record)
        state.attempt += 1
        walk.retry_delay = delay
        return Advance.WAITING
    reason = "retries exhausted: " if error.retryable else ""
    update.value("status", "failed").value("error", f"{step.key}: {reason}{error}"[:4000])
    update.at_now("dead_lettered_at").at_now("finished_at").release().set("ring_at", "NULL")
    # What the dead-letter queue groups by, from this attempt's record, on
    # the run itself: the queue reads dead runs only, not their step runs.
    update.set("dead_step", "current_step").value("dead_error_type", record["error_type"])
    update.value("dead_retryable", record["retryable"])
    _commit(state, update, record, audit)
    return Advance.FAILED


def _leave_exhausted(walk: _Walk, step: StepDef, *, worker: str) -> Advance | None:
    """The step hit its visit bound: take its `exhausted` edge or fail."""
    state = walk.state
    target = step.edges.get("exhausted")
    if target is None:
        message = f"visited {step.max_visits} times, its bound"
        return _refuse_to_start(walk, step, message, "loop_bound", worker=worker)
    store.checkpoint(
        state,
        store.Update()
        .value("current_step", target)
        .value("attempt", 1)
        .value("attempts_before", 0),
        None,
    )
    state.current_step, state.attempt = target, 1
    return None


def _refusal(
    state: store.RunState, step: StepDef, error: StepError | None
) -> dict[str, Any] | None:
    """The audit entry for a call the gate refused (a policy decision), or
    None: the common path pays one comparison."""
    if error is None or not error.error_type.startswith("refused:"):
        return None
    from lib.screening import redact

    return {
        "action": "tool.refused",
        "actor": "policy",
        "target_type": "runs.run",
        "target_id": state.run_id,
        "data": {
            "tool": getattr(step.config, "tool", ""),
            "code": error.error_type.partition(":")[2],
            "step": step.key,
            "seq": state.seq,
            "reason": redact(str(error))[:1000],
        },
    }


def _commit(
    state: store.RunState,
    update: store.Update,
    record: dict[str, Any] | None,
    audit: dict[str, Any] | None,
) -> None:
    """Checkpoint; with `audit`, its entry commits in the same transaction
    (only policy decisions carry one, so a normal step stays one statement)."""
    if audit is None:
        store.checkpoint(state, update, record)
        return
    with transaction.atomic():
        store.checkpoint(state, update, record)
        audit_record(**audit)


def _finish(
    state: store.RunState,
    update: store.Update,
    record: dict[str, Any],
    commit_with: Callable[[], None] | None,
) -> None:
    """The end's checkpoint, and with `commit_with` (an end's dedup
    disposition) its writes in the same transaction, after the fenced run
    update: a worker that lost the run writes neither, a crash leaves both
    undone and the end is executed again."""
    if commit_with is None:
        store.checkpoint(state, update, record)
        return
    with transaction.atomic():
        store.checkpoint(state, update, record)
        commit_with()


def _missing_edge(outcome: Outcome) -> str:
    reason = outcome.output.get("reason", "") if isinstance(outcome.output, dict) else ""
    message = f"the step took edge {outcome.edge!r}, which this workflow does not define"
    return f"{message} ({reason})" if reason else message


def _record(
    walk: _Walk, step: StepDef, started: datetime, t0: float, worker: str
) -> dict[str, Any]:
    state = walk.state
    walk.record = store.step_record(
        seq=state.seq,
        attempt=state.attempt,
        step_key=step.key,
        kind=step.kind.name,
        started_at=started,
        finished_at=datetime.now(UTC),
        duration_ms=round((time.perf_counter() - t0) * 1000, 3),
        worker=worker[:120],
    )
    return walk.record


def _usage(outcome: Outcome) -> dict[str, Any]:
    return {
        "provider": outcome.provider,
        "model_requested": outcome.model_requested,
        "model_answered": outcome.model_answered,
        "tokens_in": outcome.tokens_in,
        "tokens_out": outcome.tokens_out,
        "cache_read_tokens": outcome.cache_read_tokens,
        "cache_write_tokens": outcome.cache_write_tokens,
        "cost_usd": outcome.cost_usd,
        "model_usd": outcome.model_usd,
        "vendor": outcome.vendor,
        "credits": outcome.credits,
        "vendor_usd": outcome.vendor_usd,
        "cache_hit": outcome.cache_hit,
        "cost_saved_usd": outcome.cost_saved_usd,
        "vendor_saved_usd": outcome.vendor_saved_usd,
        "credits_saved": outcome.credits_saved,
    }


def _charged(update: store.Update, outcome: Outcome) -> store.Update:
    return (
        update.add("llm_calls", outcome.llm_calls)
        .add("tool_calls", outcome.tool_calls)
        .add(
            "tokens_in", outcome.tokens_in + outcome.cache_read_tokens + outcome.cache_write_tokens
        )
        .add("tokens_out", outcome.tokens_out)
        .add("cost_usd", str(outcome.cost_usd) if outcome.cost_usd else 0)
        .add("model_usd", str(outcome.model_usd) if outcome.model_usd else 0)
        .add("vendor_usd", str(outcome.vendor_usd) if outcome.vendor_usd else 0)
        .add_credits(outcome.vendor, outcome.credits)
    )


def _mark_tainted(update: store.Update, state: store.RunState, taint: checks.Taint) -> None:
    """Record untrusted content in the step's checkpoint: the first source
    taints the run; signals found later are added for the reviewer."""
    if not state.tainted:
        update.value("tainted", True).value("taint_reason", taint.source[:300])
        state.tainted = True
    if taint.signals:
        state.suspicious = True
        update.set(
            "taint_signals",
            "CASE WHEN taint_signals = '' THEN substr(%s, 1, 500)"
            " ELSE substr(taint_signals || '; ' || %s, 1, 500) END",
            taint.signals,
            taint.signals,
        )
