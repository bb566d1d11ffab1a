"""Console pages for people: the review queue and the weekly sample review.

Function views; an htmx request (`request.htmx`) gets the partial it swaps
in, any other request the full page, so every page works without
JavaScript. Roles are permissions: seeing the queue needs
`approvals.view_approvalrequest`, deciding `approvals.decide_approval`.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from django.contrib import messages
from django.db.models import Count, Q
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from approvals import claims, drafts, sampling
from approvals.forms import (
    DecisionForm,
    DrawForm,
    ReplaySetForm,
    ReviewFilterForm,
    SampleVerdictForm,
    draft_text,
)
from approvals.models import (
    ApprovalKind,
    ApprovalRequest,
    ApprovalStatus,
    ReasonCode,
    SampleItem,
    SampleReview,
    SampleVerdict,
)
from lib.console import after_post, console_view, is_partial
from lib.screening import redact_value
from runs import engine
from runs.models import StepRun, StepRunStatus

QUEUE_PAGE = 50  # the oldest this many; the count says how many more wait
SHOWN_CHARS = 6000  # a context value longer than this is cut on the page
REASONS = {
    "policy_requires_approval": "The policy's autonomy rule for this tool asks for approval.",
    "tainted_run": "The run has read content from an untrusted source: its writes and "
    "egress need a person's approval, whatever that content says.",
    "injection_suspected": "Untrusted content the run read looks like an attempt to instruct "
    "the agent: every write and egress needs a person, trusted destinations included.",
    "review_required": "The workflow puts this draft in front of a reviewer.",
}
_APPROVAL_RELATED = ("run__workflow", "run__version", "run__policy_version__policy")


# --- review queue ---------------------------------------------------------------


@require_GET
@console_view("approvals.view_approvalrequest")
def review_queue(request: HttpRequest) -> HttpResponse:
    """Pending requests, oldest first, each with what produced it; filters
    by workflow, queue, reason code and due time."""
    form = ReviewFilterForm(request.GET or None)
    pending = form.pending()
    total = pending.count()
    shown = list(
        pending.select_related(*_APPROVAL_RELATED).order_by("created_at", "id")[:QUEUE_PAGE]
    )
    context = {
        "nav": "review",
        "form": form,
        "filters": form.query(),
        "items": _items(request, shown),
        "total": total,
        "more": max(0, total - len(shown)),
    }
    if is_partial(request):
        return render(request, "console/review/partials/_queue.html", context)
    return render(request, "console/review/queue.html", context)


@require_GET
@console_view("approvals.view_approvalrequest")
def review_count(request: HttpRequest) -> HttpResponse:
    """The pending count under the filters, polled by the queue page."""
    form = ReviewFilterForm(request.GET or None)
    total = form.pending().count()
    return render(
        request,
        "console/review/partials/_count.html",
        {"total": total, "filters": form.query()},
    )


@require_GET
@console_view("approvals.decide_approval")
def review_focus(request: HttpRequest) -> HttpResponse:
    """The review flow: one request at a time, the oldest this reviewer may
    take under the filters, claimed while it is open; keyboard shortcuts
    decide it and the answer is the next one."""
    return _focus(request, skipped=_skipped(request.GET.get("skip", "")))


@require_POST
@console_view("approvals.decide_approval")
def review_skip(request: HttpRequest, approval_id: int) -> HttpResponse:
    """Leave this one for someone else (its claim is given back) and go on."""
    claims.release(approval_id, request.user)
    skipped = [*_skipped(request.POST.get("skip", "")), approval_id]
    if not is_partial(request):
        return redirect(_focus_url(request.POST.get("filters", ""), skipped))
    return _focus(request, skipped=skipped, filters=request.POST.get("filters", ""))


def _focus(
    request: HttpRequest,
    *,
    skipped: list[int],
    filters: str | None = None,
    message: str = "",
    state: str = "",
    item: dict[str, Any] | None = None,
) -> HttpResponse:
    """The flow's page: `item` (one refused with errors), else the next
    request this reviewer may take, claimed."""
    query = QueryDict(filters) if filters is not None else request.GET
    form = ReviewFilterForm(query or None)
    pending = form.pending()
    open_to_me = pending.filter(claims.claimable(request.user)).exclude(pk__in=skipped)
    if item is None:
        candidates = open_to_me.order_by("created_at", "id").values_list("pk", flat=True)
        for candidate in candidates[:5]:
            if claims.claim(candidate, request.user):  # another reviewer may take it first
                approval = ApprovalRequest.objects.select_related(*_APPROVAL_RELATED).get(
                    pk=candidate
                )
                item = _items(request, [approval])[0]
                break
    context = {
        "nav": "review",
        "item": item,
        "left": open_to_me.count(),
        "held": claims.held_by_others(pending, request.user).count(),
        "skip": ",".join(map(str, skipped)),
        "skipped": len(skipped),
        "filters": form.query(),
        "message": message,
        "state": state,
        "origin": "focus",
    }
    if is_partial(request):
        return render(request, "console/review/partials/_focus.html", context)
    return render(request, "console/review/focus.html", context)


def _skipped(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip().isdigit()][:500]


def _focus_url(filters: str, skipped: list[int]) -> str:
    query = QueryDict(filters, mutable=True)
    if skipped:
        query["skip"] = ",".join(map(str, skipped))
    encoded = query.urlencode()
    return reverse("console-review-focus") + (f"?{encoded}" if encoded else "")


@require_GET
@console_view("approvals.view_approvalrequest")
def review_detail(request: HttpRequest, approval_id: int) -> HttpResponse:
    """One request (pending or decided): where a notification links to."""
    approval = get_object_or_404(
        ApprovalRequest.objects.select_related(*_APPROVAL_RELATED), pk=approval_id
    )
    item = _items(request, [approval])[0]
    partial = is_partial(request)
    template = "console/review/partials/_item.html" if partial else "console/review/detail.html"
    return render(request, template, {"nav": "review", "item": item, "origin": "detail"})


@require_POST
@console_view("approvals.decide_approval")
def review_decide(request: HttpRequest, approval_id: int) -> HttpResponse:
    """Approve, edit then approve, or reject; the run resumes at once.
    A request someone else decided first, or has open, says so in the page."""
    approval = get_object_or_404(
        ApprovalRequest.objects.select_related(*_APPROVAL_RELATED), pk=approval_id
    )
    origin = request.POST.get("origin")
    origin = origin if origin in ("detail", "focus") else "queue"
    form = DecisionForm(request.POST, approval=approval)
    if approval.status != ApprovalStatus.PENDING:
        return _already_decided(request, approval, origin)
    if not form.is_valid():
        return _item_with_errors(request, approval, form, origin)
    action = form.cleaned_data["action"]
    try:
        decided = engine.decide_approval(
            approval_id=approval.pk,
            approve=action != "reject",
            actor=request.user,
            edited_draft=form.edited,
            reason=form.cleaned_data["reason"].strip(),
            decision_code=form.cleaned_data.get("code") or "" if action == "reject" else "",
            honour_claims=True,
        )
    except engine.AlreadyDecided:
        return _already_decided(request, approval, origin)
    except engine.ClaimedByOther as exc:
        form.add_error(None, f"{exc}: your decision was not recorded.")
        return _item_with_errors(request, approval, form, origin)
    except engine.InvalidState as exc:
        form.add_error(None, str(exc))
        return _item_with_errors(request, approval, form, origin)
    done = {"edit": "Edited and approved", "approve": "Approved", "reject": "Rejected"}[action]
    if action == "edit" and decided.edited_draft is None:
        done = "Approved (the draft was not changed)"
    text = f"{done}: {decided.title or decided.step_key} (run {decided.run_id}). The run resumes."
    if origin == "focus":
        return _after_focus_decision(request, text, decided.status)
    if is_partial(request) and origin == "queue":
        item = {"approval": decided, "message": text, "state": decided.status}
        return render(request, "console/review/partials/_decided.html", {"item": item})
    messages.success(request, text)
    return after_post(request, reverse("console-review-queue"))


def _after_focus_decision(request: HttpRequest, text: str, state: str) -> HttpResponse:
    """The review flow goes straight on to the next request, in the same answer."""
    skipped = _skipped(request.POST.get("skip", ""))
    filters = request.POST.get("filters", "")
    if is_partial(request):
        return _focus(request, skipped=skipped, filters=filters, message=text, state=state)
    messages.success(request, text)
    return redirect(_focus_url(filters, skipped))


def _already_decided(request: HttpRequest, approval: ApprovalRequest, origin: str) -> HttpResponse:
    approval.refresh_from_db()
    who = approval.decided_by_label or "someone else"
    if approval.status == ApprovalStatus.CANCELLED:
        text = f"Run {approval.run_id} was cancelled; nothing to decide any more."
    else:
        text = f"Already {approval.status} by {who}; your decision was not recorded."
    if is_partial(request) and origin == "focus":
        skipped = _skipped(request.POST.get("skip", ""))
        filters = request.POST.get("filters", "")
        return _focus(request, skipped=skipped, filters=filters, message=text, state="conflict")
    if is_partial(request):
        item = {"approval": approval, "message": text, "state": "conflict"}
        return render(request, "console/review/partials/_decided.html", {"item": item})
    messages.warning(request, text)
    if origin == "detail":
        return redirect("console-review-detail", approval_id=approval.pk)
    if origin == "focus":
        return redirect(_focus_url(request.POST.get("filters", ""), []))
    return redirect("console-review-queue")


def _item_with_errors(
    request: HttpRequest, approval: ApprovalRequest, form: DecisionForm, origin: str
) -> HttpResponse:
    """The item again, with the reviewer's text kept and the errors shown.
    An htmx swap needs a 2xx; a plain form post gets 400."""
    item = _items(request, [approval], form=form)[0]
    if origin == "focus":
        skipped = _skipped(request.POST.get("skip", ""))
        filters = request.POST.get("filters", "")
        response = _focus(request, skipped=skipped, filters=filters, item=item)
        if not is_partial(request):
            response.status_code = 400
        return response
    context = {"nav": "review", "item": item, "origin": origin}
    if is_partial(request):
        return render(request, "console/review/partials/_item.html", context)
    return render(request, "console/review/detail.html", context, status=400)


def _items(
    request: HttpRequest, approvals: list[ApprovalRequest], form: DecisionForm | None = None
) -> list[dict[str, Any]]:
    """Each request with its run's context: the steps before it (one query
    for all of them), redacted for anyone without `view_personal_data`."""
    private = request.user.has_perm("runs.view_personal_data")
    show = (lambda value: value) if private else redact_value
    steps: dict[int, list[StepRun]] = defaultdict(list)
    records = StepRun.objects.filter(
        run_id__in={a.run_id for a in approvals}, status=StepRunStatus.SUCCEEDED
    ).order_by("run_id", "seq")
    for record in records.only(
        "run_id", "seq", "step_key", "kind", "edge", "output", "provider", "model_requested",
        "model_answered", "tokens_in", "tokens_out", "cost_usd", "cache_hit",
    ):  # fmt: skip
        steps[record.run_id].append(record)
    now = timezone.now()
    can_decide = request.user.has_perm("approvals.decide_approval")
    pending = any(a.status == ApprovalStatus.PENDING for a in approvals)
    codes = list(ReasonCode.objects.filter(active=True)) if can_decide and pending else []
    return [
        {
            "approval": a,
            "draft": draft_text(a.draft),
            "view": drafts.view(a.draft, tool_call=a.kind == ApprovalKind.TOOL_CALL),
            "edit_fields": _edit_fields(a, form),
            "edited": draft_text(a.edited_draft) if a.edited_draft is not None else "",
            "editable": a.kind != ApprovalKind.TOOL_CALL,
            "input": _shown(show(a.run.input)),
            "steps": [
                {"record": s, "output": _shown(show(s.output))}
                for s in steps[a.run_id]
                if s.seq < a.seq
            ],
            "why": _why(a),
            "overdue": a.status == ApprovalStatus.PENDING
            and a.due_at is not None
            and a.due_at <= now,
            "can_decide": can_decide and a.status == ApprovalStatus.PENDING,
            "codes": codes,
            "claimed_by_other": a.status == ApprovalStatus.PENDING
            and a.claimed_until is not None
            and a.claimed_until > now
            and a.claimed_by_id != request.user.pk,
            "typed": form.data if form is not None else {},
            "errors": _decision_errors(form),
        }
        for a in approvals
    ]


def _edit_fields(a: ApprovalRequest, form: DecisionForm | None) -> list[dict[str, Any]]:
    """The inputs of a structured draft's edit form: each field with what
    the reviewer typed last (after a refused submission) and its error."""
    if a.kind == ApprovalKind.TOOL_CALL or not isinstance(a.draft, dict):
        return []
    typed = form.data if form is not None and form.data.get("action") == "edit" else {}
    errors = form.field_errors if form is not None else {}
    return [
        {
            "field": f,
            "text": typed.get(f.input_name, f.text),
            "error": errors.get(f.name, ""),
        }
        for f in drafts.fields_of(a.draft)
    ]


def _decision_errors(form: DecisionForm | None) -> dict[str, list[Any]]:
    if form is None:
        return {}
    errors = {field: list(errs) for field, errs in form.errors.items()}
    general = errors.pop("__all__", []) + errors.pop("action", [])
    return {"all": general, **errors}


def _why(approval: ApprovalRequest) -> str:
    code = approval.reason_code
    if code.startswith("check:"):
        return f"The output check {code[6:]} held on the output of an earlier step."
    text = REASONS.get(code, "")
    if code in ("tainted_run", "injection_suspected") and approval.run.taint_reason:
        text += f" Source: {approval.run.taint_reason}."
    if approval.run.taint_signals:
        text += f" Looks like an injection: {approval.run.taint_signals}."
    return text


def _shown(value: Any) -> str:
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, indent=2, ensure_ascii=False, default=str)
    )
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "\n… (cut)"


# --- weekly sample review ----------------------------------------------------------


SAMPLES_SHOWN = 100


@require_GET
@console_view("approvals.view_samplereview")
def sample_list(request: HttpRequest) -> HttpResponse:
    """Samples by week with their progress, and the flagged rates."""
    done = ~Q(items__verdict=SampleVerdict.PENDING)
    reviews = SampleReview.objects.select_related("workflow").annotate(
        drawn=Count("items"),
        reviewed=Count("items", filter=done),
        flagged=Count("items", filter=Q(items__verdict=SampleVerdict.FLAGGED)),
    )
    context = {
        "nav": "sample",
        "reviews": reviews.order_by("-week", "workflow__name")[:SAMPLES_SHOWN],
        "by_week": sampling.flagged_rates(by="week"),
        "by_version": sampling.flagged_rates(by="version"),
        "draw_form": DrawForm(
            initial={"week": sampling.last_full_week(), "size": sampling.DEFAULT_SIZE}
        ),
    }
    if is_partial(request):
        return render(request, "console/sample/partials/_samples.html", context)
    return render(request, "console/sample/list.html", context)


@require_POST
@console_view("approvals.change_sampleitem")
def sample_draw(request: HttpRequest) -> HttpResponse:
    """Draw a week's samples now (the `sample_week` command does the same).
    Those who review the sample may draw it."""
    form = DrawForm(request.POST)
    if form.is_valid():
        week = form.cleaned_data["week"]
        try:
            drawn = sampling.draw_week(week=week, size=form.cleaned_data["size"])
        except ValueError as exc:  # a week that does not exist, e.g. 2026-W60
            form.add_error("week", str(exc))
        else:
            new = sum(created for _, created in drawn)
            messages.success(
                request,
                f"{week}: {new} new sample(s), {len(drawn) - new} drawn before."
                if drawn
                else f"{week}: no runs finished that week.",
            )
    if form.errors:
        messages.error(request, "Not drawn: " + "; ".join(_errors(form)))
    return after_post(request, reverse("console-sample-list"))


@require_GET
@console_view("approvals.view_samplereview")
def sample_detail(request: HttpRequest, review_id: int) -> HttpResponse:
    """One week's sample of one workflow: each run with its verdict."""
    review = get_object_or_404(SampleReview.objects.select_related("workflow"), pk=review_id)
    items = _sample_items(request, review.items.all())
    flagged = sum(1 for item in items if item["item"].verdict == SampleVerdict.FLAGGED)
    context = {
        "nav": "sample",
        "review": review,
        "items": items,
        "flagged": flagged,
        "reviewed": sum(1 for item in items if item["item"].verdict != SampleVerdict.PENDING),
        "replay_form": ReplaySetForm(initial={"name": f"{review.workflow.slug}-flagged"}),
        "can_replay": request.user.has_perms(
            ["approvals.add_replayset", "approvals.change_replayset"]
        ),
    }
    if is_partial(request):
        return render(request, "console/sample/partials/_items.html", context)
    return render(request, "console/sample/detail.html", context)


@require_POST
@console_view("approvals.change_sampleitem")
def sample_item_review(request: HttpRequest, item_id: int) -> HttpResponse:
    """Mark one sampled run ok, or flagged with a category and a note."""
    item = get_object_or_404(SampleItem, pk=item_id)
    form: SampleVerdictForm | None
    form = SampleVerdictForm(request.POST)
    if form.is_valid():
        item = sampling.review_item(item_id=item.pk, by=request.user, **form.cleaned_data)
        form = None
    row = _sample_items(request, SampleItem.objects.filter(pk=item.pk), form=form)[0]
    if is_partial(request):
        return render(request, "console/sample/partials/_item.html", {"row": row})
    if form is not None:
        messages.error(request, "Not saved: " + "; ".join(_errors(form)))
    return redirect(reverse("console-sample-detail", args=[item.review_id]) + f"#item-{item.pk}")


@require_POST
@console_view(("approvals.add_replayset", "approvals.change_replayset"))
def sample_replay(request: HttpRequest, review_id: int) -> HttpResponse:
    """Keep the sample's flagged runs in a replay set, to replay against
    the next version of the workflow."""
    review = get_object_or_404(SampleReview, pk=review_id)
    form = ReplaySetForm(request.POST)
    if form.is_valid():
        try:
            replay_set, added = sampling.add_flagged_to_replay_set(
                review=review, name=form.cleaned_data["name"]
            )
        except engine.InvalidInput as exc:
            form.add_error("name", "; ".join(exc.fields.values()))
        else:
            messages.success(
                request, f"{added} flagged run(s) added to replay set {replay_set.name}."
            )
    if form.errors:
        messages.error(request, "Not added: " + "; ".join(_errors(form)))
    url = reverse("console-sample-detail", args=[review.pk])
    return after_post(request, url)


def _sample_items(request: HttpRequest, items, form: SampleVerdictForm | None = None) -> list:
    """Rows for the sample page; with `form`, what the reviewer typed and
    why it was refused."""
    can_review = request.user.has_perm("approvals.change_sampleitem")
    labels = dict(sampling.CATEGORIES)
    rows = items.select_related("run__version", "reviewed_by").order_by("stratum", "run_id")
    return [
        {
            "item": item,
            "can_review": can_review,
            "categories": sampling.CATEGORIES,
            "category_label": labels.get(item.category, item.category),
            "category": form.data.get("category", "") if form else item.category,
            "note": form.data.get("note", "") if form else item.note,
            "errors": _errors(form) if form else [],
        }
        for item in rows
    ]


def _errors(form) -> list[str]:
    return [
        f"{'' if field == '__all__' else field + ': '}{error}"
        for field, errors in form.errors.items()
        for error in errors
    ]
