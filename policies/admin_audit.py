"""Admin for the audit log and its checkpoints: read-only lists, for everyone
who may view them.

Nobody adds, changes or deletes an entry here (not even a superuser): rows
are appended by `policies.audit.record` in the transaction of the change
they record, and the hash chain (`manage.py audit_verify`) shows whether
any was touched since. Entry data is shown redacted to anyone without the
`view_personal_data` permission, like step records.
"""

from __future__ import annotations

import json

from django.contrib import admin
from django.http import HttpRequest

from config.admin_base import ReadOnlyAdmin, json_block, sees_personal_data
from lib.screening import redact_value
from policies.models import AuditCheckpoint, AuditEntry


def _brief(data) -> str:
    text = json.dumps(data, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:119] + "…"


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_filter = ("action", "actor")
    # "runs.run 12" finds run 12's entries: the type matches by substring,
    # the id exactly (so 12 does not also find 112).
    search_fields = ("target_type", "=target_id")
    date_hierarchy = "at"
    ordering = ("-id",)
    list_per_page = 100

    def get_list_display(self, request: HttpRequest):
        summary = "summary" if sees_personal_data(request) else "safe_summary"
        return ("id", "at", "actor", "action", "target", summary)

    def get_fields(self, request: HttpRequest, obj=None):
        data = "pretty_data" if sees_personal_data(request) else "safe_data"
        return ("at", "actor", "action", "target_type", "target_id", data, "prev_hash", "hash")

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.get_fields(request, obj)

    @admin.display(description="Target")
    def target(self, obj: AuditEntry) -> str:
        return f"{obj.target_type} {obj.target_id}".strip() or "-"

    @admin.display(description="Data")
    def summary(self, obj: AuditEntry) -> str:
        return _brief(obj.data)

    @admin.display(description="Data")
    def safe_summary(self, obj: AuditEntry) -> str:
        return _brief(redact_value(obj.data))

    @admin.display(description="Data")
    def pretty_data(self, obj: AuditEntry) -> str:
        return json_block(obj.data)

    @admin.display(description="Data")
    def safe_data(self, obj: AuditEntry) -> str:
        return json_block(obj.data, redacted=True)


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """Signed heads of the chain (`manage.py audit_verify` checks them)."""

    list_display = ("id", "at", "last_id", "count", "short_hash", "key_id")
    fields = ("at", "last_id", "last_hash", "count", "key_id", "mac")
    readonly_fields = fields
    date_hierarchy = "at"
    ordering = ("-id",)
    list_per_page = 100

    @admin.display(description="Last hash")
    def short_hash(self, obj: AuditCheckpoint) -> str:
        return obj.last_hash[:16] + "…"
