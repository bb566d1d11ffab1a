from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from approvals.models import ApprovalRequest


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "run",
        "step_key",
        "title",
        "status",
        "reason_code",
        "created_at",
        "decided_by_label",
        "decided_at",
    )
    list_filter = ("status", "reason_code")
    list_select_related = ("run",)

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        return [field.name for field in ApprovalRequest._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
