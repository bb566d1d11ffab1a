"""Admin for roles, policies, word lists, limits and kill switches.

Roles and policies save through `policies.services`, which writes a new
immutable version each time; kill switches change only through
`switch_set`, which records who and why.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.html import format_html

from policies.models import (
    AgentRole,
    AgentRoleVersion,
    KillSwitch,
    KillSwitchChange,
    Limit,
    Policy,
    PolicyVersion,
    WordList,
)
from policies.services import autonomy_problems, policy_save, role_save, switch_set
from runs.tools.base import tool_names


class _VersionInline(admin.TabularInline):
    extra = 0
    can_delete = False
    fields = ("number", "created_at", "created_by", "pretty_snapshot")
    readonly_fields = fields
    ordering = ("-number",)

    @admin.display(description="Snapshot")
    def pretty_snapshot(self, obj) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.snapshot, indent=2))

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


class AgentRoleVersionInline(_VersionInline):
    model = AgentRoleVersion


class PolicyVersionInline(_VersionInline):
    model = PolicyVersion


class AgentRoleForm(forms.ModelForm):
    class Meta:
        model = AgentRole
        fields = ("name", "description", "allowed_tools")

    def clean_allowed_tools(self):
        tools = self.cleaned_data["allowed_tools"]
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise ValidationError("a list of tool names")
        unknown = sorted(set(tools) - set(tool_names()))
        if unknown:
            raise ValidationError(
                f"no such tool: {', '.join(unknown)} (known: {', '.join(tool_names())})"
            )
        return tools


@admin.register(AgentRole)
class AgentRoleAdmin(admin.ModelAdmin):
    form = AgentRoleForm
    list_display = ("name", "tools", "version", "updated_at")
    readonly_fields = ("version",)
    inlines = [AgentRoleVersionInline]

    @admin.display(description="Allowed tools")
    def tools(self, obj: AgentRole) -> str:
        return ", ".join(obj.allowed_tools) or "none"

    def save_model(self, request, obj, form, change) -> None:
        role_save(role=obj, by=request.user.get_username())


class PolicyForm(forms.ModelForm):
    class Meta:
        model = Policy
        fields = (
            "name",
            "description",
            "max_steps",
            "max_llm_calls",
            "max_tool_calls",
            "max_cost_usd",
            "max_wall_s",
            "autonomy",
            "redact_prompts",
        )
        help_texts = {
            "autonomy": 'First match wins, e.g. [{"tool": "refund.create_request", '
            '"mode": "approve", "when": {"path": "args.amount", "op": ">", "value": 100}}]. '
            "Modes: auto, approve, block.",
        }

    def clean_autonomy(self):
        rules = self.cleaned_data["autonomy"]
        problems = autonomy_problems(rules)
        if problems:
            raise ValidationError(problems)
        return rules


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = ("name", "max_steps", "max_llm_calls", "max_cost_usd", "version", "updated_at")
    readonly_fields = ("version",)
    inlines = [PolicyVersionInline]

    def save_model(self, request, obj, form, change) -> None:
        policy_save(policy=obj, by=request.user.get_username())


@admin.register(WordList)
class WordListAdmin(admin.ModelAdmin):
    list_display = ("name", "size", "updated_at")

    @admin.display(description="Words")
    def size(self, obj: WordList) -> int:
        return len(obj.words)


@admin.register(Limit)
class LimitAdmin(admin.ModelAdmin):
    list_display = ("key", "max_in_flight", "rate", "period_s", "in_flight_now")

    @admin.display(description="In flight now")
    def in_flight_now(self, obj: Limit) -> int | str:
        if not obj.max_in_flight:
            return "-"
        from runs.engine.limits import in_flight

        return in_flight(obj.key)


class KillSwitchForm(forms.ModelForm):
    reason = forms.CharField(widget=forms.Textarea, help_text="Why: recorded with your name.")

    class Meta:
        model = KillSwitch
        fields = ("scope", "target", "engaged", "reason")


class KillSwitchChangeInline(admin.TabularInline):
    model = KillSwitchChange
    extra = 0
    can_delete = False
    fields = ("changed_at", "engaged", "changed_by", "reason")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(KillSwitch)
class KillSwitchAdmin(admin.ModelAdmin):
    """Engaging a switch stops new steps (global, workflow) or calls (tool)
    at once; lifting it resumes the paused runs where they stood."""

    form = KillSwitchForm
    list_display = ("__str__", "scope", "target", "engaged", "changed_by", "changed_at")
    list_filter = ("engaged", "scope")
    inlines = [KillSwitchChangeInline]

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ("scope", "target") if obj else ()

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.base_fields["reason"].initial = ""
        return form

    def save_model(self, request, obj, form, change) -> None:
        saved = switch_set(
            scope=obj.scope,
            target=obj.target,
            engaged=obj.engaged,
            reason=form.cleaned_data["reason"],
            by=request.user.get_username(),
            user=request.user,
        )
        obj.pk = saved.pk

    def save_related(self, request, form, formsets, change) -> None:
        pass  # the change history is written by switch_set

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
