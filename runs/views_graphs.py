"""Console pages of workflow versions: each version's graph, the diff of two
versions, and the graph and time axis the run page shows.

Graphs are drawn by `runs.graph_svg` (pure Python, the layout cached per
version), diffs computed by `runs.graph_diff`. Seeing versions needs
`runs.view_workflowversion`; the run page's graph is part of the run's
timeline and needs what that page needs.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, render
from django.utils import timezone
from django.views.decorators.http import require_GET

from approvals.models import ApprovalRequest
from lib.console import console_view
from lib.durations import human_ms
from runs import graph_svg
from runs.graph_diff import diff_definitions
from runs.graphs import LEGEND, version_graph
from runs.models import Run, StepRun, Workflow, WorkflowVersion
from runs.run_timeline import Approval, Attempt, Current, TimeAxis, time_axis

# --- the run page --------------------------------------------------------------


def run_graph_context(
    run: Run, steps: Sequence[StepRun], approvals: Sequence[ApprovalRequest]
) -> dict[str, Any]:
    """What the run page adds: the graph of its version with the path the
    run took, a table of that path, and the time axis."""
    visits: dict[str, dict[str, Any]] = {}
    path: list[dict[str, Any]] = []
    for step in steps:
        seen = visits.setdefault(step.step_key, {"cost": Decimal(0), "ms": 0.0, "seqs": set()})
        seen["cost"] += step.cost_usd
        seen["ms"] += step.duration_ms
        seen["seqs"].add(step.seq)
        if path and path[-1]["seq"] == step.seq:
            row = path[-1]
        else:
            row = {"seq": step.seq, "key": step.step_key, "attempts": 0, "cost": Decimal(0)}
            row["ms"] = 0.0
            path.append(row)
        row["attempts"] += 1
        row["cost"] += step.cost_usd
        row["ms"] += step.duration_ms
        row["edge"] = step.edge
        row["status"] = step.status
    overlay = graph_svg.Overlay(
        visited={key: _stats(seen) for key, seen in visits.items()},
        taken={(s.step_key, s.edge) for s in steps if s.status == "succeeded" and s.edge},
    )
    _bounds_taken(run.version.definition, path, overlay)
    if run.status == "failed":
        overlay.failed = run.current_step
    elif not run.is_terminal:
        overlay.current = run.current_step
    autonomy = (run.policy_version.snapshot or {}).get("autonomy") if run.policy_version else []
    for row in path:
        row["duration"] = human_ms(row["ms"])
    return {
        "run_graph": version_graph(
            run.version,
            autonomy=autonomy or [],
            overlay=overlay,
            element_id="run-graph",
            title=f"Path of run {run.pk} through {run.workflow.slug} v{run.version.number}",
        ),
        "run_path": path,
        "time_axis": run_time_axis(run, steps, approvals),
        "graph_legend": LEGEND,
    }


def _bounds_taken(
    definition: dict[str, Any], path: list[dict[str, Any]], overlay: graph_svg.Overlay
) -> None:
    """A step left by its `exhausted` edge (its visit bound reached) records
    no attempt: where the path goes from an edge's target to somewhere else,
    that target's `exhausted` edge was taken."""
    steps = definition.get("steps") or {}
    for here, there in zip(path, path[1:], strict=False):
        target = (steps.get(here["key"]) or {}).get("edges", {}).get(here.get("edge", ""))
        if target is None or target == there["key"]:
            continue
        if (steps.get(target) or {}).get("edges", {}).get("exhausted") == there["key"]:
            overlay.taken.add((target, "exhausted"))
            overlay.visited.setdefault(target, "visit bound reached")


def _stats(seen: dict[str, Any]) -> str:
    visits = len(seen["seqs"])
    parts = [f"×{visits}"] if visits > 1 else []
    parts += [f"${seen['cost']:.4f}", human_ms(seen["ms"])]
    return " · ".join(parts)


def run_time_axis(
    run: Run, steps: Sequence[StepRun], approvals: Sequence[ApprovalRequest]
) -> TimeAxis:
    attempts = [
        Attempt(
            seq=s.seq,
            key=s.step_key,
            attempt=s.attempt,
            status=s.status,
            started_at=s.started_at,
            finished_at=s.finished_at,
            retry_delay_s=s.retry_delay_s,
            cost=f"{s.cost_usd:.4f}" if s.cost_usd else "",
        )
        for s in steps
    ]
    current = None
    if not run.is_terminal and run.current_step:
        current = Current(run.seq, run.current_step, run.status, run.wait_reason)
    return time_axis(
        created_at=run.created_at,
        until=run.finished_at or timezone.now(),
        attempts=attempts,
        approvals=[Approval(a.seq, a.created_at, a.decided_at) for a in approvals],
        current=current,
    )


# --- versions -------------------------------------------------------------------


@require_GET
@console_view("runs.view_workflowversion")
def version_list(request: HttpRequest, slug: str) -> HttpResponse:
    """A workflow's versions, newest first, with a form to compare two."""
    workflow = get_object_or_404(Workflow, slug=slug)
    versions = list(
        workflow.versions.published()
        .select_related("published_by")
        .only("id", "number", "checksum", "published_at", "published_by__username", "workflow_id")
    )
    context = {"nav": "runs", "workflow": workflow, "versions": versions}
    return render(request, "console/workflows/versions.html", context)


@require_GET
@console_view("runs.view_workflowversion")
def version_detail(request: HttpRequest, slug: str, number: int) -> HttpResponse:
    """One version: its graph and its steps."""
    version = get_object_or_404(
        WorkflowVersion.objects.published().select_related("workflow__policy", "published_by"),
        workflow__slug=slug,
        number=number,
    )
    context = {
        "nav": "runs",
        "version": version,
        "workflow": version.workflow,
        "graph": version_graph(version),
        "graph_legend": LEGEND,
        "steps": [
            {"key": key, **raw} for key, raw in (version.definition.get("steps") or {}).items()
        ],
    }
    return render(request, "console/workflows/version.html", context)


@require_GET
@console_view("runs.view_workflowversion")
def version_diff(request: HttpRequest, slug: str) -> HttpResponse:
    """What changed from version `a` to version `b` (default: the latest and
    the one before it)."""
    workflow = get_object_or_404(Workflow, slug=slug)
    numbers = list(
        workflow.versions.published().order_by("-number").values_list("number", flat=True)
    )
    try:
        b = int(request.GET.get("b") or (numbers[0] if numbers else 0))
        a = int(request.GET.get("a") or (numbers[1] if len(numbers) > 1 else b))
    except ValueError:
        return HttpResponseBadRequest("Versions are numbers.")
    chosen = {
        v.number: v
        for v in workflow.versions.published()
        .filter(number__in=[a, b])
        .only("id", "number", "definition")
    }
    if a not in chosen or b not in chosen:
        return HttpResponseBadRequest("No such version of this workflow.")
    context = {
        "nav": "runs",
        "workflow": workflow,
        "numbers": numbers,
        "a": a,
        "b": b,
        "diff": diff_definitions(chosen[a].definition, chosen[b].definition),
    }
    return render(request, "console/workflows/diff.html", context)
