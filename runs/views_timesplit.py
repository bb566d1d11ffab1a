"""The dashboard's machine time / time waiting for people, and its drill-downs.

Every figure on the dashboard links to the runs behind it: the runs list
with the figure's filters (workflow, version, the period's exact bounds,
and the status or approval condition that makes the figure). The runs
list's filter form (runs.views.RunFilterForm) reads each of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from django.urls import reverse
from django.utils import timezone

from lib.charts import Chart
from lib.durations import human_ms
from runs.models import Workflow
from runs.timesplit import TimeSplit, time_split

# The runs list's datetime filters read this (ISO, with the fraction of a
# second, in the current time zone): a link carries a bound exactly.
DATETIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"

# figure -> the runs list filters that select the runs behind it
DRILLS: dict[str, dict[str, str]] = {
    "runs": {},
    "succeeded": {"status": "succeeded"},
    "successes": {"success": "yes"},
    "failed": {"status": "failed"},
    "stopped": {"status": "stopped"},
    "cancelled": {"status": "cancelled"},
    "escalated": {"approvals": "asked"},
    "decisions": {"approvals": "decided"},
    "pending": {"approvals": "pending"},
    "breached": {"approvals": "breached"},
}


def local_bound(value: datetime) -> str:
    return timezone.localtime(value).strftime(DATETIME_FORMAT)


def drill_links(
    *, since: datetime, until: datetime, workflow: str, version_id: int | None
) -> dict[str, str]:
    """The runs list URL behind each figure of one version (DRILLS)."""
    base: dict[str, Any] = {
        "workflow": workflow,
        "created_from": local_bound(since),
        "created_before": local_bound(until),
    }
    if version_id is not None:
        base["version"] = version_id
    url = reverse("console-run-list")
    return {name: f"{url}?{urlencode({**base, **extra})}" for name, extra in DRILLS.items()}


def time_figures(
    *,
    since: datetime,
    until: datetime,
    workflow: Workflow | None,
    rows: list[dict[str, Any]],
    charts: list[Chart],
) -> dict[str, Any]:
    """The time split's rows (formatted, with their links), and the links
    of the dashboard's own rows (matched by workflow and version number)."""
    split = time_split(since=since, until=until, workflow=workflow)
    by_name = {(row.workflow, row.version): row for row in split}
    time_rows = [_row(row, since, until) for row in split]
    for row in rows:
        metrics = row["metrics"]
        found = by_name.get((metrics.workflow, metrics.version))
        row["links"] = drill_links(
            since=since,
            until=until,
            workflow=metrics.workflow,
            version_id=found.version_id if found else None,
        )
        row["stopped"] = found.stopped if found else 0
        row["cancelled"] = found.cancelled if found else 0
    return {"time_rows": time_rows}


def _row(row: TimeSplit, since: datetime, until: datetime) -> dict[str, Any]:
    def ms(value: float | None) -> str:
        return human_ms(value) or "—"

    share = row.human_share
    return {
        "split": row,
        "links": drill_links(
            since=since, until=until, workflow=row.workflow, version_id=row.version_id
        ),
        "step_p50": ms(row.step_p50_ms),
        "step_p95": ms(row.step_p95_ms),
        "step_total": ms(row.step_total_ms if row.steps else None),
        "wait_p50": ms(row.wait_p50_ms),
        "wait_p95": ms(row.wait_p95_ms),
        "wait_total": ms(row.wait_total_ms if row.decisions else None),
        "human_share": "—" if share is None else f"{share:.1%}",
    }
