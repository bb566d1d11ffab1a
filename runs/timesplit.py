"""Machine time and time waiting for people, per workflow version.

A run's latency (created → finished, runs.metrics) mixes two clocks: the
time the machine spent in its steps and the time the run waited for a
person to decide. An operator tuning prompts wants the first, a manager
staffing the review queue the second. Per workflow version, over the runs
created in [since, until), runs.metrics reports beside its other figures:

* `stopped` / `cancelled`: runs with that status (beside succeeded/failed).
* `machine_ms`: the durations of the runs' step attempts added up (each
  `StepRun.duration_ms`, started → finished: machine time only; a step
  waiting for an approval records its attempt when it resumes), and
  `machine_per_run_ms` its mean per run.
* `decisions`, `wait_ms`, `wait_per_decision_ms`: the approval requests
  decided by a person or a policy (approved or rejected), the time they
  waited (`created_at → decided_at`) added up, and its mean per decision.
* `pending`: runs waiting on a request now; `breached`: requests that went
  past their SLA (approvals.sla).
* `human_share`: wait / (wait + machine), None without either.

Each run keeps its own sums (`Run.machine_ms`, `decisions`, `wait_ms`,
`breaches`), written where they change: a step's checkpoint, a decision
(engine.decide_approval, the only way a request is decided), a breach. So
they come with the dashboard's one pass over the runs, and the daily
roll-up (runs.rollup) keeps their sums per day like every other figure:
30 days read as few rows as one. Sums and means add up across days;
percentiles would not without a histogram per run, which is why there are
none (the SLA breaches count the waits' long tail).
"""

from __future__ import annotations

from datetime import datetime

from runs.metrics import VersionMetrics, period_report
from runs.models import Workflow

TimeSplit = VersionMetrics


def time_split(
    *, since: datetime, until: datetime, workflow: Workflow | None = None
) -> list[TimeSplit]:
    """The figures of every workflow version with runs created in
    [since, until), ordered by workflow slug then version number."""
    return period_report(since=since, until=until, workflow=workflow).versions
