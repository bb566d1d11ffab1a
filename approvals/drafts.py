"""How a draft reads to a reviewer, and how field edits become the edited draft.

A draft is whatever the approval step rendered: text, or JSON. The review
page shows it as what it is:

- an email (an object with `to` and `body`): its headers, then the body
  with its line breaks; the links in it are listed as text, never made
  clickable;
- a tool call (`{"tool", "args", "risk"}`): the tool and each argument,
  labelled;
- any other object: one labelled row per field;
- text as text; anything else as JSON.

The raw JSON is one click away on every structured draft. An object is
edited field by field: a text field as text, any other value (a number, a
list, a nested object) as JSON, checked on submit, so the edited draft
keeps the draft's shape and types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

EMAIL_HEADERS = ("from", "to", "cc", "bcc", "reply_to", "subject")
FIELD_PREFIX = "field."
_URL = re.compile(r"\bhttps?://[^\s<>\"')\]]+", re.IGNORECASE)
# A text field longer than this, or with a line break, is edited in a textarea.
_SHORT = 90


@dataclass
class Field:
    name: str
    value: Any
    text: str  # as shown and edited
    is_text: bool  # a string (edited as text), else JSON
    multiline: bool

    @property
    def input_name(self) -> str:
        return FIELD_PREFIX + self.name


@dataclass
class DraftView:
    shape: str  # "email", "tool_call", "object", "text", "json"
    text: str = ""  # the text of a text or JSON draft
    fields: list[Field] = field(default_factory=list)
    headers: list[Field] = field(default_factory=list)  # an email's
    body: Field | None = None  # an email's
    extra: list[Field] = field(default_factory=list)  # an email's other fields
    links: list[str] = field(default_factory=list)  # in an email's body, as text
    tool: str = ""
    risk: str = ""
    raw: str = ""  # pretty-printed JSON of a structured draft


def view(draft: Any, *, tool_call: bool = False) -> DraftView:
    if isinstance(draft, str):
        return DraftView("text", text=draft)
    raw = _pretty(draft)
    if not isinstance(draft, Mapping):
        return DraftView("json", text=raw, raw=raw)
    if tool_call and isinstance(draft.get("args"), Mapping):
        return DraftView(
            "tool_call",
            fields=fields_of(draft["args"]),
            tool=str(draft.get("tool", "")),
            risk=str(draft.get("risk", "") or ""),
            raw=raw,
        )
    fields = fields_of(draft)
    if is_email(draft):
        by_name = {f.name: f for f in fields}
        headers = [by_name[name] for name in EMAIL_HEADERS if name in by_name]
        body = by_name["body"]
        rest = [f for f in fields if f.name not in EMAIL_HEADERS and f.name != "body"]
        return DraftView(
            "email",
            fields=[*headers, body, *rest],
            headers=headers,
            body=body,
            extra=rest,
            links=sorted(set(_URL.findall(body.text))),
            raw=raw,
        )
    return DraftView("object", fields=fields, raw=raw)


def is_email(draft: Mapping[str, Any]) -> bool:
    return isinstance(draft.get("to"), str | list) and isinstance(draft.get("body"), str)


def fields_of(values: Mapping[str, Any]) -> list[Field]:
    out = []
    for name, value in values.items():
        is_text = isinstance(value, str)
        text = value if is_text else _pretty(value)
        multiline = "\n" in text or len(text) > _SHORT
        out.append(Field(str(name), value, text, is_text, multiline))
    return out


def edited(
    draft: Mapping[str, Any], posted: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The draft with the posted field values (`field.<name>`), and the
    errors by field name. A field not posted keeps its value."""
    result: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, value in draft.items():
        key = FIELD_PREFIX + str(name)
        if key not in posted:
            result[name] = value
            continue
        text = posted[key].replace("\r\n", "\n")  # browsers send CRLF
        if isinstance(value, str):
            result[name] = text
            continue
        try:
            result[name] = json.loads(text)
        except json.JSONDecodeError as exc:
            errors[str(name)] = f"{name} holds JSON and this is not valid JSON: {exc}"
            result[name] = value
    return result, errors


def has_fields(posted: Mapping[str, str]) -> bool:
    return any(key.startswith(FIELD_PREFIX) for key in posted)


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
