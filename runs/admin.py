"""Admin for operators: workflows (steps inline), versions, runs.

Actions call the engine's functions; nothing here changes a run directly.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from config.admin_base import ReadOnlyAdmin, json_block, sees_personal_data
from policies.audit import actor_of
from runs import engine
from runs.admin_graphs import VersionGraphAdmin, WorkflowGraphAdmin
from runs.engine.cache import invalidate_step_cache
from runs.models import (
    Rollout,
    Run,
    Score,
    Step,
    StepCacheEntry,
    StepRun,
    ToolAnswer,
    ToolCallRecord,
    Workflow,
    WorkflowVersion,
)


class StepInline(admin.StackedInline):
    model = Step
    extra = 0
    fields = (
        ("key", "kind", "position"),
        "config",
        "edges",
        ("max_attempts", "backoff_base_s", "backoff_cap_s", "timeout_s", "max_visits"),
        "cache_ttl_s",
        "output_checks",
    )


@admin.register(Workflow)
class WorkflowAdmin(WorkflowGraphAdmin, admin.ModelAdmin):
    list_display = (
        "name",
        "slug",
        "entry_step",
        "role",
        "policy",
        "latest_version",
        "live",
        "updated_at",
    )
    list_select_related = ("role", "policy", "live_version")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    fieldsets = (
        (None, {"fields": ("name", "slug", "description", "entry_step")}),
        ("Guardrails", {"fields": ("role", "policy", "max_active_runs")}),
        ("Input screening", {"fields": ("input_schema", "sensitive_fields", "untrusted_fields")}),
    )
    inlines = [StepInline]
    actions = ["publish", "publish_canary", "invalidate_cache"]

    # A workflow keeps its slug once created (the database refuses a
    # change: migration runs 0030), so the form shows it, unchangeable.
    def get_readonly_fields(self, request: HttpRequest, obj: Workflow | None = None):
        fields = tuple(super().get_readonly_fields(request, obj))
        return fields if obj is None else (*fields, "slug")

    def get_prepopulated_fields(self, request: HttpRequest, obj: Workflow | None = None):
        return super().get_prepopulated_fields(request, obj) if obj is None else {}

    @admin.display(description="Latest version")
    def latest_version(self, obj: Workflow) -> str:
        version = obj.current_version
        return f"v{version.number}" if version else "unpublished"

    @admin.display(description="Live version")
    def live(self, obj: Workflow) -> str:
        """Pinned after a canary; otherwise the newest published version."""
        return f"v{obj.live_version.number}" if obj.live_version else "newest"

    @admin.action(description="Publish a new version", permissions=["publish"])
    def publish(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            try:
                version = engine.publish_workflow(workflow=workflow, user=request.user)
            except engine.PublishError as exc:
                for problem in exc.problems:
                    self.message_user(
                        request, f"{workflow.slug} not published: {problem}", messages.ERROR
                    )
            else:
                self.message_user(request, f"Published {version}.", messages.SUCCESS)

    @admin.action(description="Publish a new version as a canary", permissions=["publish"])
    def publish_canary(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        """The new version takes BOSUN_CANARY_SHARE_PCT % of new runs; the
        console's rollout page compares, promotes and rolls it back."""
        share = settings.BOSUN_CANARY_SHARE_PCT
        for workflow in queryset:
            try:
                version = engine.publish_workflow(
                    workflow=workflow, user=request.user, canary_share=share
                )
            except engine.PublishError as exc:
                for problem in exc.problems:
                    self.message_user(
                        request, f"{workflow.slug} not published: {problem}", messages.ERROR
                    )
            else:
                self.message_user(
                    request, f"Published {version} as a {share} % canary.", messages.SUCCESS
                )

    @admin.action(description="Invalidate the step cache", permissions=["publish"])
    def invalidate_cache(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            dropped = invalidate_step_cache(workflow_id=workflow.pk)
            self.message_user(request, f"{workflow.slug}: {dropped} cached result(s) dropped.")

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.publish_workflow")


@admin.register(Rollout)
class RolloutAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Canaries, read-only: started, promoted and rolled back from the
    console's rollout page (or the API), which audit each change."""

    list_display = ("workflow", "baseline", "candidate", "share_pct", "status", "started_at")
    list_filter = ("status", "workflow")
    list_select_related = ("workflow", "baseline", "candidate")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(ReadOnlyAdmin, VersionGraphAdmin, admin.ModelAdmin):
    list_display = ("__str__", "workflow", "number", "published_at", "published_by")
    list_filter = ("workflow",)
    list_select_related = ("workflow", "published_by")
    readonly_fields = (
        "workflow",
        "number",
        "pretty_definition",
        "checksum",
        "published_at",
        "published_by",
    )
    exclude = ("definition",)

    @admin.display(description="Definition")
    def pretty_definition(self, obj: WorkflowVersion) -> str:
        return json_block(obj.definition)


class RedactedFields:
    """Read-only fields that may hold personal data are shown redacted to
    anyone without the `view_personal_data` permission."""

    private = {"input": "safe_input", "output": "safe_output", "error": "safe_error"}

    def visible(self, request: HttpRequest, names) -> list[str]:
        if sees_personal_data(request):
            return list(names)
        return [self.private.get(name, name) for name in names]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.get_fields(request, obj)  # type: ignore[attr-defined]  # on the admin class

    @admin.display(description="Input")
    def safe_input(self, obj) -> str:
        return json_block(obj.input, redacted=True)

    @admin.display(description="Output")
    def safe_output(self, obj) -> str:
        return json_block(obj.output, redacted=True)

    @admin.display(description="Error")
    def safe_error(self, obj) -> str:
        from lib.screening import redact

        return redact(obj.error)


class StepRunInline(RedactedFields, admin.TabularInline):
    """Step records; personal data and secrets are redacted for anyone
    without the `view_personal_data` permission."""

    model = StepRun
    extra = 0
    can_delete = False
    ordering = ("seq", "attempt")

    def get_fields(self, request: HttpRequest, obj=None):
        return self.visible(
            request,
            ("seq", "attempt", "step_key", "kind", "status", "edge", "input", "output", "error")
            + ("flags", "duration_ms", "model_answered", "tokens_in", "tokens_out", "cost_usd")
            + ("vendor", "credits", "vendor_usd", "cost_saved_usd", "credits_saved"),
        )

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(RedactedFields, admin.ModelAdmin):
    list_display = (
        "id",
        "workflow",
        "version",
        "status",
        "wait_reason",
        "current_step",
        "outcome",
        "steps_executed",
        "cost_usd",
        "vendor_usd",
        "created_at",
    )
    list_filter = ("status", "wait_reason", "workflow", "outcome", "tainted")
    list_select_related = ("workflow", "version")
    search_fields = ("=id", "idempotency_key")
    date_hierarchy = "created_at"
    inlines = [StepRunInline]
    actions = ["retry_from_failed_step", "cancel"]

    def get_fields(self, request: HttpRequest, obj=None) -> list[str]:  # type: ignore[override]
        return self.visible(request, [f.name for f in Run._meta.fields if f.name != "id"])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Retry from the failed step", permissions=["retry"])
    def retry_from_failed_step(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        actor = actor_of(request.user)
        self._each(
            request,
            queryset,
            lambda run: engine.retry_run(run_id=run.pk, actor=actor),
            "retried",
        )

    @admin.action(description="Cancel", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        reason = f"cancelled by {request.user.get_username()}"
        actor = actor_of(request.user)
        self._each(
            request,
            queryset,
            lambda run: engine.cancel_run(run_id=run.pk, reason=reason, actor=actor),
            "cancelled",
        )

    def _each(self, request, queryset, operation, verb: str) -> None:
        done = 0
        for run in queryset:
            try:
                operation(run)
                done += 1
            except engine.EngineError as exc:
                self.message_user(request, f"Run {run.pk}: {exc}", messages.WARNING)
        if done:
            self.message_user(request, f"{done} run(s) {verb}.", messages.SUCCESS)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.retry_run")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.cancel_run")


@admin.register(StepCacheEntry)
class StepCacheEntryAdmin(admin.ModelAdmin):
    """Cached step results. Filter by workflow and step, then delete the
    selection to invalidate one step's cache."""

    list_display = (
        "workflow",
        "step_key",
        "filled",
        "model",
        "cost_usd",
        "created_at",
        "expires_at",
    )
    list_filter = ("workflow", "step_key", "filled")
    list_select_related = ("workflow",)
    readonly_fields = (
        "key",
        "workflow",
        "step_key",
        "filled",
        "output",
        "edge",
        "model",
        "cost_usd",
        "source_run",
        "created_at",
        "expires_at",
    )
    exclude = ("filler", "filler_until", "hits")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ToolAnswer)
class ToolAnswerAdmin(admin.ModelAdmin):
    """Answers paid reads bought, shared by every run until they expire.
    Delete one to have the next run buy it again; the reuse time is set
    under Policies → Answer reuse."""

    list_display = ("tool", "key", "generation", "filled", "bought_at", "expires_at", "hits")
    list_filter = ("tool", "filled")
    search_fields = ("key",)
    readonly_fields = (
        "tool",
        "key",
        "generation",
        "filled",
        "result",
        "bought_at",
        "expires_at",
        "source_run",
        "hits",
    )
    exclude = ("filler", "filler_until")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


class ReconcileForm(forms.Form):
    happened = forms.TypedChoiceField(
        choices=[
            ("yes", "It happened: go on with the result below"),
            ("no", "It did not: call again"),
        ],
        coerce=lambda value: value == "yes",
        widget=forms.RadioSelect,
    )
    result = forms.JSONField(required=False, help_text="The tool's result, when it happened.")
    note = forms.CharField(widget=forms.Textarea, help_text="How you checked.")


@admin.register(Score)
class ScoreAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """What each score step decided, for managers checking their rubric's routes."""

    list_display = ("id", "subject", "total", "route", "rubric_version", "run", "created_at")
    list_filter = ("route", "rubric_version__rubric")
    list_select_related = ("rubric_version__rubric",)
    search_fields = ("subject",)
    readonly_fields = (
        "run",
        "seq",
        "step_key",
        "rubric_version",
        "subject",
        "criteria",
        "total",
        "route",
        "created_at",
    )
    date_hierarchy = "created_at"


@admin.register(ToolCallRecord)
class ToolCallRecordAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """The ledger of tool calls. A call whose outcome is unknown (an unsafe
    write cut short by a crash) is settled here by a person."""

    list_display = ("id", "tool", "run", "seq", "side_effect", "status", "calls", "started_at")
    list_filter = ("status", "side_effect", "tool")
    list_select_related = ("run",)
    search_fields = ("=run__id", "idempotency_key")
    exclude = ("args", "result", "error")
    readonly_fields = (
        "run",
        "seq",
        "step_key",
        "tool",
        "side_effect",
        "idempotency_key",
        "status",
        "calls",
        "safe_args",
        "safe_result",
        "started_at",
        "finished_at",
        "reconciled_by",
        "reconcile_note",
        "reconcile_link",
    )

    @admin.display(description="Arguments")
    def safe_args(self, obj: ToolCallRecord) -> str:
        return json_block(obj.args, redacted=True)

    @admin.display(description="Result")
    def safe_result(self, obj: ToolCallRecord) -> str:
        return json_block(obj.result, redacted=True)

    @admin.display(description="Settle")
    def reconcile_link(self, obj: ToolCallRecord) -> str:
        if obj.status not in ("unknown", "started"):
            return "-"
        return format_html('<a class="button" href="{}">Settle this call</a>', "reconcile/")

    def get_urls(self):
        urls = super().get_urls()
        view = self.admin_site.admin_view(self.reconcile_view)
        return [
            path("<int:record_id>/change/reconcile/", view, name="runs-toolcall-reconcile"),
            *urls,
        ]

    def reconcile_view(self, request: HttpRequest, record_id: int):
        record = ToolCallRecord.objects.select_related("run").get(pk=record_id)
        if not request.user.has_perm("runs.reconcile_toolcall"):
            raise PermissionDenied
        form = ReconcileForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                engine.reconcile_tool_call(
                    record_id=record.pk,
                    happened=form.cleaned_data["happened"],
                    result=form.cleaned_data["result"],
                    note=form.cleaned_data["note"],
                    by=request.user.get_username(),
                    actor=actor_of(request.user),
                )
            except engine.EngineError as exc:
                self.message_user(request, str(exc), messages.ERROR)
            else:
                self.message_user(request, f"Settled; run {record.run_id} resumes.")
                return redirect("admin:runs_toolcallrecord_change", record.pk)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Settle {record.tool} for run {record.run_id}",
            "record": record,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/runs/toolcallrecord/reconcile.html", context)
