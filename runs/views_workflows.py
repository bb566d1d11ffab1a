"""Console pages for workflows: the list, a workflow's page (its versions,
its recent runs), starting a run with an input typed into a form generated
from the workflow's input schema, and publishing the draft.

Seeing needs `runs.view_workflow`; starting a run `runs.add_run` (as an
API key with the write scope may); publishing `runs.publish_workflow` (as
the admin action). Starting calls `runs.engine.start_run` and publishing
`runs.engine.publish_workflow`, the functions the API and admin call.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.contrib import messages
from django.db.models import Max, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from lib.console import after_post, console_view, is_partial
from runs import engine
from runs.engine.definition import freeze_candidate, snapshot
from runs.input_form import RunInputForm
from runs.models import Run, RunMode, Workflow, WorkflowVersion
from runs.views import LIST_FIELDS, _actor

VERSIONS_SHOWN = 20
RUNS_SHOWN = 20


@require_GET
@console_view("runs.view_workflow")
def workflow_list(request: HttpRequest) -> HttpResponse:
    """Every workflow with its latest published version."""
    workflows = (
        Workflow.objects.select_related("role", "policy")
        .annotate(latest=Max("versions__number", filter=Q(versions__candidate=False)))
        .order_by("name", "slug")
    )
    return render(
        request, "console/workflows/list.html", {"workflows": workflows, "nav": "workflows"}
    )


def _schema(workflow: Workflow, version: WorkflowVersion | None) -> dict[str, Any] | None:
    """The schema a new run's input is checked against: the latest version's."""
    if version is None:
        return workflow.input_schema
    schema = version.definition.get("input_schema")
    return schema if isinstance(schema, dict) else None


def _from_run(request: HttpRequest, workflow: Workflow, schema: dict | None) -> dict[str, Any]:
    """Initial values from a recorded run's input (`?from_run=<id>`); the
    fields the workflow marks sensitive stay empty for someone who may not
    see personal data."""
    raw = request.GET.get("from_run", "")
    if not raw.isdigit():
        return {}
    run = get_object_or_404(Run.objects.only("id", "input", "workflow_id"), pk=int(raw))
    if run.workflow_id != workflow.pk:
        return {}
    value = dict(run.input) if isinstance(run.input, dict) else {}
    if not request.user.has_perm("runs.view_personal_data"):
        for name in workflow.sensitive_fields or []:
            value.pop(name, None)
    return RunInputForm.initial_from(schema, value)


def _page(
    request: HttpRequest,
    workflow: Workflow,
    *,
    form: RunInputForm | None = None,
    token: str = "",
) -> dict[str, Any]:
    versions = list(
        WorkflowVersion.objects.published()
        .filter(workflow=workflow)
        .select_related("published_by")
        .defer("definition")
        .order_by("-number")[:VERSIONS_SHOWN]
    )
    latest = (
        WorkflowVersion.objects.filter(pk=versions[0].pk).only("id", "number", "definition").get()
        if versions
        else None
    )
    schema = _schema(workflow, latest)
    user = request.user
    if form is None and user.has_perm("runs.add_run"):
        form = RunInputForm(schema, initial=_from_run(request, workflow, schema))
    runs = list(
        Run.objects.filter(workflow=workflow)
        .select_related("workflow", "version")
        .only(*LIST_FIELDS)
        .order_by("-created_at", "-id")[:RUNS_SHOWN]
    )
    return {
        "nav": "workflows",
        "workflow": workflow,
        "latest": latest,
        "versions": versions,
        "runs": runs,
        "form": form,
        "token": token or uuid.uuid4().hex,
        "from_run": request.GET.get("from_run", ""),
        "draft_changed": _draft_changed(workflow, latest),
        "can_start": user.has_perm("runs.add_run"),
        "can_publish": user.has_perm("runs.publish_workflow"),
    }


def _draft_changed(workflow: Workflow, latest: WorkflowVersion | None) -> bool:
    """The draft differs from the latest version (there is something to publish)."""
    if latest is None:
        return True
    return snapshot(workflow) != latest.definition


@require_GET
@console_view("runs.view_workflow")
def workflow_detail(request: HttpRequest, slug: str) -> HttpResponse:
    """A workflow: its versions, recent runs, the run form and Publish."""
    workflow = get_object_or_404(Workflow.objects.select_related("role", "policy"), slug=slug)
    return render(request, "console/workflows/detail.html", _page(request, workflow))


@require_POST
@console_view(("runs.view_workflow", "runs.add_run"))
def workflow_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Start a run with the form's input (the engine picks the version, as
    for the API: the latest), then go to the run's page. Invalid input
    answers the form again, with every value as typed and each error on its
    field. The form's one-time token is the run's idempotency key: a form
    posted twice starts one run."""
    workflow = get_object_or_404(Workflow.objects.select_related("role", "policy"), slug=slug)
    latest = workflow.current_version
    form = RunInputForm(_schema(workflow, latest), request.POST)
    token = request.POST.get("token", "")
    token = token if len(token) == 32 and token.isalnum() else uuid.uuid4().hex
    # A dry run is a sandbox run: write and egress tools are stubbed at the
    # gate (they record what they would have done), approvals pass as
    # proposed, nothing is remembered. It runs the draft when the draft has
    # changed since the latest version (frozen as a candidate, never live).
    dry = request.POST.get("mode") == RunMode.DRY_RUN
    if form.is_valid():
        try:
            version = None
            if dry and _draft_changed(workflow, latest):
                version = freeze_candidate(workflow=workflow)
            # As the API calls it: the engine picks the version to run.
            started = engine.start_run(
                workflow=workflow,
                input=form.to_input(),
                idempotency_key=f"console:{token}",
                mode=RunMode.DRY_RUN if dry else RunMode.LIVE,
                version=version,
            )
        except engine.InvalidInput as exc:
            form.put_errors(exc.fields)
        except engine.PublishError as exc:
            form.add_error(None, f"The draft cannot run: {'; '.join(exc.problems)}")
        except (engine.QueueFull, engine.InvalidState) as exc:
            form.add_error(None, str(exc))
        else:
            what = "Dry run" if dry else "Run"
            where = " of the draft" if version is not None else ""
            note = " (write tools stubbed: nothing leaves)" if dry else ""
            messages.success(
                request,
                f"{what} {started.run.pk}{where} started by {_actor(request)} from the console"
                f"{note}.",
            )
            return after_post(request, reverse("console-run-detail", args=[started.run.pk]))
    context = _page(request, workflow, form=form, token=token)
    if is_partial(request):  # htmx swaps only 2xx answers: the errors come as 200
        return render(request, "console/workflows/partials/_run_form.html", context)
    return render(request, "console/workflows/detail.html", context, status=400)


@require_POST
@console_view(("runs.view_workflow", "runs.publish_workflow"))
def workflow_publish(request: HttpRequest, slug: str) -> HttpResponse:
    """Publish the draft as the next version (`publish_workflow`, as the
    admin action does); a refusal lists every problem."""
    workflow = get_object_or_404(Workflow, slug=slug)
    try:
        version = engine.publish_workflow(workflow=workflow, user=request.user)
    except engine.PublishError as exc:
        for problem in exc.problems:
            messages.error(request, f"{workflow.slug} not published: {problem}")
    else:
        messages.success(request, f"Published {version}.")
    return after_post(request, reverse("console-workflow-detail", args=[workflow.slug]))
