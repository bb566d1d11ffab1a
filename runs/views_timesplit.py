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

from lib.durations import human_ms
from runs.metrics import VersionMetrics

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


def time_figures(*, since: datetime, until: datetime, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The time split's rows (formatted, with their links), and the links
    of the dashboard's own rows: both from the same report's figures."""
    for row in rows:
        metrics = row["metrics"]
        row["links"] = drill_links(
            since=since, until=until, workflow=metrics.workflow, version_id=metrics.version_id
        )
        row["stopped"] = metrics.stopped
        row["cancelled"] = metrics.cancelled
    return {"time_rows": [_row(row["metrics"], since, until) for row in rows]}


def _row(row: VersionMetrics, since: datetime, until: datetime) -> dict[str, Any]:
    def ms(value: float | None) -> str:
        return human_ms(value) or "—"

    share = row.human_share
    return {
        "split": row,
        "links": drill_links(
            since=since, until=until, workflow=row.workflow, version_id=row.version_id
        ),
        "machine_per_run": ms(row.machine_per_run_ms),
        "machine_total": ms(row.machine_ms if row.runs else None),
        "wait_per_decision": ms(row.wait_per_decision_ms),
        "wait_total": ms(row.wait_ms if row.decisions else None),
        "human_share": "—" if share is None else f"{share:.1%}",
    }
