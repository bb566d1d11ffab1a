"""Admin for notification routes: who is told of SLA escalations, dead
letters and breaker alerts (policies.notifications), and what was sent."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.http import HttpRequest

from config.admin_base import ReadOnlyAdmin
from policies.audit import actor_of, record
from policies.models import NotificationDelivery, NotificationRoute


class NotificationRouteForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False,
        max_length=500,
        assume_scheme="https",
        help_text=NotificationRoute._meta.get_field("webhook_url").help_text,
    )

    class Meta:
        model = NotificationRoute
        fields = ["name", "kind", "emails", "webhook_url", "enabled"]

    def clean_emails(self) -> str:
        value = self.cleaned_data.get("emails", "")
        bad = []
        for address in NotificationRoute(emails=value).addresses:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        if bad:
            raise ValidationError(f"Not an email address: {', '.join(bad)}")
        return value

    def clean(self) -> dict:
        data = super().clean() or {}
        if not data.get("emails", "").strip() and not data.get("webhook_url"):
            raise ValidationError("Give email addresses, a webhook URL, or both.")
        return data


class DeliveryInline(admin.TabularInline):
    model = NotificationDelivery
    fields = readonly_fields = ("event_key", "created_at", "sent_at", "error")
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["-id"]
    verbose_name_plural = "latest deliveries"

    def get_queryset(self, request: HttpRequest):
        return super().get_queryset(request).order_by("-id")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(NotificationRoute)
class NotificationRouteAdmin(admin.ModelAdmin):
    form = NotificationRouteForm
    list_display = ["name", "kind", "recipients", "webhook_url", "enabled"]
    list_filter = ["kind", "enabled"]
    inlines = [DeliveryInline]

    def save_model(self, request: HttpRequest, obj, form, change) -> None:
        # Who is told of incidents is part of the policy: audited with the change.
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record(
                action="notification_route.saved",
                actor=actor_of(request.user),
                target=obj,
                data={field: form.cleaned_data.get(field) for field in form.changed_data},
            )

    def delete_model(self, request: HttpRequest, obj) -> None:
        with transaction.atomic():
            record(
                action="notification_route.deleted",
                actor=actor_of(request.user),
                target=obj,
                data={"name": obj.name, "kind": obj.kind},
            )
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset) -> None:
        for route in queryset:
            self.delete_model(request, route)

    @admin.display(description="Email recipients")
    def recipients(self, route: NotificationRoute) -> str:
        return ", ".join(route.addresses) or "—"


@admin.register(NotificationDelivery)
class NotificationDeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ["event_key", "route", "created_at", "sent_at", "error"]
    list_filter = ["route__kind"]
    list_select_related = ["route"]
    search_fields = ["event_key"]
