"""django-q2 entry points. Thin: they take ids and call the engine.

Delivery is at-least-once, so each of these is safe to run twice: advancing
a run someone else holds claims nothing and returns.
"""

from __future__ import annotations

from django_q.tasks import async_task

from approvals import sla
from integrations.idempotency import purge_idempotency_keys
from policies.notifications import notify_dead_letters
from runs import engine
from runs.engine.timing import queue_task_s
from runs.rollup import roll_up_all


def advance(run_id: int) -> str:
    return engine.advance_run(run_id, task_s=queue_task_s()).value


def sweep() -> int:
    rung = len(engine.sweep())
    engine.decide_timed_out_approvals()  # approvals past their timeout
    sla.sweep_slas()  # approvals to announce, or past their due time
    notify_dead_letters()  # runs dead-lettered lately, to the routes set in admin
    purge_idempotency_keys()  # API idempotency keys past their 24-hour window
    return rung


def roll_up() -> int:
    """The dashboard's daily roll-up (runs.rollup): the days rolled up."""
    return sum(len(done.rolled) for done in roll_up_all())


def ring(run_id: int) -> None:
    """The production doorbell: queue an `advance` task for the run."""
    async_task("runs.tasks.advance", run_id, task_name=f"run-{run_id}", save=False)
