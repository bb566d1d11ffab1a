"""Graphs in admin: the draft's graph on a workflow's change page, with
Publish's problems marked on the steps they concern, and each published
version's graph on its page.

The draft's graph is drawn from the saved draft when the page loads, and
redrawn from the form's current values (nothing saved) when a field changes
or the operator clicks *Redraw*: htmx posts the whole change form to
`<id>/change/graph/`, which builds the same snapshot Publish would and runs
the same validation on it.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import PermissionDenied
from django.forms import BaseFormSet, ModelForm
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.templatetags.static import static
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from runs import graph_svg
from runs.engine.definition import problems_by_step, snapshot, validate_draft
from runs.graphs import version_graph
from runs.models import Step, Workflow, WorkflowVersion

NUMBERS: dict[str, type] = {
    "max_attempts": int,
    "max_visits": int,
    "cache_ttl_s": int,
    "backoff_base_s": float,
    "backoff_cap_s": float,
    "timeout_s": float,
}
STEP_FIELDS = ("kind", "config", "edges", *NUMBERS, "output_checks")


def draft_graph(workflow: Workflow, data: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """The context of the draft graph partial: the SVG with each problem on
    its step, and the problems listed (those of no step first)."""
    problems = problems + validate_draft(data)
    keys = list(data.get("steps") or {})
    grouped = problems_by_step(problems, keys)
    autonomy = workflow.policy.autonomy if workflow.policy_id and workflow.policy else []
    graph = graph_svg.graph_of(data, approve_tools=graph_svg.approve_tools_of(autonomy))
    svg: SafeString = graph_svg.render(
        graph_svg.layout(graph),
        graph_svg.Overlay(problems={k: v for k, v in grouped.items() if k}),
        title=f"Graph of the draft of {workflow.slug}",
        description=(
            f"{len(keys)} steps; {len(problems)} problem(s) would stop Publish"
            + (", each marked on its step with a red outline." if problems else ".")
        ),
        element_id="draft-graph-svg",
    )
    return {
        "svg": svg,
        "problems": problems,
        "general": grouped.get("", []),
        "by_step": [(key, grouped[key]) for key in keys if key in grouped],
        "workflow": workflow,
    }


class WorkflowGraphAdmin:
    """For the workflow admin: the graph endpoint and the change page's context."""

    def get_urls(self) -> list[Any]:
        urls = super().get_urls()  # type: ignore[misc]  # the ModelAdmin's
        view = self.admin_site.admin_view(self.draft_graph_view)  # type: ignore[attr-defined]
        return [path("<int:object_id>/change/graph/", view, name="runs-workflow-graph"), *urls]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context=None
    ):
        workflow = Workflow.objects.select_related("policy").filter(pk=object_id).first()
        extra = dict(extra_context or {})
        if workflow is not None:
            extra["draft_graph"] = draft_graph(workflow, snapshot(workflow), [])
            extra["graph_url"] = reverse("admin:runs-workflow-graph", args=[workflow.pk])
            extra["versions"] = list(
                workflow.versions.published()
                .order_by("-number")
                .values_list("number", flat=True)[:20]
            )
        return super().change_view(request, object_id, form_url, extra)  # type: ignore[misc]

    def draft_graph_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """GET: the saved draft's graph. POST (the change form): the graph of
        the form's values, saving nothing."""
        workflow = Workflow.objects.select_related("policy").filter(pk=object_id).first()
        if workflow is None:
            raise Http404
        if request.method == "POST":
            if not self.has_change_permission(request, workflow):  # type: ignore[attr-defined]
                raise PermissionDenied
            data, problems = self._posted_snapshot(request, workflow)
        else:
            if not self.has_view_permission(request, workflow):  # type: ignore[attr-defined]
                raise PermissionDenied
            data, problems = snapshot(workflow), []
        context = {
            "draft_graph": draft_graph(workflow, data, problems),
            "graph_url": reverse("admin:runs-workflow-graph", args=[workflow.pk]),
            "has_change_permission": self.has_change_permission(request, workflow),  # type: ignore[attr-defined]
        }
        return render(request, "admin/runs/workflow/_draft_graph.html", context)

    def _posted_snapshot(
        self, request: HttpRequest, workflow: Workflow
    ) -> tuple[dict[str, Any], list[str]]:
        """The snapshot the posted change form describes, and the form's own
        errors as problems (a config that is not JSON, a missing key)."""
        form_class = self.get_form(request, workflow, change=True)  # type: ignore[attr-defined]
        form: ModelForm = form_class(request.POST, request.FILES, instance=workflow)
        formsets, _ = self._create_formsets(request, workflow, change=True)  # type: ignore[attr-defined]
        problems = [f"{name}: {error}" for name, errors in _errors(form) for error in errors]
        values = form.cleaned_data if form.is_valid() else {}
        data: dict[str, Any] = {
            "workflow": workflow.slug,
            "entry": values.get("entry_step", form.data.get("entry_step", workflow.entry_step)),
            "input_schema": values.get("input_schema", workflow.input_schema),
            "sensitive_fields": list(
                values.get("sensitive_fields", workflow.sensitive_fields) or []
            ),
            "untrusted_fields": list(
                values.get("untrusted_fields", workflow.untrusted_fields) or []
            ),
            "steps": {},
        }
        rows = []
        for formset in formsets:
            problems.extend(str(error) for error in _non_form_errors(formset))
            for index, step_form in enumerate(formset.forms):
                row = _step_row(step_form, problems)
                if row is not None:
                    rows.append((row.pop("position", 0), index, row))
        for _, _, row in sorted(rows, key=lambda item: (item[0], item[1])):
            data["steps"][row.pop("key")] = row
        return data, problems


def _errors(form: ModelForm) -> list[tuple[str, list[str]]]:
    if form.is_valid():
        return []
    return [(name, [str(e) for e in errors]) for name, errors in form.errors.items()]


def _non_form_errors(formset: BaseFormSet) -> list[str]:
    formset.is_valid()
    return [str(error) for error in formset.non_form_errors()]


def _step_row(form, problems: list[str]) -> dict[str, Any] | None:
    """One inline step as a snapshot's step (its key and position too);
    None for a row marked for deletion or left blank."""
    valid = form.is_valid()
    if valid and (form.cleaned_data.get("DELETE") or not form.cleaned_data):
        return None
    if valid:
        values = form.cleaned_data
        valid_row = {"key": values["key"], "position": values.get("position") or 0}
        valid_row.update({name: values.get(name) for name in STEP_FIELDS})
        return valid_row
    raw = {name: form.data.get(form.add_prefix(name), "") for name in ("key", "kind", *STEP_FIELDS)}
    if form.data.get(form.add_prefix("DELETE")):
        return None
    key = raw["key"] or f"(row {form.prefix})"
    for name, errors in form.errors.items():
        problems.extend(f"step {key!r}: {name}: {error}" for error in errors)
    row: dict[str, Any] = {"key": key, "position": 0, "kind": raw["kind"]}
    for name, kind in NUMBERS.items():
        row[name] = _number(raw[name], kind, getattr(Step._meta.get_field(name), "default", 0))
    for name in ("config", "edges"):
        try:
            row[name] = json.loads(raw[name] or "{}")
        except ValueError:
            row[name] = {}
    return row


def _number(text: str, kind: type, default: Any) -> Any:
    """A number the form sent, or the field's default when it is not one
    (the form has reported it already)."""
    try:
        return kind(text)
    except (TypeError, ValueError):
        return default


class VersionGraphAdmin:
    """For the version admin: the version's graph above its definition."""

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        fields = [f for f in super().get_readonly_fields(request, obj) if f != "graph"]  # type: ignore[misc]
        # The picture before the JSON it draws.
        at = fields.index("pretty_definition") if "pretty_definition" in fields else len(fields)
        return (*fields[:at], "graph", *fields[at:])

    def graph(self, obj: WorkflowVersion) -> SafeString:
        # Admin pages do not load the graph's stylesheet: the field brings it.
        return format_html(
            '<link rel="stylesheet" href="{}"><div class="graph-box">{}</div>',
            static("console/graph.css"),
            version_graph(obj, element_id=f"version-graph-{obj.pk}"),
        )

    graph.short_description = "Graph"  # type: ignore[attr-defined]
