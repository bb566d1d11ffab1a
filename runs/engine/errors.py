"""The engine's error types. Interfaces map these to their own shapes.

Three families:
- `EngineError`: an operation asked of the engine cannot be done (`code`
  names why; the API maps it to a status).
- `Wait`: not a failure: a step waits for something (a person, a limit, a
  kill switch). `reason` is the stable name tracing and the console show;
  `run_wait` is what the run records as its `wait_reason`.
- refusals and stops (`Refused`, `BudgetExceeded`, `LeaseLost`): each with
  a `reason` too, so nothing downstream recognises an error by its class
  name.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from runs.engine.kinds import Outcome

from lib.errors import DomainError, InvalidInput, InvalidState, NotFound

__all__ = [
    "AlreadyDecided",
    "BreakerOpen",
    "BudgetExceeded",
    "DomainError",
    "EngineError",
    "InvalidInput",
    "InvalidState",
    "LeaseLost",
    "NeedsApproval",
    "NeedsReconciliation",
    "NotFound",
    "Paused",
    "PublishError",
    "QueueFull",
    "Refused",
    "StepError",
    "StepTimeout",
    "Throttled",
    "Wait",
    "breaker_wait_reason",
    "limit_wait_reason",
]


# The engine raises the shared domain errors; EngineError is their base
# (one hierarchy, so an interface maps all of them in one place).
EngineError = DomainError


class AlreadyDecided(InvalidState):
    code = "already_decided"


class ClaimedByOther(InvalidState):
    """Another reviewer has the request open (its claim has not run out)."""

    code = "claimed"


class PublishError(EngineError):
    """A workflow failed validation; `problems` names each one."""

    code = "invalid_workflow"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


class StepError(Exception):
    """A step failed. `retryable` decides between backoff and failing fast.

    `retry_after` (seconds) is a floor for the next attempt, e.g. from a
    provider's Retry-After header.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        error_type: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type or type(self).__name__
        # Recorded with the step (a refusal's `refused` edge output carries it).
        self.detail = detail
        # The first call of a route failed for an outage of its provider (a
        # 5xx, overloaded, a timeout): the llm step may ask its next route.
        self.outage = False


class StepTimeout(StepError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"step timed out after {seconds:g}s", retryable=True, error_type="timeout")


class BudgetExceeded(Exception):
    """The run may not start another step or paid call: a budget is spent.

    `outcome` carries what the interrupted step had spent already, so it
    is charged to the run before it stops.
    """

    reason: ClassVar[str] = "budget"

    def __init__(self, resource: str, detail: str) -> None:
        super().__init__(f"budget {resource}: {detail}")
        self.resource = resource
        self.detail = detail
        self.outcome: Outcome | None = None


class QueueFull(EngineError):
    """Backpressure: the workflow has as many active runs as it may."""

    code = "queue_full"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class LeaseLost(Exception):
    """This worker's claim on the run was taken over; it must stop writing."""

    reason: ClassVar[str] = "lease_lost"


class Refused(Exception):
    """The tool gate refused a call for good (`code` says which rule;
    `detail` what it saw, e.g. the knowledge events that block the call)."""

    reason: ClassVar[str] = "refused"

    def __init__(self, code: str, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.detail = detail


class Wait(Exception):
    """The step cannot go on yet; the run waits holding no worker."""

    reason: ClassVar[str] = "waiting"
    # Try again after this long (None: when something wakes the run).
    wait_s: float | None = None

    @property
    def run_wait(self) -> str:
        """The run's `wait_reason` while it waits for this."""
        return self.reason

    @property
    def detail(self) -> dict[str, Any] | None:
        """Recorded as the waiting step's input (what it waits on)."""
        return None


class NeedsApproval(Wait):
    """A reviewer must approve these exact arguments first; `reason_code`
    says why the call needs a person (shown to the reviewer)."""

    reason: ClassVar[str] = "needs_approval"

    def __init__(self, approval_id: int, reason_code: str) -> None:
        super().__init__(f"approval {approval_id} pending ({reason_code})")
        self.approval_id = approval_id
        self.reason_code = reason_code

    @property
    def run_wait(self) -> str:
        return "approval"

    @property
    def detail(self) -> dict[str, Any]:
        return {"approval_id": self.approval_id}


class NeedsReconciliation(Wait):
    """A call may have happened and cannot be repeated blindly: a person
    settles it."""

    reason: ClassVar[str] = "needs_reconciliation"

    def __init__(self, record_id: int) -> None:
        super().__init__(f"tool call {record_id} may have happened: reconcile it")
        self.record_id = record_id

    @property
    def detail(self) -> dict[str, Any]:
        return {"tool_call": self.record_id}


class Paused(Wait):
    """A kill switch holds the call; the run resumes when it is lifted."""

    reason: ClassVar[str] = "paused"


class Throttled(Wait):
    """A concurrency cap or rate limit is full for `key`."""

    reason: ClassVar[str] = "throttled"

    def __init__(self, key: str, wait_s: float, *, kind: str) -> None:
        super().__init__(f"{kind} limit on {key}: wait {wait_s:.2f}s")
        self.key = key
        self.wait_s = wait_s
        self.kind = kind

    @property
    def run_wait(self) -> str:
        return limit_wait_reason(self.key)


class AnswerPending(Wait):
    """Another run is buying the answer this read would buy: wait for it
    instead of buying it twice."""

    reason: ClassVar[str] = "answer_pending"

    def __init__(self, tool: str, key: str, wait_s: float) -> None:
        super().__init__(f"{tool} answer for {key} is being bought by another run")
        self.tool = tool
        self.key = key
        self.wait_s = wait_s

    @property
    def run_wait(self) -> str:
        return f"answer:{self.tool}"[:40]


def limit_wait_reason(key: str) -> str:
    """What a run waiting for limit `key` records (fits Run.wait_reason)."""
    return f"limit:{key}"[:40]


class BreakerOpen(Wait):
    """The circuit breaker of `key` is open (or another call is probing it):
    the call is not made, and the run waits without spending an attempt."""

    reason: ClassVar[str] = "breaker_open"

    def __init__(self, key: str, wait_s: float, *, why: str = "open") -> None:
        super().__init__(f"breaker {key} is {why}: the call waits")
        self.key = key
        self.wait_s = wait_s
        self.why = why

    @property
    def run_wait(self) -> str:
        return breaker_wait_reason(self.key)

    @property
    def detail(self) -> dict[str, Any]:
        return {"breaker": self.key, "state": self.why}


def breaker_wait_reason(key: str) -> str:
    """What a run waiting on breaker `key` records: `breaker:<key>`, or,
    for a key too long for Run.wait_reason (40), its start and a short hash,
    so that two long keys never share a reason."""
    reason = f"breaker:{key}"
    if len(reason) <= 40:
        return reason
    return f"breaker:{key[:25]}~{hashlib.sha256(key.encode()).hexdigest()[:6]}"
