"""The rollout pages and the lanes pages of the console."""

from __future__ import annotations

import pytest
from django.urls import reverse

from approvals.models import ApprovalRequest
from policies.models import AuditEntry, LaneProposal
from runs import engine
from runs.models import Rollout, Workflow
from tests.conftest import chain, drive

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


@pytest.fixture
def workflow(make_workflow) -> Workflow:
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    return v1.workflow


def test_an_operator_publishes_the_draft_as_a_canary_from_the_rollout_page(client_for, workflow):
    client = client_for("operator")
    page = client.get(reverse("console-rollout-detail", args=[workflow.slug]))
    assert page.status_code == 200 and b"Publish as canary" in page.content
    answer = client.post(
        reverse("console-rollout-publish", args=[workflow.slug]),
        {"share_pct": "10", "reason": "new prompt"},
    )
    assert answer.status_code == 302
    active = Rollout.objects.get(workflow=workflow)
    assert (active.share_pct, active.candidate.number, active.started_by) == (
        10,
        2,
        f"user:{client.user.username}",
    )
    page = client.get(reverse("console-rollout-detail", args=[workflow.slug]))
    assert b"Canary: v2 on 10 %" in page.content and b'id="comparison-' in page.content


@pytest.mark.parametrize("role", ["viewer", "reviewer", "manager"])
def test_promote_and_roll_back_need_the_manage_rollout_permission(client_for, workflow, role):
    engine.publish_workflow(workflow=workflow, canary_share=10)
    active = Rollout.objects.get()
    client = client_for(role)
    for name in ("console-rollout-promote", "console-rollout-rollback"):
        answer = client.post(reverse(name, args=[active.pk]), {"reason": "x"})
        assert answer.status_code == 403
    answer = client.post(
        reverse("console-rollout-publish", args=[workflow.slug]), {"share_pct": "10"}
    )
    assert answer.status_code == 403
    active.refresh_from_db()
    assert active.status == "active"
    assert not AuditEntry.objects.filter(action__in=["rollout.promoted", "rollout.rolled_back"])


def test_promote_then_roll_back_from_the_console_with_htmx(client_for, workflow):
    engine.publish_workflow(workflow=workflow, canary_share=10)
    active = Rollout.objects.get()
    client = client_for("operator")
    answer = client.post(
        reverse("console-rollout-promote", args=[active.pk]),
        {"reason": "green"},
        headers={"HX-Request": "true"},
    )
    assert answer.status_code == 200 and answer["HX-Redirect"].endswith(f"/{workflow.slug}/")
    page = client.get(reverse("console-rollout-detail", args=[workflow.slug]))
    assert b'<strong id="live-version">v2</strong>' in page.content
    assert b"Roll back to v1" in page.content
    client.post(reverse("console-rollout-rollback", args=[active.pk]), {"reason": "refunds"})
    page = client.get(reverse("console-rollout-detail", args=[workflow.slug]))
    assert b'<strong id="live-version">v1</strong>' in page.content
    assert b"rolled back" in page.content and b"refunds" in page.content


def test_a_decision_without_a_reason_changes_nothing(client_for, workflow):
    engine.publish_workflow(workflow=workflow, canary_share=10)
    active = Rollout.objects.get()
    client_for("operator").post(reverse("console-rollout-promote", args=[active.pk]), {})
    active.refresh_from_db()
    assert active.status == "active"


def test_the_dashboard_shows_each_canary_live_against_candidate(client_for, workflow):
    engine.publish_workflow(workflow=workflow, canary_share=10)
    drive(engine.start_run(workflow=workflow, input={}).run.pk)
    client = client_for("operator")
    dashboard = client.get(reverse("console-dashboard"))
    assert reverse("console-dashboard-canaries").encode() in dashboard.content
    partial = client.get(reverse("console-dashboard-canaries"), headers={"HX-Request": "true"})
    assert partial.content.startswith(b'<section id="dashboard-canaries">')
    assert b"live v1 against candidate v2" in partial.content
    page = client.get(reverse("console-dashboard-canaries"))
    assert b"<html" in page.content


def test_the_rollout_list_names_live_versions_and_canaries(client_for, workflow):
    engine.publish_workflow(workflow=workflow, canary_share=25)
    page = client_for("manager").get(reverse("console-rollout-list"))
    assert page.status_code == 200 and b"v2 on 25 % of new runs" in page.content


# --- lanes ---------------------------------------------------------------------


@pytest.fixture
def approved_lane(make_workflow, settings) -> Workflow:
    settings.BOSUN_LANE_STREAK = 2
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "a"}}}
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    workflow = make_workflow(chain(send, END), policy=policy).workflow
    for _ in range(2):
        run = drive(engine.start_run(workflow=workflow, input={}).run.pk)
        request = ApprovalRequest.objects.get(run=run)
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label="ana")
    return workflow


def test_a_manager_accepts_a_lane_proposal_from_its_page(client_for, approved_lane):
    client = client_for("manager")
    listing = client.get(reverse("console-lane-list"))
    assert listing.status_code == 200 and b"Needs approval \xe2\x86\x92 auto" in listing.content
    proposal = LaneProposal.objects.get()
    page = client.get(reverse("console-lane-detail", args=[proposal.policy_id, "test.send"]))
    assert b"2 human decisions: 2 approved as they stood" in page.content
    answer = client.post(reverse("console-lane-accept", args=[proposal.pk]), {"note": "ok"})
    assert answer.status_code == 302
    proposal.refresh_from_db()
    assert proposal.status == "accepted" and proposal.new_version is not None


@pytest.mark.parametrize("role", ["reviewer", "operator", "viewer"])
def test_only_a_manager_decides_lane_proposals(client_for, approved_lane, role):
    client_for("manager").get(reverse("console-lane-list"))
    proposal = LaneProposal.objects.get()
    client = client_for(role)
    for name in ("console-lane-accept", "console-lane-dismiss"):
        assert client.post(reverse(name, args=[proposal.pk]), {"note": "x"}).status_code == 403
    proposal.refresh_from_db()
    assert proposal.status == "open"


def test_the_rollout_list_and_the_canaries_section_take_a_fixed_number_of_queries(
    client_for, make_workflow
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client = client_for("operator")

    def queries(url: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(url).status_code == 200
        return len(captured)

    def canary_workflow() -> None:
        v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
        v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
        engine.publish_workflow(workflow=v1.workflow, canary_share=10)

    canary_workflow()
    listing = queries(reverse("console-rollout-list"))
    canaries = queries(reverse("console-dashboard-canaries"))
    for _ in range(3):
        canary_workflow()
    assert queries(reverse("console-rollout-list")) == listing
    # One grouped query per running canary, no more.
    assert queries(reverse("console-dashboard-canaries")) == canaries + 3


def test_the_admin_publishes_a_version_as_a_canary_of_the_configured_share(
    client_for, workflow, settings
):
    settings.BOSUN_CANARY_SHARE_PCT = 15
    client = client_for("operator")
    changelist = client.get(reverse("admin:runs_workflow_changelist"))
    assert "Publish a new version as a canary" in changelist.content.decode()
    answer = client.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "publish_canary", "_selected_action": [workflow.pk]},
        follow=True,
    )
    assert "as a 15 % canary" in answer.content.decode()
    active = Rollout.objects.get(workflow=workflow)
    assert (active.baseline.number, active.candidate.number, active.share_pct) == (1, 2, 15)
