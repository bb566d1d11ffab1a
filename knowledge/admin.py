"""Admin for the knowledge graph: event types, entities with their timeline
and aliases, events added by hand (through `knowledge.services`), relations,
dedup records.

Events are immutable: an existing event is view-only, and a correction is a
new event that names the one it supersedes. Entity keys are normalised by
their type; an entity or event no workflow would meet is saved with a
warning that says why (`memory.entity_warnings`).
"""

from __future__ import annotations

from typing import Any

import jsonschema
from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from config.admin_base import ReadOnlyAdmin, json_block
from knowledge import memory, services
from knowledge.models import DedupRecord, Entity, EntityAlias, Event, EventType, Relation


class EventTypeForm(forms.ModelForm):
    class Meta:
        model = EventType
        fields = ("name", "description", "payload_schema", "sets_facts")

    def clean_payload_schema(self) -> dict:
        schema = self.cleaned_data["payload_schema"] or {}
        if not isinstance(schema, dict):
            raise forms.ValidationError("The schema must be a JSON object.")
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise forms.ValidationError(f"Not a valid JSON Schema: {exc.message}") from None
        return schema


@admin.register(EventType)
class EventTypeAdmin(admin.ModelAdmin):
    """Types are referenced by published workflows and by events: they can
    be edited but not deleted."""

    form = EventTypeForm
    list_display = ("name", "sets_facts", "description")
    search_fields = ("name", "description")

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


def warn(modeladmin: admin.ModelAdmin, request: HttpRequest, entity: Entity) -> None:
    for warning in memory.entity_warnings(entity=entity):
        modeladmin.message_user(request, warning, messages.WARNING)


class EntityForm(forms.ModelForm):
    """The key is stored as its type spells it (`Acme.com/` -> `acme.com`);
    a key that is an alias of another entity names that one, so it cannot
    be a new entity."""

    class Meta:
        model = Entity
        fields = ("type", "key", "name", "attributes")

    def clean(self) -> dict:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        type, key = data.get("type"), data.get("key")
        if not type or not key:
            return data
        try:
            data["key"] = services.entity_key(type=type, key=key)
        except services.InvalidKey as exc:
            self.add_error("key", exc.errors["entity_key"])
            return data
        alias = EntityAlias.objects.select_related("entity").filter(type=type, key=data["key"])
        if (found := alias.exclude(entity=self.instance.pk).first()) is not None:
            self.add_error("key", f"{data['key']!r} is an alias of {found.entity}; edit that one.")
        return data


class AliasForm(forms.ModelForm):
    class Meta:
        model = EntityAlias
        fields = ("key",)

    def clean(self) -> dict:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        # `entity` is the inline's parent (also a new, unsaved one on the add page).
        entity, key = data.get("entity"), data.get("key")
        if entity is not None and key and not self.instance.pk:
            try:
                data["key"] = services.alias_key(entity=entity, key=key)
            except services.InvalidAlias as exc:
                self.add_error("key", str(exc))
        return data


class AliasInline(admin.TabularInline):
    """Other keys of the entity (a name, a second domain). Added and
    removed through `knowledge.services`; an alias is not edited in place."""

    model = EntityAlias
    form = AliasForm
    fields = ("key", "actor_label", "created_at")
    readonly_fields = ("actor_label", "created_at")
    extra = 1

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Entity)
class EntityAdmin(admin.ModelAdmin):
    form = EntityForm
    inlines = (AliasInline,)
    list_display = ("type", "key", "name", "updated_at")
    list_filter = ("type",)
    search_fields = ("key", "name", "aliases__key")
    readonly_fields = ("created_at", "updated_at")
    change_form_template = "admin/knowledge/entity/change_form.html"

    def change_view(self, request, object_id, form_url="", extra_context=None):
        entity = self.get_object(request, object_id)
        if entity is not None:
            extra_context = {
                **(extra_context or {}),
                "history": memory.entity_history(entity=entity),
                "facts": memory.current_facts(entity=entity).values(),
                "relations_out": entity.relations_out.select_related("target"),
                "relations_in": entity.relations_in.select_related("source"),
                "add_event_url": reverse("admin:knowledge_event_add") + f"?entity={entity.pk}",
            }
        return super().change_view(request, object_id, form_url, extra_context)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        if formset.model is not EntityAlias:
            return super().save_formset(request, form, formset, change)
        entity, actor = form.instance, request.user.get_username()
        formset.changed_objects = []
        formset.deleted_objects = [
            alias.instance for alias in formset.deleted_forms if alias.instance.pk is not None
        ]
        for alias in formset.deleted_objects:
            services.remove_alias(entity=entity, key=alias.key)
        formset.new_objects = []
        for alias_form in formset.extra_forms:
            if alias_form.has_changed() and alias_form not in formset.deleted_forms:
                try:
                    formset.new_objects.append(
                        services.add_alias(
                            entity=entity, key=alias_form.cleaned_data["key"], actor_label=actor
                        )
                    )
                except services.InvalidAlias as exc:  # lost a race after the form validated
                    self.message_user(request, str(exc), messages.ERROR)

    def response_add(self, request: HttpRequest, obj: Entity, post_url_continue=None):
        warn(self, request, obj)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Entity):
        warn(self, request, obj)
        return super().response_change(request, obj)


class EventForm(forms.ModelForm):
    """Adds an event by hand. Validation is the service's own, so a payload
    that breaks its type's schema is shown field by field."""

    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=True)

    class Meta:
        model = Event
        fields = ("entity", "type", "payload", "valid_from", "valid_until", "reason", "supersedes")

    def __init__(self, *args, actor_label: str = "", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor_label = actor_label
        self.fields["valid_from"].required = False
        self.fields["valid_from"].help_text = "Empty: now (or, for a correction, the old window)."

    def clean(self) -> dict:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        if data.get("payload") is None:
            data["payload"] = {}
        old = data.get("supersedes")
        if old is not None and (data.get("entity"), data.get("type")) != (old.entity, old.type):
            raise forms.ValidationError("A correction must be about the same entity and type.")
        if old is not None and Event.objects.filter(supersedes=old).exists():
            self.add_error("supersedes", "That event is already superseded.")
        if self.errors or data.get("type") is None:
            return data
        try:
            services.validate_event(
                type=data["type"],
                payload=data.get("payload"),
                valid_from=data.get("valid_from") or (old.valid_from if old else timezone.now()),
                valid_until=data.get("valid_until"),
                reason=data.get("reason", ""),
                actor_label=self.actor_label,
                source_run_id=None,
            )
        except services.InvalidPayload as exc:
            for path, message in exc.errors.items():
                self.add_error("payload", f"{path}: {message}")
        except services.InvalidEvent as exc:
            for name, message in exc.errors.items():
                self.add_error(name if name in self.fields else None, message)
        return data


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "type", "entity", "valid_until", "written_by", "superseded")
    list_filter = ("type",)
    list_select_related = ("type", "entity", "superseded_by")
    search_fields = ("entity__key", "entity__name", "reason")
    raw_id_fields = ("entity", "supersedes")
    date_hierarchy = "occurred_at"
    readonly_fields = (
        "type",
        "entity",
        "pretty_payload",
        "occurred_at",
        "valid_from",
        "valid_until",
        "reason",
        "actor_label",
        "source_run",
        "source_seq",
        "source_step_key",
        "supersedes",
        "superseded_by_link",
        "recorded_at",
    )

    @admin.display(description="Written by")
    def written_by(self, obj: Event) -> str:
        if obj.source_run_id:
            return f"run {obj.source_run_id} · {obj.source_step_key}"
        return obj.actor_label

    @admin.display(description="Superseded", boolean=True)
    def superseded(self, obj: Event) -> bool:
        return hasattr(obj, "superseded_by")

    @admin.display(description="Payload")
    def pretty_payload(self, obj: Event) -> str:
        return json_block(obj.payload)

    @admin.display(description="Superseded by")
    def superseded_by_link(self, obj: Event) -> str:
        newer = getattr(obj, "superseded_by", None)
        if newer is not None:
            url = reverse("admin:knowledge_event_change", args=[newer.pk])
            return format_html('<a href="{}">event {}</a>', url, newer.pk)
        url = reverse("admin:knowledge_event_add") + f"?supersedes={obj.pk}"
        return format_html('<a class="button" href="{}">Supersede this event</a>', url)

    def get_fields(self, request: HttpRequest, obj=None):
        return self.readonly_fields if obj is not None else EventForm.Meta.fields

    def get_readonly_fields(self, request: HttpRequest, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_form(self, request: HttpRequest, obj=None, change=False, **kwargs):
        if obj is not None:
            return super().get_form(request, obj, change, **kwargs)
        form = super().get_form(request, obj, change, form=EventForm, **kwargs)
        label = request.user.get_username()

        class Bound(form):  # type: ignore[misc,valid-type]
            def __init__(self, *args, **kw):
                super().__init__(*args, actor_label=label, **kw)

        return Bound

    def get_changeform_initial_data(self, request: HttpRequest) -> dict:
        initial: dict[str, Any] = super().get_changeform_initial_data(request)
        old = Event.objects.filter(pk=request.GET.get("supersedes") or None).first()  # type: ignore[misc]
        if old is not None:
            initial.update(
                entity=old.entity_id,
                type=old.type_id,
                payload=old.payload,
                valid_from=old.valid_from,
                valid_until=old.valid_until,
            )
        return initial

    def save_model(self, request: HttpRequest, obj: Event, form, change: bool) -> None:
        data, actor = form.cleaned_data, request.user.get_username()
        common = {"payload": data["payload"], "reason": data["reason"], "actor_label": actor}
        if data.get("supersedes") is not None:
            event = services.supersede_event(
                event=data["supersedes"],
                valid_from=data.get("valid_from") or services.KEEP,
                valid_until=data.get("valid_until"),
                **common,
            )
        else:
            event = services.record_event(
                entity=data["entity"],
                type=data["type"],
                valid_from=data.get("valid_from"),
                valid_until=data.get("valid_until"),
                **common,
            )
        # The admin logs and redirects to the object it saved: the service's.
        obj.pk = event.pk
        obj._state.adding = False
        # Written all the same (the operator decides), but said out loud.
        warn(self, request, event.entity)

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except services.AlreadySuperseded as exc:
            # Lost a race with another correction after the form validated.
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Relation)
class RelationAdmin(admin.ModelAdmin):
    list_display = ("source", "type", "target", "valid_until", "actor_label")
    list_filter = ("type",)
    list_select_related = ("source", "target")
    search_fields = ("source__key", "target__key")
    raw_id_fields = ("source", "target", "source_run")
    readonly_fields = ("actor_label", "source_run", "source_seq", "source_step_key", "recorded_at")

    def save_model(self, request: HttpRequest, obj: Relation, form, change: bool) -> None:
        obj.actor_label = request.user.get_username()
        super().save_model(request, obj, form, change)


@admin.register(DedupRecord)
class DedupRecordAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    """What the dedup gates have let through, per scope and key (read-only)."""

    list_display = ("scope", "key", "run_link", "step_key", "first_seen_at", "expires_at")
    list_filter = ("scope",)
    list_select_related = ("run",)
    search_fields = ("key",)

    @admin.display(description="Run", ordering="run")
    def run_link(self, obj: DedupRecord) -> str:
        url = reverse("admin:runs_run_change", args=[obj.run_id])
        return format_html('<a href="{}">run {}</a>', url, obj.run_id)
