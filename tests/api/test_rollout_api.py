"""The rollout and lanes API: canary, promote, roll back, comparison, proposals."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from policies.models import AuditEntry, LaneProposal
from runs import engine
from runs.models import Rollout, Workflow
from tests.api.conftest import client_for, post
from tests.conftest import chain, drive

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


@pytest.fixture
def workflow(make_workflow) -> Workflow:
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    v1.workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    engine.publish_workflow(workflow=v1.workflow)  # v2, live
    return v1.workflow


def test_a_key_starts_a_canary_promotes_it_and_rolls_it_back(api, workflow):
    # v2 is live; try v1 again on 20 % of new runs (any published version).
    started = post(
        api, "/api/v1/rollouts", {"workflow": workflow.slug, "version": 1, "share_pct": 20}
    )
    assert started.status_code == 201, started.content
    body = started.json()
    assert (body["baseline"], body["candidate"], body["share_pct"], body["status"]) == (
        2,
        1,
        20,
        "active",
    )
    again = post(api, "/api/v1/rollouts", {"workflow": workflow.slug, "version": 1, "share_pct": 5})
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"

    drive(engine.start_run(workflow=workflow, input={}).run.pk)
    read = api.get(f"/api/v1/rollouts/{body['id']}")
    assert read.status_code == 200
    sides = {row["side"]: row for row in read.json()["versions"]}
    assert sides["live"]["version"] == 2 and sides["candidate"]["version"] == 1
    assert sides["live"]["runs"] + sides["candidate"]["runs"] == 1

    promoted = post(api, f"/api/v1/rollouts/{body['id']}/promote", {"reason": "fine"})
    assert promoted.status_code == 200 and promoted.json()["status"] == "promoted"
    assert engine.start_run(workflow=workflow, input={}).run.version.number == 1
    back = post(api, f"/api/v1/rollouts/{body['id']}/rollback", {"reason": "not fine"})
    assert back.status_code == 200 and back.json()["status"] == "rolled_back"
    assert engine.start_run(workflow=workflow, input={}).run.version.number == 2
    actors = set(
        AuditEntry.objects.filter(action__startswith="rollout.").values_list("actor", flat=True)
    )
    assert len(actors) == 1 and actors.pop().startswith("key:")
    listed = api.get("/api/v1/rollouts", {"workflow": workflow.slug})
    assert [r["status"] for r in listed.json()] == ["rolled_back"]


def test_rollout_changes_need_the_rollouts_scope(make_key, workflow):
    client = client_for(make_key(scopes=["runs:read", "runs:write"]))
    answer = post(
        client, "/api/v1/rollouts", {"workflow": workflow.slug, "version": 1, "share_pct": 20}
    )
    assert answer.status_code == 403 and answer.json()["code"] == "missing_scope"
    assert not Rollout.objects.exists()


def test_a_promote_needs_a_reason(api, workflow):
    started = post(
        api, "/api/v1/rollouts", {"workflow": workflow.slug, "version": 1, "share_pct": 20}
    )
    answer = post(api, f"/api/v1/rollouts/{started.json()['id']}/promote", {"reason": ""})
    assert answer.status_code == 422


def test_a_key_bound_to_another_workflow_does_not_see_the_rollout(
    make_key, workflow, make_workflow
):
    other = make_workflow(chain(END)).workflow
    started = post(
        client_for(make_key()),
        "/api/v1/rollouts",
        {"workflow": workflow.slug, "version": 1, "share_pct": 20},
    )
    bound = client_for(make_key(workflows=[other]))
    assert bound.get(f"/api/v1/rollouts/{started.json()['id']}").status_code == 404
    answer = post(bound, f"/api/v1/rollouts/{started.json()['id']}/promote", {"reason": "x"})
    assert answer.status_code == 404
    assert bound.get("/api/v1/rollouts").json() == []


def test_lane_proposals_are_listed_and_accepted(api, make_workflow, settings):
    settings.BOSUN_LANE_STREAK = 2
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "a"}}}
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    lane = make_workflow(chain(send, END), policy=policy).workflow
    for _ in range(2):
        run = drive(engine.start_run(workflow=lane, input={}).run.pk)
        request = ApprovalRequest.objects.get(run=run)
        engine.decide_approval(approval_id=request.pk, approve=True, actor_label="ana")
    listed = api.get("/api/v1/lanes/proposals")
    assert listed.status_code == 200
    [proposal] = listed.json()
    assert (proposal["tool"], proposal["direction"], proposal["status"]) == (
        "test.send",
        "to_auto",
        "open",
    )
    accepted = post(api, f"/api/v1/lanes/proposals/{proposal['id']}/accept", {"note": "ok"})
    assert accepted.status_code == 200 and accepted.json()["new_version"] is not None
    again = post(api, f"/api/v1/lanes/proposals/{proposal['id']}/dismiss", {"note": "no"})
    assert again.status_code == 409
    assert LaneProposal.objects.get().status == "accepted"
