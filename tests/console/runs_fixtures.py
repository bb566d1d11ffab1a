"""Factories for the run pages' tests: runs and step runs written directly,
with chosen times, statuses and costs, so figures can be computed by hand."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from runs.models import Run, StepRun, WorkflowVersion

_ids = itertools.count(1)

TWO_STEPS = [
    {
        "key": "work",
        "kind": "tool",
        "config": {"tool": "echo", "args": {"value": 1}},
        "edges": {"next": "done"},
    },
    {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}},
]


def add_run(
    version: WorkflowVersion,
    *,
    status: str = "succeeded",
    success: bool | None = None,
    cost: str | Decimal = "0",
    created_at: datetime | None = None,
    latency_ms: float | None = None,
    steps: list[dict[str, Any]] = (),
    dead: bool = False,
    **fields: Any,
) -> Run:
    """A run of `version` created at `created_at` (default now) and finished
    `latency_ms` later (None: not finished), with a StepRun per dict of
    `steps` (seq in order, fields override the defaults)."""
    created_at = created_at or timezone.now()
    run = Run.objects.create(
        workflow_id=version.workflow_id,
        version=version,
        status=status,
        success=success,
        cost_usd=Decimal(cost),
        **fields,
    )
    finished = None if latency_ms is None else created_at + timedelta(milliseconds=latency_ms)
    # created_at is auto_now_add: only an update sets a chosen time.
    Run.objects.filter(pk=run.pk).update(
        created_at=created_at,
        finished_at=finished,
        dead_lettered_at=finished or created_at if dead else None,
    )
    rows = []
    for seq, step in enumerate(steps, start=1):
        values = {
            "run": run,
            "seq": seq,
            "step_key": f"step{seq}",
            "kind": "tool",
            "status": "succeeded",
            "started_at": created_at,
            "finished_at": created_at,
            **step,
        }
        rows.append(StepRun(**values))
    StepRun.objects.bulk_create(rows)
    if dead:  # as the engine records it: the attempt the run's seq and attempt point at
        failed = next((r for r in rows if (r.seq, r.attempt) == (run.seq, run.attempt)), None)
        Run.objects.filter(pk=run.pk).update(
            dead_step=run.current_step,
            dead_error_type=failed.error_type if failed else "",
            dead_retryable=failed.retryable if failed else None,
        )
    run.refresh_from_db()
    return run


def add_approval(run: Run, *, seq: int = 1, status: str = ApprovalStatus.PENDING, **fields):
    return ApprovalRequest.objects.create(
        run=run, seq=seq, step_key=fields.pop("step_key", "review"), status=status, **fields
    )


@pytest.fixture
def two_step_version(make_workflow) -> WorkflowVersion:
    """A published workflow of a tool step and an end step."""
    return make_workflow(TWO_STEPS, slug=f"pages-{next(_ids)}")


@pytest.fixture
def many_runs(two_step_version):
    """`many_runs(n)`: n runs of mixed status with two step runs each."""

    def make(count: int) -> list[Run]:
        statuses = ["succeeded", "failed", "waiting", "running"]
        made = []
        for index in range(count):
            status = statuses[index % len(statuses)]
            made.append(
                add_run(
                    two_step_version,
                    status=status,
                    success=True if status == "succeeded" else None,
                    cost="0.01",
                    latency_ms=1000 if status in ("succeeded", "failed") else None,
                    dead=status == "failed",
                    error="boom" if status == "failed" else "",
                    steps=[
                        {"step_key": "work", "cost_usd": Decimal("0.01")},
                        {
                            "step_key": "done",
                            "kind": "end" if status != "failed" else "tool",
                            "status": "failed" if status == "failed" else "succeeded",
                            "error_type": "timeout" if status == "failed" else "",
                        },
                    ],
                )
            )
        return made

    return make
