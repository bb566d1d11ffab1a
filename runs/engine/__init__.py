"""The run engine: a state machine over runs and step runs, pure Python + ORM.

It imports no views, API, admin, task queue or model SDK (a test enforces
this). Everything that changes a run goes through these functions.
"""

from runs.engine.definition import publish_workflow, validate_workflow
from runs.engine.errors import (
    AlreadyDecided,
    BudgetExceeded,
    ClaimedByOther,
    EngineError,
    InvalidInput,
    InvalidState,
    LeaseLost,
    NotFound,
    PublishError,
    QueueFull,
    StepError,
)
from runs.engine.rollout import promote_rollout, roll_back_rollout, start_canary
from runs.engine.service import (
    Started,
    cancel_run,
    decide_approval,
    decide_timed_out_approvals,
    expire_leases_of,
    mark_queued_runs_due,
    reconcile_tool_call,
    replay_run,
    retry_run,
    start_run,
    sweep,
)
from runs.engine.switches import resume_paused, set_switch
from runs.engine.worker import Advance, advance_run

__all__ = [
    "Advance",
    "AlreadyDecided",
    "BudgetExceeded",
    "ClaimedByOther",
    "EngineError",
    "InvalidInput",
    "InvalidState",
    "LeaseLost",
    "NotFound",
    "PublishError",
    "QueueFull",
    "Started",
    "StepError",
    "advance_run",
    "cancel_run",
    "decide_approval",
    "decide_timed_out_approvals",
    "expire_leases_of",
    "mark_queued_runs_due",
    "publish_workflow",
    "promote_rollout",
    "reconcile_tool_call",
    "replay_run",
    "resume_paused",
    "retry_run",
    "roll_back_rollout",
    "set_switch",
    "start_run",
    "start_canary",
    "sweep",
    "validate_workflow",
]
