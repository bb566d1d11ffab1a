"""Console pages for rollouts: every workflow's live version and canary, a
workflow's rollout page (publish the draft as a canary, start a canary of a
published version, promote, roll back, history) and the live-against-
candidate comparison, also shown on the dashboard.

Seeing needs `runs.view_rollout`; starting, promoting and rolling back
`runs.manage_rollout`; publishing the draft as a canary also
`runs.publish_workflow` (as publishing in admin does). Every change goes
through the engine (`publish_workflow`, `start_canary`, `promote_rollout`,
`roll_back_rollout`), which audits it with who and why.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Max
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from lib.console import after_post, console_view, is_partial
from policies.audit import actor_of
from runs import engine
from runs.engine import rollout as rollouts
from runs.models import Rollout, RolloutStatus, Workflow, WorkflowVersion
from runs.rollout_metrics import VersionFigures, rollout_comparison

HISTORY_SHOWN = 50


class CanaryForm(forms.Form):
    share_pct = forms.IntegerField(label="Share of new runs (%)", min_value=1, max_value=99)
    reason = forms.CharField(label="Why", max_length=4000, required=False)


class StartCanaryForm(CanaryForm):
    candidate = forms.ModelChoiceField(label="Version", queryset=WorkflowVersion.objects.none())

    def __init__(self, *args: Any, workflow: Workflow, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["candidate"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = workflow.versions.published().order_by("-number")


class DecideForm(forms.Form):
    reason = forms.CharField(label="Why", max_length=4000)


@require_GET
@console_view("runs.view_rollout")
def rollout_list(request: HttpRequest) -> HttpResponse:
    """Every workflow with its live version and its running canary."""
    workflows = list(Workflow.objects.select_related("live_version").order_by("name"))
    active = {
        r.workflow_id: r
        for r in Rollout.objects.filter(status=RolloutStatus.ACTIVE).select_related("candidate")
    }
    newest = _newest_numbers([w.pk for w in workflows])
    rows = [
        {
            "workflow": w,
            "live": w.live_version.number if w.live_version else newest.get(w.pk),
            "canary": active.get(w.pk),
        }
        for w in workflows
    ]
    return render(request, "console/rollouts/list.html", {"nav": "rollouts", "rows": rows})


def _newest_numbers(workflow_ids: list[int]) -> dict[int, int]:
    found = (
        WorkflowVersion.objects.filter(workflow_id__in=workflow_ids)
        .values("workflow_id")
        .annotate(top=Max("number"))
        .order_by()
    )
    return {row["workflow_id"]: row["top"] for row in found}


@require_GET
@console_view("runs.view_rollout")
def rollout_detail(request: HttpRequest, slug: str) -> HttpResponse:
    workflow = get_object_or_404(Workflow, slug=slug)
    return render(request, "console/rollouts/detail.html", _detail_context(request, workflow))


def _detail_context(request: HttpRequest, workflow: Workflow, **forms_: Any) -> dict[str, Any]:
    history = list(
        Rollout.objects.filter(workflow=workflow).select_related("baseline", "candidate")[
            :HISTORY_SHOWN
        ]
    )
    active = next((r for r in history if r.status == RolloutStatus.ACTIVE), None)
    user = request.user
    return {
        "nav": "rollouts",
        "workflow": workflow,
        "live": rollouts.live_version(workflow.pk),
        "active": active,
        "figures": _shown(rollout_comparison(active)) if active else None,
        "history": history,
        "latest": history[0] if history else None,
        "can_manage": user.has_perm("runs.manage_rollout"),
        "can_publish": user.has_perms(("runs.manage_rollout", "runs.publish_workflow")),
        "publish_form": forms_.get("publish_form") or CanaryForm(initial={"share_pct": 10}),
        "start_form": forms_.get("start_form")
        or StartCanaryForm(workflow=workflow, initial={"share_pct": 10}),
        "decide_form": DecideForm(),
    }


@require_POST
@console_view(("runs.manage_rollout", "runs.publish_workflow"))
def rollout_publish(request: HttpRequest, slug: str) -> HttpResponse:
    """Publish the workflow's draft as a canary taking the given share."""
    workflow = get_object_or_404(Workflow, slug=slug)
    form = CanaryForm(request.POST)
    if not form.is_valid():
        return _invalid(request, workflow, publish_form=form)
    try:
        version = engine.publish_workflow(
            workflow=workflow,
            user=request.user,
            canary_share=form.cleaned_data["share_pct"],
            reason=form.cleaned_data["reason"],
        )
    except engine.PublishError as exc:
        for problem in exc.problems:
            messages.error(request, f"Not published: {problem}")
    else:
        share = form.cleaned_data["share_pct"]
        messages.success(request, f"Published {version} as a {share} % canary.")
    return after_post(request, reverse("console-rollout-detail", args=[workflow.slug]))


@require_POST
@console_view("runs.manage_rollout")
def rollout_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a canary of a version already published."""
    workflow = get_object_or_404(Workflow, slug=slug)
    form = StartCanaryForm(request.POST, workflow=workflow)
    if not form.is_valid():
        return _invalid(request, workflow, start_form=form)
    try:
        started = engine.start_canary(
            workflow=workflow,
            candidate=form.cleaned_data["candidate"],
            share_pct=form.cleaned_data["share_pct"],
            actor=actor_of(request.user),
            reason=form.cleaned_data["reason"],
        )
    except engine.InvalidState as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{started.candidate} takes {started.share_pct} % of new runs as a canary."
        )
    return after_post(request, reverse("console-rollout-detail", args=[workflow.slug]))


@require_POST
@console_view("runs.manage_rollout")
def rollout_promote(request: HttpRequest, rollout_id: int) -> HttpResponse:
    return _decide(request, rollout_id, engine.promote_rollout, "promoted: it is live")


@require_POST
@console_view("runs.manage_rollout")
def rollout_rollback(request: HttpRequest, rollout_id: int) -> HttpResponse:
    return _decide(request, rollout_id, engine.roll_back_rollout, "rolled back")


def _decide(request: HttpRequest, rollout_id: int, action: Any, done: str) -> HttpResponse:
    found = get_object_or_404(
        Rollout.objects.select_related("workflow", "candidate"), pk=rollout_id
    )
    form = DecideForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why (a reason is required).")
    else:
        try:
            action(
                rollout_id=found.pk,
                actor=actor_of(request.user),
                reason=form.cleaned_data["reason"],
            )
        except engine.InvalidState as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, f"{found.candidate} {done}.")
    return after_post(request, reverse("console-rollout-detail", args=[found.workflow.slug]))


def _invalid(request: HttpRequest, workflow: Workflow, **forms_: Any) -> HttpResponse:
    context = _detail_context(request, workflow, **forms_)
    return render(request, "console/rollouts/detail.html", context, status=400)


@require_GET
@console_view("runs.view_rollout")
def rollout_comparison_view(request: HttpRequest, rollout_id: int) -> HttpResponse:
    """One canary's comparison (the partial for htmx, else a page)."""
    found = get_object_or_404(
        Rollout.objects.select_related("workflow", "baseline", "candidate"), pk=rollout_id
    )
    context = {"nav": "rollouts", "rollout": found, "figures": _shown(rollout_comparison(found))}
    template = (
        "console/rollouts/partials/_comparison.html"
        if is_partial(request)
        else "console/rollouts/comparison.html"
    )
    return render(request, template, context)


@require_GET
@console_view("runs.view_rollout")
def dashboard_canaries(request: HttpRequest) -> HttpResponse:
    """The dashboard's section: every running canary, live against candidate."""
    active = Rollout.objects.filter(status=RolloutStatus.ACTIVE).select_related(
        "workflow", "baseline", "candidate"
    )
    canaries = [{"rollout": r, "figures": _shown(rollout_comparison(r))} for r in active]
    template = (
        "console/rollouts/partials/_dashboard.html"
        if is_partial(request)
        else "console/rollouts/dashboard.html"
    )
    return render(request, template, {"nav": "dashboard", "canaries": canaries})


def _shown(figures: list[VersionFigures]) -> list[dict[str, Any]]:
    """The figures formatted: rates as percentages, money in USD."""

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{value:.1%}"

    return [
        {
            "side": f.side,
            "number": f.number,
            "runs": f.runs,
            "finished": f.finished,
            "successes": f.successes,
            "success_rate": pct(f.success_rate),
            "escalation_rate": pct(f.escalation_rate),
            "flagged_rate": pct(f.flagged_rate),
            "cost_usd": f"${f.cost_usd:,.4f}",
            "cost_per_success": "—"
            if f.cost_per_success is None
            else f"${f.cost_per_success:,.4f}",
        }
        for f in figures
    ]
