"""django-q2 entry points of evaluation. Thin: they take ids; each is safe
to run twice (a shadow run is started once per live run, a dispatch starts
each trial once)."""

from __future__ import annotations

from django_q.tasks import async_task

from evals import experiments, shadow


def queue_shadow(run_id: int) -> None:
    """The production BOSUN_SHADOW_QUEUE: start the shadow run in a task."""
    async_task("evals.tasks.start_shadow_run", run_id, task_name=f"shadow-{run_id}", save=False)


def start_shadow_run(run_id: int) -> int | None:
    run = shadow.shadow_run_of(run_id=run_id)
    return run.pk if run is not None else None


def dispatch(experiment_id: int) -> int:
    return experiments.dispatch(experiment_id=experiment_id)


def refresh(experiment_id: int) -> str:
    return experiments.refresh_experiment(experiment_id=experiment_id).status


def refresh_running() -> int:
    """The schedule's task: score every running experiment; how many closed."""
    return experiments.refresh_running()
