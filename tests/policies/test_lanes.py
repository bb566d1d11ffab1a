"""Autonomy lanes proposed from evidence (policies.lanes)."""

from __future__ import annotations

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, SampleItem, SampleReview
from policies import lanes
from policies.models import AuditEntry, LaneDirection, LaneProposal, Policy
from runs import engine
from runs.models import Run, Workflow
from tests.conftest import chain, drive
from tests.testapp.models import Execution

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}
HELD = {"key": "held", "kind": "end", "config": {"outcome": "held"}}
APPROVE_SEND = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}


@pytest.fixture(autouse=True)
def _short_streak(settings):
    settings.BOSUN_LANE_STREAK = 3
    settings.BOSUN_LANE_BACK_MIN_REVIEWS = 4
    settings.BOSUN_LANE_BACK_REJECT_RATE = 0.25


def send_workflow(make_workflow, policy=APPROVE_SEND) -> Workflow:
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "ops"}}}
    return make_workflow(chain(send, END), policy=policy).workflow


def reviewed_workflow(make_workflow) -> Workflow:
    steps = [
        {
            "key": "review",
            "kind": "approval",
            "config": {"title": "Send?", "draft": {"to": "{{ input.to }}"}},
            "edges": {"approved": "send", "rejected": "held"},
        },
        {
            "key": "send",
            "kind": "tool",
            "config": {
                "tool": "test.send",
                "approved_by": "review",
                "args": {"to": {"$ref": "steps.review.draft.to"}},
            },
            "edges": {"next": "done"},
        },
        END,
        HELD,
    ]
    return make_workflow(steps, policy=APPROVE_SEND).workflow


def decide_one(workflow: Workflow, *, approve: bool = True, edit=None, code: str = "") -> Run:
    run = drive(engine.start_run(workflow=workflow, input={"to": "ops"}).run.pk)
    assert run.wait_reason == "approval"
    request = ApprovalRequest.objects.get(run=run, status="pending")
    engine.decide_approval(
        approval_id=request.pk,
        approve=approve,
        actor_label="ana",
        edited_draft=edit,
        decision_code=code,
        reason="" if approve or code else "no",
    )
    return drive(run.pk)


def proposals(workflow: Workflow) -> list[tuple[str, str]]:
    lanes.refresh_proposals()
    found = LaneProposal.objects.filter(policy=workflow.policy, status="open")
    return [(p.tool, p.direction) for p in found]


def test_auto_is_proposed_after_n_approvals_as_they_stood_and_not_after_n_minus_1(make_workflow):
    workflow = send_workflow(make_workflow)
    for _ in range(2):
        decide_one(workflow)
    assert proposals(workflow) == []
    decide_one(workflow)
    assert proposals(workflow) == [("test.send", LaneDirection.TO_AUTO)]
    assert proposals(workflow) == [("test.send", LaneDirection.TO_AUTO)]  # not twice
    proposal = LaneProposal.objects.get()
    assert proposal.evidence["streak"] == 3 and len(proposal.evidence["approvals"]) == 3


def test_an_edit_breaks_the_streak(make_workflow):
    workflow = reviewed_workflow(make_workflow)
    decide_one(workflow)
    decide_one(workflow)
    decide_one(workflow, edit={"to": "ops-team"})
    decide_one(workflow)
    decide_one(workflow)
    assert proposals(workflow) == []
    evidence = lanes.approval_evidence(workflow.policy, "test.send")
    assert (evidence.approved, evidence.edited, evidence.streak) == (4, 1, 2)
    assert evidence.edit_rate == pytest.approx(1 / 5)
    decide_one(workflow)
    assert proposals(workflow) == [("test.send", LaneDirection.TO_AUTO)]


def test_rejections_break_the_streak_and_are_counted_by_reason_code(make_workflow):
    workflow = send_workflow(make_workflow)
    decide_one(workflow)
    decide_one(workflow, approve=False, code="wrong_recipient")
    decide_one(workflow, approve=False, code="wrong_recipient")
    decide_one(workflow, approve=False)
    decide_one(workflow)
    decide_one(workflow)
    assert proposals(workflow) == []
    evidence = lanes.approval_evidence(workflow.policy, "test.send")
    assert evidence.reasons == [("wrong_recipient", 2), ("no code", 1)]
    assert (evidence.total, evidence.rejected, evidence.streak) == (6, 3, 2)


def test_decisions_the_policy_took_are_no_evidence(make_workflow):
    workflow = send_workflow(make_workflow)
    for _ in range(3):
        run = drive(engine.start_run(workflow=workflow, input={}).run.pk)
        request = ApprovalRequest.objects.get(run=run)
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label="policy")
    assert proposals(workflow) == []


def test_accepting_saves_a_policy_version_with_the_rule_on_auto_and_calls_run_unasked(
    make_workflow,
):
    workflow = send_workflow(make_workflow)
    for _ in range(3):
        decide_one(workflow)
    lanes.refresh_proposals()
    proposal = LaneProposal.objects.get()
    before = workflow.policy.versions.count()
    lanes.accept_proposal(proposal_id=proposal.pk, actor="user:maria", note="three clean weeks")
    proposal.refresh_from_db()
    assert proposal.status == "accepted" and proposal.decided_by == "user:maria"
    assert workflow.policy.versions.count() == before + 1
    assert proposal.new_version.snapshot["autonomy"] == [{"tool": "test.send", "mode": "auto"}]
    assert AuditEntry.objects.filter(action="lane.accepted", actor="user:maria").exists()
    assert AuditEntry.objects.filter(action="policy.saved", actor="user:maria").exists()

    executed = Execution.objects.count()
    run = drive(engine.start_run(workflow=workflow, input={}).run.pk)
    assert run.status == "succeeded" and run.policy_version == proposal.new_version
    assert not ApprovalRequest.objects.filter(run=run).exists()
    assert Execution.objects.count() == executed + 1
    with pytest.raises(lanes.LaneError, match="accepted already"):
        lanes.dismiss_proposal(proposal_id=proposal.pk, actor="user:maria")


def test_accepting_with_a_bound_keeps_approval_above_it(make_workflow):
    policy = Policy(name="bounded", autonomy=[{"tool": "test.send", "mode": "approve"}])
    rules = lanes.moved(
        policy.autonomy, "test.send", LaneDirection.TO_AUTO, lanes.Bound(arg="amount", max=80)
    )
    assert rules == [
        {
            "tool": "test.send",
            "mode": "auto",
            "when": {"path": "args.amount", "op": "<=", "value": 80},
        },
        {"tool": "test.send", "mode": "approve"},
    ]


def test_dismissing_spends_the_evidence(make_workflow):
    workflow = send_workflow(make_workflow)
    for _ in range(3):
        decide_one(workflow)
    lanes.refresh_proposals()
    proposal = LaneProposal.objects.get()
    lanes.dismiss_proposal(proposal_id=proposal.pk, actor="user:maria", note="not yet")
    assert proposals(workflow) == []
    for _ in range(3):
        decide_one(workflow)
    assert proposals(workflow) == [("test.send", LaneDirection.TO_AUTO)]
    assert AuditEntry.objects.filter(action="lane.dismissed").count() == 1


def test_flagged_sample_verdicts_on_an_auto_lane_propose_the_way_back(make_workflow):
    workflow = send_workflow(
        make_workflow, policy={"autonomy": [{"tool": "test.send", "mode": "auto"}]}
    )
    runs = [drive(engine.start_run(workflow=workflow, input={}).run.pk) for _ in range(4)]
    assert all(run.status == "succeeded" for run in runs)
    review = SampleReview.objects.create(workflow=workflow, week="2026-W49", seed="s")
    verdicts = ["ok", "ok", "ok", "flagged"]  # 25 %: not above the threshold
    for run, verdict in zip(runs, verdicts, strict=True):
        SampleItem.objects.create(
            review=review, run=run, stratum="all", verdict=verdict, reviewed_at=timezone.now()
        )
    assert proposals(workflow) == []
    SampleItem.objects.filter(run=runs[0]).update(verdict="flagged")
    assert proposals(workflow) == [("test.send", LaneDirection.TO_APPROVE)]
    proposal = LaneProposal.objects.get()
    assert proposal.evidence["flagged"] == 2 and proposal.evidence["reviewed"] == 4
    lanes.accept_proposal(proposal_id=proposal.pk, actor="user:maria")
    proposal.refresh_from_db()
    assert proposal.new_version.snapshot["autonomy"][0]["mode"] == "approve"
    run = drive(engine.start_run(workflow=workflow, input={}).run.pk)
    assert run.wait_reason == "approval"
