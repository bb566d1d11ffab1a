"""Console pages for autonomy lanes: every policy's tools under `approve`
or `auto` with their evidence, one lane's approval history, and the
proposals to move a lane, which a manager accepts or dismisses.

Seeing needs `policies.view_laneproposal`, deciding
`policies.decide_laneproposal`. Opening the list brings the proposals up
to date (policies.lanes.refresh_proposals: idempotent, it proposes only
what the evidence supports and never twice). Accepting goes through
`accept_proposal`, which saves the policy as a new version and audits it.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from lib.console import after_post, console_view
from policies import lanes
from policies.audit import actor_of
from policies.models import LaneDirection, LaneProposal, LaneProposalStatus, Policy


class AcceptForm(forms.Form):
    note = forms.CharField(label="Note", max_length=4000, required=False)
    bound_arg = forms.CharField(label="Only while argument", max_length=100, required=False)
    bound_max = forms.FloatField(label="is at most", required=False)

    def bound(self) -> lanes.Bound | None:
        arg, most = self.cleaned_data.get("bound_arg"), self.cleaned_data.get("bound_max")
        return lanes.Bound(arg=arg, max=most) if arg and most is not None else None


class DismissForm(forms.Form):
    note = forms.CharField(label="Why", max_length=4000)


@require_GET
@console_view("policies.view_laneproposal")
def lane_list(request: HttpRequest) -> HttpResponse:
    lanes.refresh_proposals()
    open_ = {
        (p.policy_id, p.tool, p.direction): p
        for p in LaneProposal.objects.filter(status=LaneProposalStatus.OPEN)
    }
    rows: list[dict[str, Any]] = []
    for policy in Policy.objects.order_by("name"):
        for lane in lanes.lanes_of(policy):
            row: dict[str, Any] = {"lane": lane, "proposals": []}
            if lane.under_approval:
                row["evidence"] = lanes.approval_evidence(policy, lane.tool)
            for direction in LaneDirection:
                found = open_.get((policy.pk, lane.tool, direction))
                if found:
                    row["proposals"].append(found)
            rows.append(row)
    return render(request, "console/lanes/list.html", {"nav": "lanes", "rows": rows})


@require_GET
@console_view("policies.view_laneproposal")
def lane_detail(request: HttpRequest, policy_id: int, tool: str) -> HttpResponse:
    policy = get_object_or_404(Policy, pk=policy_id)
    lane = next((lane for lane in lanes.lanes_of(policy) if lane.tool == tool), None)
    if lane is None:
        raise Http404(f"{policy.name} has no approve or auto rule for {tool}")
    evidence = lanes.approval_evidence(policy, tool)
    context = {
        "nav": "lanes",
        "lane": lane,
        "policy": policy,
        "evidence": evidence,
        "bounds": sorted(evidence.bounds().items()),
        "sample": lanes.sample_evidence(policy, tool) if lane.has_auto else None,
        "proposals": LaneProposal.objects.filter(policy=policy, tool=tool).select_related(
            "new_version"
        )[:20],
        "can_decide": request.user.has_perm("policies.decide_laneproposal"),
        "accept_form": AcceptForm(),
        "dismiss_form": DismissForm(),
    }
    return render(request, "console/lanes/detail.html", context)


@require_POST
@console_view("policies.decide_laneproposal")
def lane_accept(request: HttpRequest, proposal_id: int) -> HttpResponse:
    proposal = get_object_or_404(LaneProposal, pk=proposal_id)
    form = AcceptForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The bound must be a number.")
    else:
        try:
            done = lanes.accept_proposal(
                proposal_id=proposal.pk,
                actor=actor_of(request.user),
                note=form.cleaned_data["note"],
                bound=form.bound(),
            )
        except lanes.LaneError as exc:
            messages.error(request, str(exc))
        else:
            assert done.new_version is not None
            messages.success(
                request, f"{done.tool}: {done.get_direction_display()} in {done.new_version}."
            )
    return after_post(request, _detail_url(proposal))


@require_POST
@console_view("policies.decide_laneproposal")
def lane_dismiss(request: HttpRequest, proposal_id: int) -> HttpResponse:
    proposal = get_object_or_404(LaneProposal, pk=proposal_id)
    form = DismissForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why (a note is required).")
    else:
        try:
            lanes.dismiss_proposal(
                proposal_id=proposal.pk,
                actor=actor_of(request.user),
                note=form.cleaned_data["note"],
            )
        except lanes.LaneError as exc:
            messages.error(request, str(exc))
        else:
            messages.info(request, f"{proposal.tool}: proposal dismissed.")
    return after_post(request, _detail_url(proposal))


def _detail_url(proposal: LaneProposal) -> str:
    return reverse("console-lane-detail", args=[proposal.policy_id, proposal.tool])
