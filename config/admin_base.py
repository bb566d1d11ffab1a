"""Shared admin pieces."""

from __future__ import annotations

import json

from django.http import HttpRequest
from django.utils.html import format_html

from lib.screening import redact_value


class ReadOnlyAdmin:
    """For records the system writes and people only read (versions, step
    records, deliveries, the audit log): no add, change or delete in admin,
    whatever the user's permissions. Put it first among the bases."""

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def sees_personal_data(request: HttpRequest) -> bool:
    """Whether the user may see records unredacted."""
    return request.user.has_perm("runs.view_personal_data")


def json_block(value, *, redacted: bool = False) -> str:
    """A JSON value as a preformatted block, PII-redacted when asked."""
    if redacted:
        value = redact_value(value)
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, default=str))
