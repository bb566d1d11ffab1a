"""A form for a run's input, generated from the workflow's JSON Schema.

Each top-level property becomes a field: a string a text box, an integer
or number a number box, a boolean a checkbox, an `enum` a choice, and
anything else (a nested object, an array, a type union) a JSON text area.
`required` properties are required fields, first in their listed order,
then the others by name (a jsonb column keeps no key order); `title` and
`description` give the label and help. A schema that does not describe an
object by its properties gets one JSON text area for the whole input.

The form only collects the input: the engine validates it against the
schema when the run starts (`start_run`), and its errors are put back on
the fields they name.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

WHOLE = "input"  # the field of the whole-input fallback


def _kind(prop: dict[str, Any]) -> str:
    kind = prop.get("type")
    if isinstance(kind, list):  # ["string", "null"]: the non-null one, if only one
        others = [k for k in kind if k != "null"]
        kind = others[0] if len(others) == 1 else None
    return kind if isinstance(kind, str) else ""


def _enum_value(value: Any) -> str:
    return json.dumps(value)


def _field(prop: dict[str, Any], *, required: bool) -> forms.Field:
    label = prop.get("title") if isinstance(prop.get("title"), str) else None
    options: dict[str, Any] = {
        "required": required,
        "label": label,
        "help_text": prop.get("description", "")
        if isinstance(prop.get("description"), str)
        else "",
    }
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        choices = [(_enum_value(v), str(v)) for v in prop["enum"]]
        if not required:
            choices.insert(0, ("", "—"))
        return forms.TypedChoiceField(
            choices=choices, coerce=json.loads, empty_value=None, **options
        )
    kind = _kind(prop)
    if kind == "string":
        return forms.CharField(
            max_length=prop.get("maxLength"),
            min_length=prop.get("minLength"),
            strip=False,
            **options,
        )
    if kind == "integer":
        return forms.IntegerField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), **options
        )
    if kind == "number":
        return forms.FloatField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), **options
        )
    if kind == "boolean":
        # A checkbox is never "missing": unchecked is false. Required marks stay.
        field = forms.BooleanField(**{**options, "required": False})
        field.schema_required = required  # type: ignore[attr-defined]
        return field
    return forms.JSONField(widget=forms.Textarea({"rows": 4}), **options)


class RunInputForm(forms.Form):
    """The input of a new run of a workflow version, from its `input_schema`."""

    def __init__(self, schema: dict[str, Any] | None, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schema = schema if isinstance(schema, dict) else {}
        properties = self.schema.get("properties")
        self.whole = not isinstance(properties, dict) or not properties
        if self.whole:
            self.fields[WHOLE] = forms.JSONField(
                label="Input (JSON)",
                initial=dict,
                required=False,  # {} is an input (the form field takes it for empty)
                widget=forms.Textarea({"rows": 8}),
                help_text="The run's input as a JSON object.",
            )
            return
        assert isinstance(properties, dict)  # self.whole says so
        required = [n for n in self.schema.get("required") or [] if n in properties]
        # PostgreSQL's jsonb keeps no key order, a list keeps its order:
        # the required fields first as listed, then the others by name.
        for name in [*dict.fromkeys(required), *sorted(set(properties) - set(required))]:
            prop = properties[name]
            self.fields[name] = _field(
                prop if isinstance(prop, dict) else {}, required=name in required
            )

    @classmethod
    def initial_from(cls, schema: dict[str, Any] | None, value: dict[str, Any]) -> dict[str, Any]:
        """Initial data showing a recorded input `value` in the fields."""
        form = cls(schema)
        if form.whole:
            return {WHOLE: value}
        initial: dict[str, Any] = {}
        for name, field in form.fields.items():
            if name not in value:
                continue
            if isinstance(field, forms.TypedChoiceField):
                initial[name] = _enum_value(value[name])
            else:
                initial[name] = value[name]
        return initial

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        if self.whole and data.get(WHOLE) is not None and not isinstance(data[WHOLE], dict):
            self.add_error(WHOLE, "The input must be a JSON object, e.g. {}.")
        return data

    def to_input(self) -> dict[str, Any]:
        """The run's input: filled fields, and the required ones (an empty
        optional field is left out, not sent as empty)."""
        data = self.cleaned_data
        if self.whole:
            return dict(data[WHOLE] or {})
        value: dict[str, Any] = {}
        for name, field in self.fields.items():
            item = data.get(name)
            if isinstance(field, forms.BooleanField):
                if item or getattr(field, "schema_required", False):
                    value[name] = bool(item)
            elif item is not None and item != "":
                value[name] = item
        return value

    def put_errors(self, errors: dict[str, str]) -> None:
        """The engine's errors (by input path) on the fields they name."""
        for path, message in errors.items():
            name = path.split(".", 1)[0]
            if self.whole:
                self.add_error(WHOLE, f"{path}: {message}")
            elif name in self.fields:
                self.add_error(name, message if name == path else f"{path}: {message}")
            else:
                self.add_error(None, f"{path}: {message}")
