"""The engine's error types. Interfaces map these to their own shapes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runs.engine.kinds import Outcome


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "engine_error"


class NotFound(EngineError):
    code = "not_found"


class InvalidState(EngineError):
    """The run or request is not in a state that allows the operation."""

    code = "invalid_state"


class AlreadyDecided(InvalidState):
    code = "already_decided"


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
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_type = error_type or type(self).__name__


class StepTimeout(StepError):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"step timed out after {seconds:g}s", retryable=True, error_type="timeout")


class BudgetExceeded(Exception):
    """The run may not start another step or paid call: a budget is spent.

    `outcome` carries what the interrupted step had spent already, so it
    is charged to the run before it stops.
    """

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


class InvalidInput(EngineError):
    """A run's input breaks the workflow's entry schema; `fields` names each."""

    code = "invalid_input"

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))


class LeaseLost(Exception):
    """This worker's claim on the run was taken over; it must stop writing."""
