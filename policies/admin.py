"""Admin for roles, policies, rubrics, word lists, limits and kill switches.

Roles and policies save through `policies.services`, rubrics through
`policies.rubrics.save_rubric`, each writing a new immutable version; kill
switches change only through `set_switch`, which records who and why.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from config.admin_base import json_block
from policies.audit import actor_of
from policies.models import (
    AgentRole,
    AgentRoleVersion,
    AnswerReuse,
    Breaker,
    KillSwitch,
    KillSwitchChange,
    Limit,
    Policy,
    PolicyVersion,
    Rubric,
    RubricVersion,
    WordList,
)
from policies.rubrics import (
    Preview,
    criteria_problems,
    rescore_preview,
    routes_problems,
    save_rubric,
    sort_routes,
)
from policies.services import (
    autonomy_problems,
    credit_problems,
    destination_problems,
    guard_problems,
    save_policy,
    save_role,
)
from runs.engine.switches import set_switch
from runs.tools.base import tool_names


class _VersionInline(admin.TabularInline):
    extra = 0
    can_delete = False
    fields = ("number", "created_at", "created_by", "pretty_snapshot")
    readonly_fields = fields
    ordering = ("-number",)

    @admin.display(description="Snapshot")
    def pretty_snapshot(self, obj) -> str:
        return json_block(obj.snapshot)

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
        save_role(role=obj, by=request.user.get_username(), actor=actor_of(request.user))


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
            "max_credits",
            "autonomy",
            "destinations",
            "guards",
            "redact_prompts",
        )
        help_texts = {
            "autonomy": 'First match wins, e.g. [{"tool": "refund.create_request", '
            '"mode": "approve", "when": {"path": "args.amount", "op": ">", "value": 100}}]. '
            "Modes: auto, approve, block. A run that has read untrusted content needs "
            "approval for every write or egress call, unless an auto rule trusts the call's "
            'destinations: {"tool": "email.send", "mode": "auto", '
            '"trusted_destinations": ["@acme.com"]}.',
        }

    def clean_autonomy(self):
        return _clean(self.cleaned_data["autonomy"], autonomy_problems)

    def clean_destinations(self):
        return _clean(self.cleaned_data["destinations"] or {}, destination_problems)

    def clean_guards(self):
        return _clean(self.cleaned_data["guards"] or [], guard_problems)

    def clean_max_credits(self):
        return _clean(self.cleaned_data["max_credits"] or {}, credit_problems)


def _clean(value, problems_of):
    problems = problems_of(value)
    if problems:
        raise ValidationError(problems)
    return value


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    list_display = ("name", "max_steps", "max_llm_calls", "max_cost_usd", "version", "updated_at")
    readonly_fields = ("version",)
    inlines = [PolicyVersionInline]

    def save_model(self, request, obj, form, change) -> None:
        save_policy(policy=obj, by=request.user.get_username(), actor=actor_of(request.user))


@admin.register(AnswerReuse)
class AnswerReuseAdmin(admin.ModelAdmin):
    """How long a bought answer (a company's enrichment) is reused by every
    workflow before it is bought again."""

    list_display = ("tool", "ttl_s", "updated_at")


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


@admin.register(Breaker)
class BreakerAdmin(admin.ModelAdmin):
    """Thresholds per key (empty: the `BOSUN_BREAKER_*` setting); the state
    is the engine's (runs.engine.breakers), read-only here. Saving is
    audited; *Close now* lets the waiting runs go, as the console does."""

    list_display = ("key", "state", "since", "failures", "opened_count", "enabled")
    list_filter = ("state", "enabled")
    search_fields = ("key",)
    actions = ["close_now"]
    readonly_fields = (
        "state",
        "since",
        "failures",
        "first_failure_at",
        "open_until",
        "trips",
        "probe_holder",
        "probe_expires_at",
        "opened_count",
        "last_errors",
    )

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return ("key", *self.readonly_fields) if obj else self.readonly_fields

    def save_model(self, request, obj, form, change) -> None:
        from django.db import transaction

        from policies.audit import record

        with transaction.atomic():
            super().save_model(request, obj, form, change)
            record(
                action="breaker.saved",
                actor=actor_of(request.user),
                target=obj,
                data={field: form.cleaned_data.get(field) for field in form.changed_data},
            )

    @admin.action(description="Close now (the waiting runs resume)")
    def close_now(self, request: HttpRequest, queryset) -> None:
        from runs.engine.breakers import close_now

        closed = [
            breaker.key
            for breaker in queryset
            if close_now(key=breaker.key, actor=actor_of(request.user), reason="closed in admin")
        ]
        self.message_user(request, f"Closed: {', '.join(closed) or 'none (all were closed)'}.")


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
        saved = set_switch(
            scope=obj.scope,
            target=obj.target,
            engaged=obj.engaged,
            reason=form.cleaned_data["reason"],
            by=request.user.get_username(),
            user=request.user,
            actor=actor_of(request.user),
        )
        obj.pk = saved.pk

    def save_related(self, request, form, formsets, change) -> None:
        # The change history is written by set_switch; the read-only inline
        # saves nothing, but admin's change message reads what it saved.
        for formset in formsets:
            formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# Rubrics ---------------------------------------------------------------------


def _plain(number: float) -> int | float:
    """3.0 -> 3, so a save from this form stores what a manager typed."""
    return int(number) if float(number).is_integer() else number


def _criteria_text(snapshot: dict) -> str:
    return ", ".join(f"{c['key']} ({_plain(c['weight'])})" for c in snapshot["criteria"])


def _routes_text(snapshot: dict) -> str:
    return " · ".join(f"{r['route']} ≥ {_plain(r['min'])}" for r in snapshot["routes"])


class CriterionForm(forms.Form):
    key = forms.SlugField(
        max_length=60,
        help_text="A short name the model and the records use, e.g. fit.",
        widget=forms.TextInput(attrs={"size": 14}),
    )
    description = forms.CharField(
        max_length=500,
        help_text="What a 100 means: the model is shown this.",
        widget=forms.TextInput(attrs={"size": 70}),
    )
    weight = forms.FloatField(
        min_value=0.000001,
        help_text="Relative importance (above 0).",
        widget=forms.NumberInput(attrs={"step": "any", "class": "rubric-number"}),
    )


class RouteForm(forms.Form):
    min = forms.FloatField(
        min_value=0,
        max_value=100,
        help_text="Lowest total (0–100) that takes this route.",
        widget=forms.NumberInput(attrs={"step": "any", "class": "rubric-number"}),
    )
    route = forms.SlugField(
        max_length=60,
        help_text="The edge the score step takes, e.g. outreach.",
        widget=forms.TextInput(attrs={"size": 16}),
    )


class RubricForm(forms.ModelForm):
    """The rubric's name and description, plus its criteria and routes as
    two editable tables. `Preview re-score` validates the draft and computes
    `rescore_preview` instead of saving: `is_valid()` is then False with no
    errors, so the admin shows the same bound form again, unsaved."""

    class Meta:
        model = Rubric
        fields = ("name", "description")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        extra = 1 if self.instance.pk else 3
        criteria = forms.formset_factory(CriterionForm, extra=extra, can_delete=True)
        routes = forms.formset_factory(RouteForm, extra=extra, can_delete=True)
        data = self.data if self.is_bound else None
        self.criteria_formset = criteria(
            data, prefix="criteria", initial=self.instance.criteria or None
        )
        self.routes_formset = routes(data, prefix="routes", initial=self.instance.routes or None)
        self.preview_requested = self.is_bound and "_preview" in self.data
        self.preview: Preview | None = None

    @staticmethod
    def _rows(formset, fields: tuple[str, ...]) -> list[dict]:
        """The filled, undeleted rows (blank extra rows have no cleaned data)."""
        return [
            {
                name: _plain(f.cleaned_data[name])
                if name in ("weight", "min")
                else f.cleaned_data[name]
                for name in fields
            }
            for f in formset.forms
            if f.cleaned_data and not f.cleaned_data.get("DELETE")
        ]

    def clean(self) -> dict:
        cleaned = super().clean()
        assert cleaned is not None  # Form.clean returns cleaned_data
        tables = (
            (
                "criteria",
                self.criteria_formset,
                ("key", "description", "weight"),
                criteria_problems,
            ),
            ("routes", self.routes_formset, ("min", "route"), routes_problems),
        )
        for name, formset, fields, problems_of in tables:
            if not formset.is_valid():
                self.add_error(None, f"Correct the {name} table below.")
                continue
            rows = self._rows(formset, fields)
            rows = sort_routes(rows) if name == "routes" else rows
            for problem in problems_of(rows):
                self.add_error(None, f"{name.capitalize()}: {problem}")
            cleaned[name] = rows
        return cleaned

    def _post_clean(self) -> None:
        super()._post_clean()  # type: ignore[misc]
        if not self.errors:
            self.instance.criteria = self.cleaned_data["criteria"]
            self.instance.routes = self.cleaned_data["routes"]

    def is_valid(self) -> bool:
        valid = super().is_valid()
        if valid and self.preview_requested:
            # The saved rubric (the instance now holds the draft) decides
            # which scores are read; the draft decides the new routes.
            saved = Rubric.objects.filter(pk=self.instance.pk).first() or Rubric(name="")
            self.preview = rescore_preview(
                rubric=saved,
                criteria=self.cleaned_data["criteria"],
                routes=self.cleaned_data["routes"],
            )
            return False  # a preview never saves
        return valid


class RubricVersionInline(_VersionInline):
    model = RubricVersion
    fields = ("number", "created_at", "created_by", "summary")
    readonly_fields = fields

    @admin.display(description="Criteria (weight) and routes")
    def summary(self, obj: RubricVersion) -> str:
        return f"{_criteria_text(obj.snapshot)} | {_routes_text(obj.snapshot)}"


@admin.register(Rubric)
class RubricAdmin(admin.ModelAdmin):
    """Managers edit criteria and thresholds; every save is a new version
    that new score steps use at once. Reviewers and viewers may look."""

    form = RubricForm
    change_form_template = "admin/policies/rubric/change_form.html"
    list_display = ("name", "criteria_list", "thresholds", "version", "updated_at")
    readonly_fields = ("version",)
    inlines = [RubricVersionInline]
    search_fields = ("name", "description")

    @admin.display(description="Criteria (weight)")
    def criteria_list(self, obj: Rubric) -> str:
        return _criteria_text(obj.snapshot())

    @admin.display(description="Routes")
    def thresholds(self, obj: Rubric) -> str:
        return _routes_text(obj.snapshot())

    def save_model(self, request, obj, form, change) -> None:
        version = save_rubric(
            rubric=obj, by=request.user.get_username(), actor=actor_of(request.user)
        )
        self.message_user(request, f"Saved as version {version.number}: new runs use it now.")

    def construct_change_message(self, request, form, formsets, add=False):
        # The tables are not model fields: name them when they changed.
        fields = [*form.changed_data]
        fields += [
            name
            for name, formset in (
                ("criteria", form.criteria_formset),
                ("routes", form.routes_formset),
            )
            if formset.has_changed()
        ]
        if add:
            return super().construct_change_message(request, form, formsets, add)
        return [{"changed": {"fields": fields}}] if fields else []

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Versions are kept for the runs that used them (PROTECT).
        return False


from policies import admin_audit, admin_notifications  # noqa: E402,F401
