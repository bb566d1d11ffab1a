"""Admin for operators: workflows (steps inline), versions, runs.

Actions call the engine's functions; nothing here changes a run directly.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from runs import engine
from runs.engine.cache import invalidate_step_cache
from runs.models import Run, Step, StepCacheEntry, StepRun, Workflow, WorkflowVersion


class StepInline(admin.StackedInline):
    model = Step
    extra = 0
    fields = (
        ("key", "kind", "position"),
        "config",
        "edges",
        ("max_attempts", "backoff_base_s", "backoff_cap_s", "timeout_s", "max_visits"),
        "cache_ttl_s",
    )


@admin.register(Workflow)
class WorkflowAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "entry_step", "latest_version", "updated_at")
    search_fields = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [StepInline]
    actions = ["publish", "invalidate_cache"]

    @admin.display(description="Latest version")
    def latest_version(self, obj: Workflow) -> str:
        version = obj.current_version
        return f"v{version.number}" if version else "unpublished"

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

    @admin.action(description="Invalidate the step cache", permissions=["publish"])
    def invalidate_cache(self, request: HttpRequest, queryset: QuerySet[Workflow]) -> None:
        for workflow in queryset:
            dropped = invalidate_step_cache(workflow_id=workflow.pk)
            self.message_user(request, f"{workflow.slug}: {dropped} cached result(s) dropped.")

    def has_publish_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("runs.publish_workflow")


@admin.register(WorkflowVersion)
class WorkflowVersionAdmin(admin.ModelAdmin):
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
        return format_html("<pre>{}</pre>", json.dumps(obj.definition, indent=2))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    fields = (
        "seq",
        "attempt",
        "step_key",
        "kind",
        "status",
        "edge",
        "input",
        "output",
        "error",
        "duration_ms",
        "model_answered",
        "tokens_in",
        "tokens_out",
        "cost_usd",
    )
    readonly_fields = fields
    ordering = ("seq", "attempt")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "workflow",
        "version",
        "status",
        "current_step",
        "outcome",
        "steps_executed",
        "cost_usd",
        "created_at",
    )
    list_filter = ("status", "workflow", "outcome")
    list_select_related = ("workflow", "version")
    search_fields = ("=id", "idempotency_key")
    date_hierarchy = "created_at"
    inlines = [StepRunInline]
    actions = ["retry_from_failed_step", "cancel"]

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in Run._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    @admin.action(description="Retry from the failed step", permissions=["retry"])
    def retry_from_failed_step(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        self._each(request, queryset, lambda run: engine.retry_run(run_id=run.pk), "retried")

    @admin.action(description="Cancel", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        reason = f"cancelled by {request.user.get_username()}"
        self._each(
            request,
            queryset,
            lambda run: engine.cancel_run(run_id=run.pk, reason=reason),
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
