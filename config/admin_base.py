"""Shared admin pieces."""

from __future__ import annotations

from django.http import HttpRequest


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
