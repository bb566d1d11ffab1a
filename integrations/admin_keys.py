"""Admin for API keys: create one (its secret is shown once, as a message),
list them with their prefix, scopes, last use and expiry, revoke them.

A key is not edited after it is made (scopes or bindings that change
silently are how keys end up over-privileged): revoke it and create
another. Creation and revocation go through `integrations.apikeys`, which
writes the audit entries. Keys are never deleted, so the audit log's
targets stay resolvable.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from integrations.apikeys import create_apikey, revoke_apikey
from policies.models import ApiKey, ApiScope
from runs.models import Workflow


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiScope.choices,
        widget=forms.CheckboxSelectMultiple,
        help_text="What the key may do. Grant the fewest that work.",
    )
    workflows = forms.ModelMultipleChoiceField(
        queryset=Workflow.objects.order_by("slug"),
        required=False,
        help_text="Only these workflows' runs and approvals; none selected means all.",
    )

    class Meta:
        model = ApiKey
        fields = ("name", "scopes", "workflows", "expires_at")

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Pick a time in the future.")
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_select_related = ("created_by",)
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix")
    actions = ["revoke"]
    readonly_fields = (
        "name",
        "prefix",
        "scope_list",
        "workflow_list",
        "created_by",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="Workflows")
    def workflow_list(self, obj: ApiKey) -> str:
        return ", ".join(w.slug for w in obj.workflows.all()) or "all"

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj=None):
        if obj is None:
            return ("name", "scopes", "workflows", "expires_at")
        return self.readonly_fields

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        if change:
            return  # nothing on a key is editable
        key, plaintext = create_apikey(
            name=form.cleaned_data["name"],
            scopes=form.cleaned_data["scopes"],
            workflows=form.cleaned_data["workflows"],
            expires_at=form.cleaned_data["expires_at"],
            by=request.user,
        )
        obj.pk, obj.prefix = key.pk, key.prefix  # for the "was added" message and redirect
        messages.warning(
            request,
            f"The key {key.name!r}: {plaintext} — copy it now. It is stored only as a hash "
            "and will not be shown again.",
        )

    def save_related(self, request: HttpRequest, form, formsets, change: bool) -> None:
        pass  # the workflows were bound by create_apikey

    @admin.action(description="Revoke the selected keys", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = [key.prefix for key in queryset if revoke_apikey(key=key, by=request.user)]
        if revoked:
            self.message_user(request, f"Revoked {', '.join(revoked)}.", messages.SUCCESS)
        else:
            self.message_user(request, "Those keys were revoked already.", messages.INFO)

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
