"""Admin for evaluation: eval sets and cases (by hand, from reviews, from a
JSONL file), experiments, publish gates, gate overrides, shadow rollouts.

Actions call evals' domain functions; the gate itself is enforced where
versions are published (runs.engine.publish_workflow), not here.
"""

from __future__ import annotations

import io

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from approvals.models import ReplaySet
from config.admin_base import ReadOnlyAdmin
from evals import cases, experiments, shadow
from evals.checks import validate_expectations
from evals.models import (
    EvalCase,
    EvalSet,
    Experiment,
    ExperimentArm,
    GateOverride,
    PublishGate,
    ShadowRollout,
)
from policies.audit import actor_of
from runs.engine.definition import checksum_of, snapshot
from runs.engine.errors import EngineError


class EvalCaseForm(forms.ModelForm):
    class Meta:
        model = EvalCase
        fields = ("eval_set", "name", "input", "expectations", "critical", "tags", "source_run")

    def clean_expectations(self):
        value = self.cleaned_data["expectations"]
        problems = validate_expectations(value)
        if problems:
            raise forms.ValidationError(problems)
        return value


class ImportForm(forms.Form):
    file = forms.FileField(label="JSONL file (one case a line)")


@admin.register(EvalSet)
class EvalSetAdmin(admin.ModelAdmin):
    list_display = ("__str__", "workflow", "case_count", "created_at")
    list_select_related = ("workflow",)
    list_filter = ("workflow",)
    actions = [
        "build_from_reviews",
        "build_from_samples",
        "build_from_replay_sets",
        "import_cases",
        "export_cases",
        "experiment_on_draft",
    ]

    @admin.display(description="Cases")
    def case_count(self, obj: EvalSet) -> int:
        return obj.cases.count()

    @admin.action(description="Add cases from reviewer decisions", permissions=["change"])
    def build_from_reviews(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> None:
        for eval_set in queryset:
            added = cases.cases_from_reviews(eval_set=eval_set)
            self.message_user(request, f"{eval_set}: {added} case(s) added from reviews.")

    @admin.action(description="Add cases from flagged sample runs", permissions=["change"])
    def build_from_samples(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> None:
        for eval_set in queryset:
            added = cases.cases_from_samples(eval_set=eval_set)
            self.message_user(request, f"{eval_set}: {added} case(s) added from the sample.")

    @admin.action(description="Add cases from the workflow's replay sets", permissions=["change"])
    def build_from_replay_sets(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> None:
        for eval_set in queryset:
            added = sum(
                cases.cases_from_replay_set(eval_set=eval_set, replay_set=replay_set)
                for replay_set in ReplaySet.objects.filter(workflow=eval_set.workflow)
            )
            self.message_user(request, f"{eval_set}: {added} case(s) added from replay sets.")

    @admin.action(description="Import cases from a JSONL file", permissions=["change"])
    def import_cases(self, request: HttpRequest, queryset: QuerySet[EvalSet]):
        if queryset.count() != 1:
            self.message_user(request, "Choose one eval set to import into.", messages.ERROR)
            return None
        eval_set = queryset.get()
        form = ImportForm(request.POST or None, request.FILES or None)
        if "apply" in request.POST and form.is_valid():
            text = io.TextIOWrapper(form.cleaned_data["file"], encoding="utf-8")
            try:
                added = cases.import_jsonl(eval_set=eval_set, lines=text)
            except cases.InvalidCase as exc:
                self.message_user(request, f"Nothing imported: {exc}", messages.ERROR)
            else:
                self.message_user(request, f"{eval_set}: {added} case(s) imported.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import cases into {eval_set}",
            "form": form,
            "eval_set": eval_set,
            "opts": self.model._meta,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/evals/import_cases.html", context)

    @admin.action(description="Export cases as JSONL", permissions=["view"])
    def export_cases(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> HttpResponse:
        body = "".join(cases.export_jsonl(eval_set=eval_set) for eval_set in queryset)
        response = HttpResponse(body, content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="cases.jsonl"'
        return response

    @admin.action(description="Run on the draft and the live version", permissions=["change"])
    def experiment_on_draft(self, request: HttpRequest, queryset: QuerySet[EvalSet]) -> None:
        for eval_set in queryset:
            live = eval_set.workflow.current_version
            try:
                experiment = experiments.start_experiment(
                    eval_set=eval_set,
                    versions=[live] if live else [],
                    draft=True,
                    actor=actor_of(request.user),
                )
            except EngineError as exc:
                self.message_user(request, f"{eval_set}: {exc}", messages.ERROR)
                continue
            url = reverse("console-experiment-detail", args=[experiment.pk])
            self.message_user(
                request,
                format_html(
                    '{}: <a href="{}">experiment {}</a> started.', eval_set, url, experiment.pk
                ),
            )


@admin.register(EvalCase)
class EvalCaseAdmin(admin.ModelAdmin):
    form = EvalCaseForm
    list_display = ("name", "eval_set", "origin", "critical", "source_run_id", "created_at")
    list_filter = ("eval_set", "origin", "critical")
    list_select_related = ("eval_set__workflow",)
    search_fields = ("name",)
    raw_id_fields = ("source_run",)


class ArmInline(ReadOnlyAdmin, admin.TabularInline):
    model = ExperimentArm
    fields = ("version", "baseline")
    extra = 0


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ("__str__", "status", "started_by", "created_at", "finished_at", "results")
    list_filter = ("status",)
    list_select_related = ("eval_set__workflow",)
    readonly_fields = ("eval_set", "status", "started_by", "created_at", "finished_at")
    fields = ("eval_set", "status", "note", "started_by", "created_at", "finished_at")
    inlines = [ArmInline]
    actions = ["cancel", "resume"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # started from an eval set (action), the console or the API

    @admin.display(description="Results")
    def results(self, obj: Experiment) -> str:
        return format_html(
            '<a href="{}">compare</a>', reverse("console-experiment-detail", args=[obj.pk])
        )

    @admin.action(description="Cancel", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            try:
                experiments.cancel_experiment(
                    experiment_id=experiment.pk, actor=actor_of(request.user)
                )
            except EngineError as exc:
                self.message_user(request, str(exc), messages.ERROR)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Experiment]) -> None:
        for experiment in queryset:
            try:
                experiments.resume_experiment(
                    experiment_id=experiment.pk, actor=actor_of(request.user)
                )
            except EngineError as exc:
                self.message_user(request, str(exc), messages.ERROR)


@admin.register(PublishGate)
class PublishGateAdmin(admin.ModelAdmin):
    list_display = (
        "workflow",
        "eval_set",
        "enabled",
        "min_pass_rate",
        "no_critical_regressions",
        "max_cost_increase_pct",
    )
    list_select_related = ("workflow", "eval_set")


class GateOverrideForm(forms.ModelForm):
    class Meta:
        model = GateOverride
        fields = ("workflow", "reason")


@admin.register(GateOverride)
class GateOverrideAdmin(admin.ModelAdmin):
    """A named override: the person adding it is its `by`; it is for the
    workflow's draft as it stands now (its checksum) and used once."""

    form = GateOverrideForm
    list_display = ("workflow", "by", "reason", "created_at", "used_at")
    list_select_related = ("workflow",)
    readonly_fields = ("checksum", "by", "created_at", "used_at")

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: GateOverride, form, change: bool) -> None:
        obj.by = actor_of(request.user)
        obj.checksum = checksum_of(snapshot(obj.workflow))
        super().save_model(request, obj, form, change)


@admin.register(ShadowRollout)
class ShadowRolloutAdmin(admin.ModelAdmin):
    list_display = (
        "__str__",
        "workflow",
        "active",
        "started_by",
        "started_at",
        "stopped_at",
        "page",
    )
    list_filter = ("active",)
    list_select_related = ("workflow", "candidate")
    fields = ("workflow", "candidate")
    actions = ["stop"]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ("workflow", "candidate") if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ShadowRollout, form, change: bool) -> None:
        if change:
            return
        try:
            started = shadow.start_shadow(
                workflow=obj.workflow, candidate=obj.candidate, actor=actor_of(request.user)
            )
        except EngineError as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return
        obj.pk = started.pk

    @admin.display(description="Comparison")
    def page(self, obj: ShadowRollout) -> str:
        return format_html(
            '<a href="{}">compare</a>', reverse("console-shadow-detail", args=[obj.pk])
        )

    @admin.action(description="Stop", permissions=["change"])
    def stop(self, request: HttpRequest, queryset: QuerySet[ShadowRollout]) -> None:
        for rollout in queryset.filter(active=True):
            shadow.stop_shadow(rollout_id=rollout.pk, actor=actor_of(request.user))
