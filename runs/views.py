"""Console pages for runs: dashboard, runs list, run timeline, dead letters.

Function views. A request from htmx (`HX-Request`) gets the page's partial,
any other request the whole page, so every page works without JavaScript
(links carry `href` beside `hx-get`). Seeing needs `runs.view_run`; retrying
`runs.retry_run`; cancelling `runs.cancel_run`; anyone else gets 403, and
an anonymous visitor is sent to the login page. Every change goes through
the engine's functions (`retry_run`, `cancel_run`), as admin and API do.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, F, Max, Min, OuterRef, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from approvals.models import ApprovalRequest
from lib.charts import trend_charts
from lib.console import after_post, console_view, is_partial
from lib.durations import human_ms
from lib.screening import redact, redact_value
from policies import audit
from runs import engine, metrics
from runs.models import (
    Run,
    RunMode,
    RunStatus,
    Score,
    StepRun,
    ToolCallRecord,
    Workflow,
    WorkflowVersion,
)
from runs.views_graphs import run_graph_context
from runs.views_timesplit import DATETIME_FORMAT, time_figures

PAGE_SIZE = 50
# A bulk retry handles at most this many runs per confirmation: each is one
# engine call (its own transaction), and a request must stay short.
BULK_LIMIT = 500
DEAD_RUNS_SHOWN = 100
DEAD_GROUPS_SHOWN = 200
PERIODS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
MAX_PERIOD_DAYS = 366


def _shown(request: HttpRequest, value: Any) -> str:
    """JSON for display, redacted for anyone without `view_personal_data`."""
    if value is None or value == "":
        return ""
    if not request.user.has_perm("runs.view_personal_data"):
        value = redact_value(value)
    return value if isinstance(value, str) else json.dumps(value, indent=2, default=str)


def _shown_text(request: HttpRequest, text: str) -> str:
    return text if request.user.has_perm("runs.view_personal_data") else redact(text or "")


def _actor(request: HttpRequest) -> str:
    """Who acted, as the audit log names people ("user:<name>")."""
    return audit.actor_of(request.user)


def _midnight(day: date) -> datetime:
    """The start of `day` in the current time zone (a date filter's bound)."""
    return datetime.combine(day, datetime.min.time(), timezone.get_current_timezone())


# --- home and dashboard ------------------------------------------------------


@require_GET
@console_view(None)
def home(request: HttpRequest) -> HttpResponse:
    """The console's front door: the dashboard, or the review queue for
    people who may only review."""
    if request.user.has_perm("runs.view_run"):
        return redirect("console-dashboard")
    if request.user.has_perm("approvals.view_approvalrequest"):
        return redirect("console-review-queue")
    raise PermissionDenied


class DashboardForm(forms.Form):
    period = forms.ChoiceField(
        choices=[
            ("24h", "Last 24 hours"),
            ("7d", "Last 7 days (today and the 6 before)"),
            ("30d", "Last 30 days (today and the 29 before)"),
        ]
        + [("custom", "Dates")],
        required=False,
    )
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput({"type": "date"}))
    workflow = forms.ModelChoiceField(
        Workflow.objects.only("id", "slug", "name").order_by("slug"),
        required=False,
        to_field_name="slug",
        empty_label="All workflows",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        period = data.get("period") or ("custom" if data.get("since") else "7d")
        data["period"] = period
        if period != "custom":
            # 24 hours roll; 7 and 30 days are calendar days, today and the
            # days before it, so that each bar of the daily trend is a whole
            # day (a rolling start would make the first one a sliver of a day).
            data["end"] = timezone.now()
            if period == "24h":
                data["start"] = data["end"] - PERIODS[period]
            else:
                first = timezone.localdate() - (PERIODS[period] - timedelta(days=1))
                data["start"] = _midnight(first)
            return data
        since, until = data.get("since"), data.get("until") or timezone.localdate()
        if since is None:
            raise forms.ValidationError("Choose a start date, or a preset period.")
        if until < since:
            raise forms.ValidationError("The end date is before the start date.")
        if (until - since).days >= MAX_PERIOD_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_PERIOD_DAYS} days.")
        data["start"], data["end"] = _midnight(since), _midnight(until + timedelta(days=1))
        return data


@require_GET
@console_view("runs.view_run")
def dashboard(request: HttpRequest) -> HttpResponse:
    """Figures per workflow version over a period, and a daily trend.
    Without parameters: the last 7 days of every workflow."""
    form = DashboardForm(request.GET or {"period": "7d"})
    context: dict[str, Any] = {"form": form, "nav": "dashboard"}
    status = 200
    if form.is_valid():
        context.update(_dashboard_figures(form.cleaned_data))
    elif not is_partial(request):
        status = 400  # a partial with errors is still swapped in (htmx skips 4xx)
    template = (
        "console/dashboard/partials/_body.html"
        if is_partial(request)
        else "console/dashboard/index.html"
    )
    return render(request, template, context, status=status)


def _dashboard_figures(data: dict[str, Any]) -> dict[str, Any]:
    since, until, workflow = data["start"], data["end"], data.get("workflow")
    report = metrics.period_report(since=since, until=until, workflow=workflow)
    rows, trend = report.versions, report.trend
    charts = trend_charts(trend)
    figures = [_figures(row) for row in rows]
    return {
        "rows": figures,
        "charts": charts,
        "since": since,
        "until": until,
        "workflow": workflow,
        **time_figures(since=since, until=until, rows=figures),
    }


def _figures(row: metrics.VersionMetrics) -> dict[str, Any]:
    """One dashboard row, formatted (rates as percentages, money in USD)."""

    def usd(value) -> str:
        return "—" if value is None else f"${value:,.4f}"

    def pct(value: float) -> str:
        return f"{value:.1%}"

    return {
        "metrics": row,
        "success_rate": pct(row.success_rate),
        "error_rate": pct(row.error_rate),
        "escalation_rate": pct(row.escalation_rate),
        "cache_hit_rate": pct(row.cache_hit_rate),
        "p50": human_ms(row.latency_p50_ms) or "—",
        "p95": human_ms(row.latency_p95_ms) or "—",
        "cost": usd(row.cost_usd),
        "cost_per_run": usd(row.cost_per_run),
        "cost_per_success": usd(row.cost_per_success),
        # Model and vendor spend apart, under each total.
        "cost_split": _split(usd(row.model_usd), usd(row.vendor_usd)),
        "per_run_split": _split(usd(row.model_per_run), usd(row.vendor_per_run)),
        "per_success_split": _split(usd(row.model_per_success), usd(row.vendor_per_success)),
        "credits": _credits(row.credits),
        "cache_saved": usd(row.cache_saved_usd),
        "cache_saved_credits": _credits(row.cache_saved_credits),
        "dedup_saved": usd(row.dedup_saved_usd),
        "dedup_saved_credits": _credits(row.dedup_saved_credits),
    }


def _split(model: str, vendor: str) -> str:
    return f"model {model} · vendors {vendor}"


def _credits(by_vendor: dict[str, int]) -> str:
    """Credits per vendor, e.g. "enrichco 150 cr"; '' for none."""
    return ", ".join(f"{vendor} {credits:,} cr" for vendor, credits in sorted(by_vendor.items()))


# --- runs list ---------------------------------------------------------------


APPROVAL_FILTERS = [
    ("", "Asked or not"),
    ("asked", "Asked a person (any approval request)"),
    ("decided", "A request was decided"),
    ("pending", "A request is pending"),
    ("breached", "A request went past its SLA"),
]
# A datetime-local input that keeps the seconds and their fractions: a
# drill-down link carries the dashboard's bounds exactly.
DATETIME_INPUT = {"type": "datetime-local", "step": "any"}


def approval_filter(kind: str) -> Q:
    """The runs with an approval request of that kind (APPROVAL_FILTERS)."""
    requests = ApprovalRequest.objects.filter(run_id=OuterRef("pk"))
    if kind == "decided":
        requests = requests.filter(status__in=("approved", "rejected"), decided_at__isnull=False)
    elif kind == "pending":
        requests = requests.filter(status="pending")
    elif kind == "breached":
        requests = requests.filter(breached_at__isnull=False)
    return Q(Exists(requests))


class RunFilterForm(forms.Form):
    workflow = forms.ModelChoiceField(
        Workflow.objects.only("id", "slug", "name").order_by("slug"),
        required=False,
        to_field_name="slug",
        empty_label="All workflows",
    )
    version = forms.ModelChoiceField(
        WorkflowVersion.objects.select_related("workflow")
        .only("id", "number", "workflow__slug")
        .order_by("workflow__slug", "-number"),
        required=False,
        empty_label="All versions",
    )
    status = forms.ChoiceField(choices=[("", "Any status"), *RunStatus.choices], required=False)
    waiting_for = forms.ChoiceField(
        choices=[
            ("", "Waiting for anything"),
            ("approval", "A person (review)"),
            ("paused", "A kill switch (paused)"),
            ("breaker", "A circuit breaker"),
            ("retry", "A retry's backoff"),
        ],
        required=False,
        label="Waiting for",
    )
    dead = forms.BooleanField(required=False, label="Dead-lettered only")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput({"type": "date"}))
    until = forms.DateField(required=False, label="To", widget=forms.DateInput({"type": "date"}))
    outcome = forms.CharField(required=False, max_length=80, help_text="Outcome label")
    success = forms.ChoiceField(
        choices=[("", "Any result"), ("yes", "Successful outcome"), ("no", "Not successful")],
        required=False,
    )
    approvals = forms.ChoiceField(choices=APPROVAL_FILTERS, required=False, label="People")
    # The dashboard's exact period (its links drill down to the runs behind a figure).
    created_from = forms.DateTimeField(
        required=False,
        label="Created at or after",
        widget=forms.DateTimeInput(DATETIME_INPUT, format=DATETIME_FORMAT),
    )
    created_before = forms.DateTimeField(
        required=False,
        label="Created before",
        widget=forms.DateTimeInput(DATETIME_INPUT, format=DATETIME_FORMAT),
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    after = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        if data.get("since") and data.get("until") and data["until"] < data["since"]:
            raise forms.ValidationError("The end date is before the start date.")
        return data

    def filtered(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        data = self.cleaned_data
        if data.get("workflow"):
            runs = runs.filter(workflow=data["workflow"])
        if data.get("version"):
            runs = runs.filter(version=data["version"])
        if data.get("status"):
            runs = runs.filter(status=data["status"])
        waiting_for = data.get("waiting_for")
        if waiting_for == "breaker":
            runs = runs.filter(status=RunStatus.WAITING, wait_reason__startswith="breaker:")
        elif waiting_for:
            runs = runs.filter(status=RunStatus.WAITING, wait_reason=waiting_for)
        if data.get("dead"):
            runs = runs.filter(dead_lettered_at__isnull=False)
        if data.get("since"):
            runs = runs.filter(created_at__gte=_midnight(data["since"]))
        if data.get("until"):
            runs = runs.filter(created_at__lt=_midnight(data["until"] + timedelta(days=1)))
        if data.get("outcome"):
            runs = runs.filter(outcome=data["outcome"])
        if data.get("success"):
            runs = runs.filter(success=data["success"] == "yes")
        if data.get("approvals"):
            runs = runs.filter(approval_filter(data["approvals"]))
        if data.get("created_from"):
            runs = runs.filter(created_at__gte=data["created_from"])
        if data.get("created_before"):
            runs = runs.filter(created_at__lt=data["created_before"])
        return runs


# The columns a list row shows: the wide ones (input, error) stay unread.
LIST_FIELDS = (
    "id", "status", "wait_reason", "current_step", "outcome", "success", "cost_usd",
    "steps_executed", "created_at", "finished_at", "dead_lettered_at", "workflow__slug",
    "version__number",
)  # fmt: skip


@require_GET
@console_view("runs.view_run")
def run_list(request: HttpRequest) -> HttpResponse:
    """Runs, newest first, filtered; keyset pages of PAGE_SIZE by id, so a
    page costs the same on the last page as on the first."""
    form = RunFilterForm(request.GET)
    context: dict[str, Any] = {"form": form, "nav": "runs", "runs": [], "page": {}}
    status = 200
    if form.is_valid():
        context.update(_run_page(form))
    elif not is_partial(request):
        status = 400
    template = (
        "console/runs/partials/_table.html" if is_partial(request) else "console/runs/list.html"
    )
    return render(request, template, context, status=status)


def _run_page(form: RunFilterForm) -> dict[str, Any]:
    runs = form.filtered(Run.objects.select_related("workflow", "version").only(*LIST_FIELDS))
    before, after = form.cleaned_data.get("before"), form.cleaned_data.get("after")
    if after is not None:  # going back towards the newest: read upwards, show downwards
        rows = list(runs.filter(id__gt=after).order_by("id")[: PAGE_SIZE + 1])
        newer = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE][::-1]
        older = True
    else:
        if before is not None:
            runs = runs.filter(id__lt=before)
        rows = list(runs.order_by("-id")[: PAGE_SIZE + 1])
        older = len(rows) > PAGE_SIZE
        rows = rows[:PAGE_SIZE]
        newer = before is not None
    for run in rows:
        run.duration_text = human_ms(_duration_ms(run))
    query = request_query(form, drop=("before", "after"))
    page = {
        "older": f"?{query}&before={rows[-1].pk}" if older and rows else "",
        "newer": f"?{query}&after={rows[0].pk}" if newer and rows else "",
    }
    return {"runs": rows, "page": page}


def request_query(form: forms.Form, *, drop: tuple[str, ...] = ()) -> str:
    """The form's submitted values as a query string, without `drop`."""
    query = form.data.copy()
    for name in drop:
        query.pop(name, None)
    return query.urlencode()


# --- run timeline ------------------------------------------------------------


@require_GET
@console_view("runs.view_run")
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    """A run's timeline: every step attempt, the decisions taken, totals and
    versions. While the run is active the timeline polls itself every 2 s;
    once the run is terminal a poll gets 286, which stops htmx polling."""
    run = get_object_or_404(
        Run.objects.select_related(
            "workflow",
            "version",
            "policy_version__policy",
            "role_version__role",
            "replay_of",
        ),
        pk=run_id,
    )
    context = _timeline(request, run)
    if is_partial(request):
        response = render(request, "console/runs/partials/_timeline.html", context)
        if run.is_terminal:
            stop = HttpResponseStopPolling(response.content)
            stop["Content-Type"] = response["Content-Type"]
            return stop
        return response
    return render(request, "console/runs/detail.html", context)


def _timeline(request: HttpRequest, run: Run) -> dict[str, Any]:
    steps = list(StepRun.objects.filter(run=run).order_by("seq", "attempt"))
    for step in steps:
        step.shown_input = _shown(request, step.input)
        step.shown_output = _shown(request, step.output)
        step.shown_error = _shown_text(request, step.error)
    approvals = list(
        ApprovalRequest.objects.filter(run=run).select_related("decided_by").order_by("seq")
    )
    for approval in approvals:
        approval.shown_draft = _shown(request, approval.draft)
        approval.shown_edited = _shown(request, approval.edited_draft)
        approval.shown_diff = _shown_text(request, approval.edit_diff)
        approval.shown_reason = _shown_text(request, approval.decision_reason)
    calls = list(ToolCallRecord.objects.filter(run=run).order_by("seq", "id"))
    for call in calls:
        call.shown_args = _shown(request, call.args)
        call.shown_result = _shown(request, call.result)
        call.shown_error = _shown_text(request, call.error)
        call.shown_note = _shown_text(request, call.reconcile_note)
    scores = list(
        Score.objects.filter(run=run).select_related("rubric_version__rubric").order_by("seq")
    )
    user = request.user
    return {
        "run": run,
        "nav": "runs",
        "steps": steps,
        "approvals": approvals,
        "calls": calls,
        "scores": scores,
        "run_input": _shown(request, run.input),
        "run_error": _shown_text(request, run.error),
        "saved_usd": sum((s.cost_saved_usd for s in steps), start=0),
        "run_credits": _credits(run.credits or {}),
        "saved_credits": _credits(_saved_credits(steps)),
        "duration_ms": _duration_ms(run),
        "can_retry": run.status == RunStatus.FAILED and user.has_perm("runs.retry_run"),
        "can_cancel": not run.is_terminal and user.has_perm("runs.cancel_run"),
        "redacted": not user.has_perm("runs.view_personal_data"),
        **run_graph_context(run, steps, approvals),
    }


def _saved_credits(steps: list[StepRun]) -> dict[str, int]:
    saved: dict[str, int] = {}
    for step in steps:
        if step.credits_saved:
            saved[step.vendor] = saved.get(step.vendor, 0) + step.credits_saved
    return saved


def _duration_ms(run: Run) -> float | None:
    if run.finished_at is None:
        return None
    return (run.finished_at - run.created_at).total_seconds() * 1000


@require_POST
@console_view("runs.retry_run")
def run_retry(request: HttpRequest, run_id: int) -> HttpResponse:
    """Re-queue a failed run at its failed step (earlier outputs are kept)."""
    try:
        engine.retry_run(run_id=run_id, actor=_actor(request))
    except engine.EngineError as exc:
        messages.error(request, f"Run {run_id} was not retried: {exc}")
    else:
        messages.success(request, f"Run {run_id} is queued again at its failed step.")
    return after_post(request, reverse("console-run-detail", args=[run_id]))


@require_POST
@console_view("runs.cancel_run")
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    """Cancel a run that has not finished; a worker holding it stops at its
    next checkpoint."""
    reason = f"cancelled by {request.user.get_username()} in the console"
    try:
        engine.cancel_run(run_id=run_id, reason=reason, actor=_actor(request))
    except engine.EngineError as exc:
        messages.error(request, f"Run {run_id} was not cancelled: {exc}")
    else:
        messages.success(request, f"Run {run_id} is cancelled.")
    return after_post(request, reverse("console-run-detail", args=[run_id]))


# --- dead letters --------------------------------------------------------------


def _dead_runs() -> QuerySet[Run]:
    """Dead-lettered failed runs, each with the error type of the attempt
    that failed and whether it was retryable, as kept on the run when it
    was dead-lettered (with its step, `dead_step`): the page groups the
    dead runs from their covering partial index (run_dead_letter_cover)
    alone, and never reads their step runs."""
    live_dead = Q(status=RunStatus.FAILED, dead_lettered_at__isnull=False, mode=RunMode.LIVE)
    return Run.objects.filter(live_dead).annotate(
        error_type=F("dead_error_type"), retryable=F("dead_retryable")
    )


def group_key(workflow_id: int, step: str, error_type: str) -> str:
    # Step keys are slugs (no "|"); the error type goes last, so it may hold anything.
    return f"{workflow_id}|{step}|{error_type}"


def _parse_group(value: str) -> tuple[int, str, str] | None:
    parts = value.split("|", 2)
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return int(parts[0]), parts[1], parts[2]


def _dead_groups() -> list[dict[str, Any]]:
    """The largest DEAD_GROUPS_SHOWN groups, with their link and dates
    formatted here: a page of many groups renders in one pass."""
    rows = list(
        _dead_runs()
        .values("workflow_id", "workflow__slug", "error_type", step=F("dead_step"))  # type: ignore[misc]  # annotated by _dead_runs
        .annotate(
            runs=Count("id"),
            oldest=Min("dead_lettered_at"),
            newest=Max("dead_lettered_at"),
            not_retryable=Count("id", filter=Q(retryable=False)),
        )
        .order_by("-runs", "workflow__slug", "step")[:DEAD_GROUPS_SHOWN]
    )
    base = reverse("console-deadletter-list")
    for row in rows:
        row["current_step"] = row.pop("step")  # the step that failed, as the run list names it
        row["key"] = group_key(row["workflow_id"], row["current_step"], row["error_type"])
        row["url"] = f"{base}?{urlencode({'group': row['key']})}"
        row["oldest"] = timezone.localtime(row["oldest"]).strftime("%Y-%m-%d %H:%M")
        row["newest"] = timezone.localtime(row["newest"]).strftime("%Y-%m-%d %H:%M")
        row["cause"] = _dead_cause(row["runs"], row["not_retryable"], row["error_type"])
    return rows


def _dead_cause(runs: int, not_retryable: int, error_type: str) -> str:
    """Why a group's runs are dead, for the operator deciding what to do:
    an error no retry can mend as it stands (a bug, invalid arguments, a
    refusal: fix, then retry), a retryable one whose attempts ran out
    (retrying may do; an outage held by a circuit breaker spends none), or
    an outage that outlasted the runs' wall-time budget."""
    if error_type == "outage":
        return "an outage outlasted the wall-time budget"
    if not_retryable == runs:
        return "needs a fix: not retryable as it stands"
    if not not_retryable:
        return "attempts exhausted on a retryable error"
    return f"mixed: {not_retryable} not retryable, {runs - not_retryable} attempts exhausted"


def _group_condition(keys: list[str]) -> Q | None:
    """The dead runs of the given group keys (None: a key is malformed)."""
    condition = Q(pk__in=[])
    for key in keys:
        parsed = _parse_group(key)
        if parsed is None:
            return None
        workflow_id, step, error_type = parsed
        condition |= Q(workflow_id=workflow_id, dead_step=step, error_type=error_type)
    return condition


@require_GET
@console_view("runs.view_run")
def deadletter_list(request: HttpRequest) -> HttpResponse:
    """Dead runs grouped by workflow, failed step and error type, and the
    newest dead runs (of the chosen group, if one is chosen)."""
    chosen = request.GET.get("group", "")
    runs = _dead_runs().select_related("workflow", "version").only(*LIST_FIELDS, "error", "seq")
    if chosen:
        condition = _group_condition([chosen])
        if condition is None:
            return HttpResponseBadRequest("Unknown dead-letter group.")
        runs = runs.filter(condition)
    context = {
        "nav": "dead",
        "groups": _dead_groups(),
        "runs": list(runs.order_by("-dead_lettered_at", "-id")[:DEAD_RUNS_SHOWN]),
        "chosen": chosen,
        "shown_limit": DEAD_RUNS_SHOWN,
        "groups_limit": DEAD_GROUPS_SHOWN,
        "can_retry": request.user.has_perm("runs.retry_run"),
    }
    retried = context["retried"] = _retried(request.GET.get("retried", ""))
    if retried is not None:
        for run in retried["runs"]:
            run.shown_error = _shown_text(request, run.error)
    for run in context["runs"]:
        run.shown_error = _shown_text(request, run.error)
    template = (
        "console/deadletters/partials/_body.html"
        if is_partial(request)
        else "console/deadletters/list.html"
    )
    return render(request, template, context)


@require_POST
@console_view("runs.retry_run")
def deadletter_retry(request: HttpRequest) -> HttpResponse:
    """Bulk retry from the failed step, in two posts. The first (groups
    and/or run ids) answers with a confirmation naming how many dead runs
    that is (at most BULK_LIMIT, oldest first) and carrying their ids; the
    second (`confirm`) retries exactly those ids, one engine call each, and
    reports which were retried and which were not."""
    if request.POST.get("confirm"):
        return _bulk_retry(request, request.POST.getlist("run"))
    values = request.POST.getlist("run")
    condition = _group_condition(request.POST.getlist("group"))
    if condition is None or not all(value.isdigit() for value in values):
        return HttpResponseBadRequest("The selection is not valid.")
    # Resolved now, shown as a count, carried as ids: the second post
    # retries exactly these runs even if more die meanwhile.
    selected = _dead_runs().filter(condition | Q(pk__in=[int(v) for v in values]))
    run_ids = list(
        selected.order_by("dead_lettered_at", "id").values_list("id", flat=True)[:BULK_LIMIT]
    )
    # Errors that were not worth another attempt when they happened
    # (invalid arguments, a refusal, a bug): retried as they stand, with the
    # same version and inputs, they will most likely fail the same way.
    doubtful = list(
        _dead_runs()
        .filter(pk__in=run_ids, retryable=False)  # type: ignore[misc]  # annotated by _dead_runs
        .values("error_type")
        .annotate(runs=Count("id"))
        .order_by("-runs", "error_type")
    )
    context = {
        "nav": "dead",
        "run_ids": run_ids,
        "total": selected.count() if len(run_ids) == BULK_LIMIT else len(run_ids),
        "limit": BULK_LIMIT,
        "doubtful": doubtful,
        "doubtful_runs": sum(row["runs"] for row in doubtful),
    }
    if not run_ids:
        messages.error(request, "Nothing to retry: choose a group or some dead runs.")
        return after_post(request, reverse("console-deadletter-list"))
    template = (
        "console/deadletters/partials/_confirm.html"
        if is_partial(request)
        else "console/deadletters/confirm.html"
    )
    return render(request, template, context)


def _bulk_retry(request: HttpRequest, values: list[str]) -> HttpResponse:
    run_ids = [int(value) for value in values if value.isdigit()][:BULK_LIMIT]
    retried, refused = [], []
    for run_id in run_ids:
        try:
            engine.retry_run(run_id=run_id, actor=_actor(request))
        except engine.EngineError as exc:
            refused.append(f"run {run_id}: {exc}")
        else:
            retried.append(run_id)
    if retried:
        shown = ", ".join(str(run_id) for run_id in retried[:50])
        more = ", …" if len(retried) > 50 else ""
        messages.success(
            request, f"Retried {len(retried)} run(s) from their failed step: {shown}{more}."
        )
    if refused:
        messages.error(
            request, f"{len(refused)} run(s) were not retried: " + "; ".join(refused[:20])
        )
    if not run_ids:
        messages.error(request, "Nothing to retry.")
    url = reverse("console-deadletter-list")
    if retried:  # the list then reports what became of each
        url += "?" + urlencode({"retried": ",".join(str(run_id) for run_id in retried)})
    return after_post(request, url)


def _retried(value: str) -> dict[str, Any] | None:
    """The runs of a bulk retry as they stand now (`?retried=1,2,3`)."""
    ids = [int(part) for part in value.split(",") if part.isdigit()][:BULK_LIMIT]
    if not ids:
        return None
    runs = list(
        Run.objects.filter(pk__in=ids)
        .select_related("workflow")
        .only(
            "id", "status", "wait_reason", "stop_reason", "error", "workflow__slug", "current_step"
        )
        .order_by("id")
    )
    statuses = Counter(_became(run) for run in runs)
    became = ", ".join(f"{count} {status}" for status, count in statuses.most_common())
    return {
        "runs": runs,
        "summary": f"{len(runs)} retried → {became}",
        "active": any(not run.is_terminal for run in runs),
        "url": f"{reverse('console-deadletter-list')}?{urlencode({'retried': value})}",
    }


def _became(run: Run) -> str:
    """What a retried run is now, with why it waits or stopped: "running",
    "waiting: approval", "stopped: budget", "failed"."""
    status = run.get_status_display().lower()
    why = run.stop_reason if run.status == RunStatus.STOPPED else run.wait_reason
    return f"{status}: {why}" if why else status
