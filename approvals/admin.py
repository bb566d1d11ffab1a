from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q
from django.http import HttpRequest

from approvals.models import (
    ApprovalRequest,
    ReasonCode,
    ReplaySet,
    SampleItem,
    SampleReview,
    SampleVerdict,
)


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "run",
        "step_key",
        "title",
        "status",
        "reason_code",
        "queue",
        "created_at",
        "due_at",
        "decided_by_label",
        "decided_at",
    )
    list_filter = ("status", "kind", "reason_code", "queue")
    list_select_related = ("run",)

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in ApprovalRequest._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class SampleItemInline(admin.TabularInline):
    model = SampleItem
    extra = 0
    can_delete = False
    fields = ("run", "stratum", "verdict", "category", "note", "reviewed_by", "reviewed_at")
    readonly_fields = ("run", "stratum", "reviewed_by", "reviewed_at")
    raw_id_fields = ("run",)

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # a sample is drawn, not composed by hand


@admin.register(SampleReview)
class SampleReviewAdmin(admin.ModelAdmin):
    list_display = ("week", "workflow", "size", "drawn", "flagged", "created_at")
    list_filter = ("week", "workflow")
    list_select_related = ("workflow",)
    readonly_fields = ("workflow", "week", "size", "seed", "created_at")
    inlines = [SampleItemInline]

    def get_queryset(self, request: HttpRequest):
        return (
            super()
            .get_queryset(request)
            .annotate(
                items_drawn=Count("items"),
                items_flagged=Count("items", filter=Q(items__verdict=SampleVerdict.FLAGGED)),
            )
        )

    @admin.display(description="Runs", ordering="items_drawn")
    def drawn(self, obj: SampleReview) -> int:
        return obj.items_drawn  # type: ignore[attr-defined]  # annotated by get_queryset

    @admin.display(description="Flagged", ordering="items_flagged")
    def flagged(self, obj: SampleReview) -> int:
        return obj.items_flagged  # type: ignore[attr-defined]  # annotated by get_queryset

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # drawn by `manage.py sample_week` or the console


@admin.register(SampleItem)
class SampleItemAdmin(admin.ModelAdmin):
    list_display = ("id", "review", "run", "stratum", "verdict", "category", "reviewed_by")
    list_filter = ("verdict", "category", "review__week")
    list_select_related = ("review__workflow", "reviewed_by")
    readonly_fields = ("review", "run", "stratum", "reviewed_by", "reviewed_at")
    search_fields = ("note", "stratum")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(ReplaySet)
class ReplaySetAdmin(admin.ModelAdmin):
    list_display = ("name", "workflow", "run_count", "created_at")
    list_select_related = ("workflow",)
    raw_id_fields = ("runs",)
    search_fields = ("name",)

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).annotate(run_total=Count("runs"))

    @admin.display(description="Runs", ordering="run_total")
    def run_count(self, obj: ReplaySet) -> int:
        return obj.run_total  # type: ignore[attr-defined]  # annotated by get_queryset


@admin.register(ReasonCode)
class ReasonCodeAdmin(admin.ModelAdmin):
    """The codes a reviewer picks from to reject; retire one by unticking
    `active` (past decisions keep their code)."""

    list_display = ["code", "label", "position", "active"]
    list_editable = ["label", "position", "active"]
    ordering = ["position", "code"]

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
