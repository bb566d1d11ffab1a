"""Bulk decisions on tool calls held for approval, by the shape of their
arguments.

Pending tool-call requests are grouped by shape: the same tool and the same
argument keys (`shape_of`). A reviewer with `approvals.decide_approval`
picks a group, looks at each call's arguments side by side, unticks any
that should not go with the rest, and approves or rejects (with a reason)
the ticked ones. Each is decided through `engine.decide_approval` with the
console's claims honoured, exactly as a single decision: of a reviewer
deciding the same item at once one wins, the others are told who. The
answer lists every item with its outcome.

A request flagged `injection_suspected` is never approved in bulk (it is
listed as skipped: open it and decide it alone); rejecting it in bulk is
allowed. The selection is checked again when it is posted: an item that is
no longer pending, or no longer of the chosen shape, is not decided.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, cast

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from approvals.models import ApprovalKind, ApprovalRequest, ApprovalStatus, ReasonCode
from lib.console import console_view
from lib.screening import redact_value
from runs import engine

SCANNED = 2000  # the oldest pending tool calls grouped (each one's draft is read)
BULK_LIMIT = 200  # decided per post: each is one engine call, a request stays short
NEVER_BULK_APPROVED = ("injection_suspected",)


def shape_of(draft: Any) -> str:
    """A tool call's shape, "tool(key1,key2)": its tool and its argument keys."""
    if not isinstance(draft, dict):
        return ""
    args = draft.get("args")
    keys = sorted(args) if isinstance(args, dict) else []
    return f"{draft.get('tool', '')}({','.join(keys)})"


def _pending_calls():
    return ApprovalRequest.objects.filter(
        status=ApprovalStatus.PENDING, kind=ApprovalKind.TOOL_CALL
    ).order_by("created_at", "id")


class BulkDecisionForm(forms.Form):
    shape = forms.CharField(max_length=500)
    approval = forms.TypedMultipleChoiceField(coerce=int, choices=[])
    action = forms.ChoiceField(choices=[("approve", "Approve"), ("reject", "Reject")])
    reason = forms.CharField(required=False, max_length=2000, widget=forms.Textarea)
    code = forms.ChoiceField(required=False, choices=[])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        codes = ReasonCode.objects.filter(active=True).values_list("code", "label")
        ids = self.data.getlist("approval") if hasattr(self.data, "getlist") else []
        cast(forms.ChoiceField, self.fields["code"]).choices = [("", "—"), *codes]
        choices = [(value, value) for value in ids]
        cast(forms.ChoiceField, self.fields["approval"]).choices = choices

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("action") == "reject" and not (
            (data.get("reason") or "").strip() or data.get("code")
        ):
            raise forms.ValidationError("A rejection needs a reason code or a reason.")
        if len(data.get("approval") or []) > BULK_LIMIT:
            raise forms.ValidationError(f"Choose at most {BULK_LIMIT} at once.")
        return data


@require_GET
@console_view("approvals.decide_approval")
def review_bulk(request: HttpRequest) -> HttpResponse:
    """The shapes of the pending tool calls, and the calls of the chosen one."""
    calls = list(
        _pending_calls()
        .select_related("run__workflow")
        .only("id", "draft", "reason_code", "created_at", "run_id", "run__workflow__slug")[:SCANNED]
    )
    shapes = Counter(shape_of(call.draft) for call in calls)
    chosen = request.GET.get("shape", "")
    items = [call for call in calls if chosen and shape_of(call.draft) == chosen][:BULK_LIMIT]
    show = _shower(request)
    for call in items:
        args = call.draft.get("args") or {}
        call.shown_args = [(key, _text(show(args[key]))) for key in sorted(args)]
        call.bulk_approvable = call.reason_code not in NEVER_BULK_APPROVED
    context = {
        "nav": "review",
        "shapes": sorted(shapes.items(), key=lambda pair: (-pair[1], pair[0])),
        "chosen": chosen,
        "items": items,
        "keys": sorted(items[0].draft.get("args") or {}) if items else [],
        "form": BulkDecisionForm(),
        "scanned": SCANNED,
        "limit": BULK_LIMIT,
    }
    return render(request, "console/review/bulk.html", context)


@require_POST
@console_view("approvals.decide_approval")
def review_bulk_decide(request: HttpRequest) -> HttpResponse:
    """Decide the ticked calls, one engine call each; answer with every
    item's outcome and a summary ("3 approved, 1 already decided")."""
    form = BulkDecisionForm(request.POST)
    if not form.is_valid():
        context = {"nav": "review", "form": form, "outcomes": [], "summary": ""}
        return render(request, "console/review/bulk_done.html", context, status=400)
    data = form.cleaned_data
    approve = data["action"] == "approve"
    found = {
        call.pk: call
        for call in ApprovalRequest.objects.filter(pk__in=data["approval"]).only(
            "id", "kind", "draft", "status", "reason_code", "run_id", "title", "step_key"
        )
    }
    outcomes = [
        _decide_one(request, found.get(pk), pk, data, approve=approve) for pk in data["approval"]
    ]
    tally = Counter(outcome["result"] for outcome in outcomes)
    summary = ", ".join(f"{count} {result}" for result, count in tally.most_common())
    context = {
        "nav": "review",
        "form": form,
        "outcomes": outcomes,
        "summary": f"{len(outcomes)} chosen → {summary}" if outcomes else "",
        "shape": data["shape"],
    }
    return render(request, "console/review/bulk_done.html", context)


def _decide_one(
    request: HttpRequest,
    call: ApprovalRequest | None,
    pk: int,
    data: dict[str, Any],
    *,
    approve: bool,
) -> dict[str, Any]:
    """One item's decision and its outcome, as the single decision does it."""
    done = {"id": pk, "run_id": call.run_id if call else None, "ok": False}
    if call is None:
        return {**done, "result": "not found", "detail": "no such request"}
    if call.kind != ApprovalKind.TOOL_CALL or shape_of(call.draft) != data["shape"]:
        return {**done, "result": "skipped", "detail": "not a tool call of the chosen shape"}
    if approve and call.reason_code in NEVER_BULK_APPROVED:
        return {**done, "result": "skipped", "detail": "suspected injection: decide it alone"}
    try:
        decided = engine.decide_approval(
            approval_id=pk,
            approve=approve,
            actor=request.user,
            reason=(data.get("reason") or "").strip(),
            decision_code="" if approve else data.get("code") or "",
            honour_claims=True,
        )
    except engine.AlreadyDecided as exc:
        return {**done, "result": "already decided", "detail": str(exc)}
    except engine.ClaimedByOther as exc:
        return {**done, "result": "held by another reviewer", "detail": str(exc)}
    except engine.EngineError as exc:
        return {**done, "result": "not decided", "detail": str(exc)}
    return {**done, "ok": True, "result": decided.status, "detail": "the run resumes"}


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _shower(request: HttpRequest):
    if request.user.has_perm("runs.view_personal_data"):
        return lambda value: value
    return redact_value
