"""Console search: runs by what they touched.

The runs list's filters (workflow, version, status, outcome, …) plus an
entity (an account name or domain, an email address: `runs.search`), an
input field (`field=value`), a time window, a tool called and a reason code
a reviewer decided with. Keyset pages by id, as the runs list; a request
from htmx gets the results fragment only. Needs `runs.view_run`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from approvals.models import ReasonCode
from lib.console import console_view, is_partial
from lib.screening import redact
from runs import search
from runs.tools.base import tool_names
from runs.views import PAGE_SIZE, RunFilterForm, _run_page

DATETIME = forms.DateTimeInput({"type": "datetime-local"}, format="%Y-%m-%dT%H:%M")


class RunSearchForm(RunFilterForm):
    q = forms.CharField(
        required=False,
        max_length=300,
        label="Account, domain or email",
        help_text="An entity's key, name or alias, or a value of a run's input.",
    )
    field = forms.CharField(
        required=False, max_length=300, label="Input field", help_text="field=value"
    )
    start = forms.DateTimeField(required=False, label="From", widget=DATETIME)
    end = forms.DateTimeField(required=False, label="Until", widget=DATETIME)
    # Free text: the ledger keeps calls of tools no longer registered; the
    # registered names are offered as suggestions (a datalist).
    tool = forms.CharField(
        required=False,
        max_length=100,
        label="Tool called",
        widget=forms.TextInput({"list": "tool-names"}),
    )
    reason = forms.ChoiceField(required=False, label="Reason code")
    # The runs list's day fields give way to the time window above.
    since = None  # type: ignore[assignment]
    until = None  # type: ignore[assignment]

    field_order = ["q", "field", "start", "end", "workflow", "status", "tool", "reason"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["reason"].choices = [  # type: ignore[attr-defined]
            ("", "Any reason"),
            *ReasonCode.objects.order_by("position", "code").values_list("code", "label"),
        ]
        self.match: search.EntityMatch | None = None

    def clean_field(self) -> tuple[str, str] | None:
        text = self.cleaned_data.get("field", "")
        if not text:
            return None
        parsed = search.parse_field(text)
        if parsed is None:
            raise forms.ValidationError(
                "Write it as field=value, e.g. domain=acme.com (a dotted path for nested fields)."
            )
        return parsed

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("start") and data.get("end") and data["end"] <= data["start"]:
            raise forms.ValidationError("The window ends before it starts.")
        return data

    @property
    def searched(self) -> bool:
        """Any criterion given (paging alone is not a search)."""
        return any(
            value not in (None, "", False)
            for name, value in self.cleaned_data.items()
            if name not in ("before", "after")
        )

    def filtered(self, runs: Any) -> Any:
        runs = super().filtered(runs)
        data = self.cleaned_data
        if data.get("field"):
            name, value = data["field"]
            runs = runs.filter(search.field_condition(name, value, vendor=connection.vendor))
        if data.get("start"):
            runs = runs.filter(created_at__gte=data["start"])
        if data.get("end"):
            runs = runs.filter(created_at__lt=data["end"])
        if data.get("tool"):
            runs = runs.filter(search.tool_condition(data["tool"]))
        if data.get("reason"):
            runs = runs.filter(search.reason_condition(data["reason"]))
        if data.get("q"):
            # The page's candidates: the newest of each way a run may
            # name the entity, in the direction of the page asked for.
            self.match = search.match_entities(data["q"])
            ids = search.newest_ids(
                runs,
                self.match.conditions(),
                limit=PAGE_SIZE + 1,
                before=data.get("before"),
                after=data.get("after"),
            )
            runs = runs.filter(pk__in=ids)
        return runs


@require_GET
@console_view("runs.view_run")
def run_search(request: HttpRequest) -> HttpResponse:
    """Runs matching every criterion given, newest first, 50 a page."""
    form = RunSearchForm(request.GET)
    context: dict[str, Any] = {
        "form": form,
        "nav": "search",
        "runs": [],
        "page": {},
        "entities": [],
        "searched": False,
        "tool_names": tool_names(),
    }
    status = 200
    if form.is_valid():
        if form.searched:
            context.update(_run_page(form), searched=True)
            personal = request.user.has_perm("runs.view_personal_data")
            context["entities"] = [
                {
                    "pk": entity.pk,
                    "label": f"{entity.type}:{entity.key if personal else redact(entity.key)}",
                    "name": entity.name if personal else redact(entity.name),
                }
                for entity in (form.match.entities if form.match else [])
            ]
    elif not is_partial(request):
        status = 400
    template = (
        "console/search/partials/_results.html"
        if is_partial(request)
        else "console/search/index.html"
    )
    return render(request, template, context, status=status)
