"""Forms of the review queue and the weekly sample review."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlencode

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from approvals import drafts
from approvals.models import (
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    ReasonCode,
    SampleVerdict,
)
from approvals.sampling import CATEGORIES


def draft_text(draft: Any) -> str:
    """The draft as a reviewer edits it: text as is, anything else as JSON."""
    if isinstance(draft, str):
        return draft
    return json.dumps(draft, indent=2, ensure_ascii=False, default=str)


class DecisionForm(forms.Form):
    """Approve, edit then approve, or reject (with a reason) one request."""

    ACTIONS = (("approve", "Approve"), ("edit", "Approve with edits"), ("reject", "Reject"))

    action = forms.ChoiceField(
        choices=ACTIONS,
        error_messages={
            "required": "Choose approve, approve with edits or reject.",
            "invalid_choice": "Choose approve, approve with edits or reject.",
        },
    )
    draft = forms.CharField(required=False, strip=False, widget=forms.Textarea(attrs={"rows": 8}))
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)
    # A rejection's reason code (the managed list); the text stays optional beside it.
    code = forms.ChoiceField(required=False, choices=[])

    def __init__(self, *args: Any, approval: ApprovalRequest, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.approval = approval
        codes = ReasonCode.objects.filter(active=True).values_list("code", "label")
        _choose(self, "code", [("", "—"), *codes])
        self.edited: Any = None
        self.field_errors: dict[str, str] = {}  # a structured draft's, by field

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        action = data.get("action")
        if action == "reject" and not ((data.get("reason") or "").strip() or data.get("code")):
            self.add_error(
                "reason", "Say why it is rejected: the reason is required (a code or a note)."
            )
        if action == "edit":
            self.edited = self._edited(data.get("draft") or "")
        return data

    def _edited(self, text: str) -> Any:
        text = text.replace("\r\n", "\n")  # browsers send textarea lines with CRLF
        if self.approval.kind == ApprovalKind.TOOL_CALL:
            self.add_error(None, "A tool call is approved or rejected as it stands, not edited.")
            return None
        draft = self.approval.draft
        if isinstance(draft, dict) and drafts.has_fields(self.data):
            # Edited field by field (the review page's form).
            result, errors = drafts.edited(draft, self.data)
            for name, message in errors.items():
                self.add_error(None, message)
                self.field_errors[name] = message
            return None if errors else result
        if not text.strip():
            self.add_error("draft", "The edited draft is empty.")
            return None
        if isinstance(draft, str) or draft is None:
            return text
        try:
            return json.loads(text)  # a structured draft stays structured
        except json.JSONDecodeError as exc:
            self.add_error("draft", f"This draft is JSON and the edit is not valid JSON: {exc}")
            return None


class ReviewFilterForm(forms.Form):
    """Which pending requests the queue and the review flow show.

    Its choices come from small tables (the workflows, the role groups)
    and the reason codes Bosun writes, never from a scan of the pending
    requests: with tens of thousands pending that scan cost more than the
    page."""

    DUE = (
        ("", "Any due time"),
        ("overdue", "Overdue"),
        ("hour", "Due within an hour"),
        ("none", "No deadline"),
    )
    # The reason codes the engine writes; an output check's is "check:<name>".
    REASONS = ("review_required", "policy_requires_approval", "tainted_run", "injection_suspected")

    workflow = forms.ChoiceField(required=False, choices=[])
    queue = forms.ChoiceField(required=False, choices=[])
    reason = forms.CharField(
        required=False,
        max_length=80,
        label="Why review",
        widget=forms.TextInput({"list": "review-reasons", "placeholder": "any reason"}),
    )
    due = forms.ChoiceField(required=False, choices=DUE)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from django.contrib.auth.models import Group

        from runs.models import Workflow

        workflows = Workflow.objects.order_by("slug").values_list("slug", flat=True)
        queues = Group.objects.order_by("name").values_list("name", flat=True)
        _choose(self, "workflow", [("", "All workflows"), *_pairs(workflows)])
        _choose(self, "queue", [("", "All queues"), *_pairs(queues)])

    def pending(self) -> QuerySet[ApprovalRequest]:
        """The pending requests under the filters (all of them when the
        form is empty or invalid)."""
        pending = ApprovalRequest.objects.filter(status=ApprovalStatus.PENDING)
        if not self.is_bound or not self.is_valid():
            return pending
        data = self.cleaned_data
        if data.get("workflow"):
            pending = pending.filter(run__workflow__slug=data["workflow"])
        if data.get("queue"):
            pending = pending.filter(queue=data["queue"])
        if data.get("reason"):
            pending = pending.filter(reason_code=data["reason"])
        due = data.get("due")
        if due == "overdue":
            pending = pending.filter(due_at__lte=timezone.now())
        elif due == "hour":
            pending = pending.filter(due_at__lte=timezone.now() + timedelta(hours=1))
        elif due == "none":
            pending = pending.filter(due_at__isnull=True)
        return pending

    def query(self) -> str:
        """The valid filters as a query string (kept across the flow's pages)."""
        if not self.is_bound or not self.is_valid():
            return ""
        return urlencode({k: v for k, v in self.cleaned_data.items() if v})


def _choose(form: forms.Form, name: str, choices: list[Any]) -> None:
    cast(forms.ChoiceField, form.fields[name]).choices = choices


def _pairs(values: Any) -> list[tuple[str, str]]:
    return [(value, value) for value in sorted(set(values))]


class SampleVerdictForm(forms.Form):
    """A reviewer's verdict on one sampled run; a flag needs a category."""

    verdict = forms.ChoiceField(choices=[(SampleVerdict.OK, "OK"), (SampleVerdict.FLAGGED, "Flag")])
    category = forms.ChoiceField(choices=[("", "—"), *CATEGORIES], required=False)
    note = forms.CharField(
        required=False, max_length=4000, widget=forms.Textarea(attrs={"rows": 2})
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # Form.clean returns cleaned_data
        if data.get("verdict") == SampleVerdict.FLAGGED and not data.get("category"):
            self.add_error("category", "Pick a category for a flagged run.")
        return data


class ReplaySetForm(forms.Form):
    name = forms.SlugField(
        max_length=100, help_text="A new or existing replay set of this workflow, e.g. tone-issues."
    )


class DrawForm(forms.Form):
    week = forms.RegexField(regex=r"^\d{4}-W\d{2}$", max_length=8, help_text="e.g. 2026-W47")
    size = forms.IntegerField(min_value=1, max_value=500, initial=20)
