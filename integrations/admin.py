"""Admin for inbound webhooks: the sources (who may send, with which
secret, to start which workflow) and the deliveries they made.

A source's secret is shared with its sender, so it is shown (unlike API
keys, it cannot be stored as a hash: it signs every delivery). A new
source gets a fresh random secret in the Standard Webhooks format.
Deliveries are records, read-only.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from django import forms
from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from config.admin_base import ReadOnlyAdmin
from integrations.models import WebhookDelivery, WebhookSource
from lib import webhooks


def new_secret() -> str:
    return webhooks.SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


class WebhookSourceForm(forms.ModelForm):
    class Meta:
        model = WebhookSource
        fields = ("slug", "name", "workflow", "secret", "input_path", "enabled", "tolerance_s")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:
            self.fields["secret"].initial = new_secret()

    def clean_secret(self) -> str:
        secret = self.cleaned_data["secret"].strip()
        if not secret.startswith("whsec_"):
            raise forms.ValidationError('Use "whsec_" followed by base64 (one is suggested).')
        try:
            key = webhooks.secret_key(secret)
        except (binascii.Error, ValueError):
            raise forms.ValidationError("The part after whsec_ is not valid base64.") from None
        if len(key) < 16:
            raise forms.ValidationError("Use at least 16 random bytes.")
        return secret


@admin.register(WebhookSource)
class WebhookSourceAdmin(admin.ModelAdmin):
    form = WebhookSourceForm
    list_display = ("slug", "name", "workflow", "enabled", "tolerance_s", "created_at")
    list_select_related = ("workflow",)
    list_filter = ("enabled",)
    search_fields = ("slug", "name")
    prepopulated_fields = {"slug": ("name",)}


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ("webhook_id", "source", "received_at", "run_link", "repeats")
    list_select_related = ("source",)
    list_filter = ("source",)
    search_fields = ("webhook_id",)
    readonly_fields = ("source", "webhook_id", "received_at", "run_link", "repeats", "payload")
    fields = readonly_fields

    @admin.display(description="Run")
    def run_link(self, obj: WebhookDelivery) -> str:
        if obj.run_id is None:
            return "-"
        url = reverse("admin:runs_run_change", args=[obj.run_id])
        return format_html('<a href="{}">run {}</a>', url, obj.run_id)


# API keys: the model lives in policies; its admin is part of the HTTP side.
from integrations import admin_keys  # noqa: E402,F401
