"""Bulk decisions on tool calls of one shape, and the bulk retry's summary."""

from __future__ import annotations

import pytest

from approvals import claims
from approvals.models import ApprovalRequest, ApprovalStatus
from approvals.views_bulk import shape_of
from policies.models import AuditEntry
from runs import engine
from runs.models import Run
from tests.conftest import drive
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_approval, add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
BULK = "/console/review/bulk/"
DECIDE = "/console/review/bulk/decide/"
SHAPE = "test.send(to)"


@pytest.fixture
def held_sends(make_workflow):
    """Three runs whose `test.send` call (to: a, b, c) the policy holds."""
    send = {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "test.send", "args": {"to": "{{ input.to }}"}},
    }
    end = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
    version = make_workflow(
        [{**send, "edges": {"next": "done"}}, end],
        policy={"autonomy": [{"tool": "test.send", "mode": "approve"}]},
    )
    made = []
    for to in "abc":
        run = engine.start_run(workflow=version.workflow, input={"to": to}).run
        assert drive(run.pk).wait_reason == "approval"
        made.append(ApprovalRequest.objects.get(run=run))
    return made


def other_shape(run_id: int) -> ApprovalRequest:
    return add_approval(
        Run.objects.get(pk=run_id),
        seq=99,
        kind="tool_call",
        draft={"tool": "test.send", "args": {"to": "x", "cc": "y"}},
    )


def test_a_shape_is_the_tool_and_its_argument_keys():
    assert shape_of({"tool": "crm.update", "args": {"b": 1, "a": {"x": 1}}}) == "crm.update(a,b)"
    assert shape_of({"tool": "t", "args": {}}) == "t()" and shape_of("text") == ""


def test_pending_tool_calls_are_grouped_by_shape(client_for, held_sends):
    extra = other_shape(held_sends[0].run_id)
    client = client_for("reviewer")
    page = client.get(BULK)
    assert page.status_code == 200
    assert page.context["shapes"] == [(SHAPE, 3), ("test.send(cc,to)", 1)]
    chosen = client.get(BULK, {"shape": SHAPE})
    assert [call.pk for call in chosen.context["items"]] == [a.pk for a in held_sends]
    body = chosen.content.decode()
    assert f'value="{extra.pk}"' not in body and body.count('name="approval"') == 3


def test_a_bulk_approval_decides_each_call_as_a_single_decision_would(
    client_for, make_user, held_sends
):
    first, second, third = held_sends
    engine.decide_approval(approval_id=second.pk, approve=False, actor_label="ann", reason="no")
    assert claims.claim(third.pk, make_user("reviewer"))  # another reviewer has it open
    extra = other_shape(first.run_id)
    client = client_for("reviewer")
    ids = [first.pk, second.pk, third.pk, extra.pk]
    done = client.post(DECIDE, {"shape": SHAPE, "approval": ids, "action": "approve"})
    assert done.status_code == 200
    results = {row["id"]: row["result"] for row in done.context["outcomes"]}
    assert results == {
        first.pk: "approved",
        second.pk: "already decided",
        third.pk: "held by another reviewer",
        extra.pk: "skipped",
    }
    assert done.context["summary"] == (
        "4 chosen → 1 approved, 1 already decided, 1 held by another reviewer, 1 skipped"
    )
    assert "4 chosen → 1 approved" in done.content.decode()
    assert drive(first.run_id).status == "succeeded"  # the approved call ran
    statuses = dict(ApprovalRequest.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert statuses[third.pk] == statuses[extra.pk] == ApprovalStatus.PENDING
    assert (
        AuditEntry.objects.filter(action="approval.approved", target_id=str(first.pk)).count() == 1
    )


def test_a_bulk_rejection_needs_a_reason_and_rejects_each(client_for, held_sends):
    client = client_for("reviewer")
    ids = [a.pk for a in held_sends]
    refused = client.post(DECIDE, {"shape": SHAPE, "approval": ids, "action": "reject"})
    assert refused.status_code == 400 and "needs a reason" in refused.content.decode()
    assert not ApprovalRequest.objects.filter(status="rejected").exists()
    done = client.post(
        DECIDE, {"shape": SHAPE, "approval": ids, "action": "reject", "reason": "wrong list"}
    )
    assert done.context["summary"] == "3 chosen → 3 rejected"
    assert all(drive(a.run_id).outcome != "done" for a in held_sends)


def test_a_suspected_injection_is_never_approved_in_bulk(client_for, held_sends):
    suspect = held_sends[0]
    ApprovalRequest.objects.filter(pk=suspect.pk).update(reason_code="injection_suspected")
    client = client_for("reviewer")
    page = client.get(BULK, {"shape": SHAPE}).content.decode()
    assert "approve alone" in page
    done = client.post(DECIDE, {"shape": SHAPE, "approval": [suspect.pk], "action": "approve"})
    [outcome] = done.context["outcomes"]
    assert outcome["result"] == "skipped" and "injection" in outcome["detail"]
    assert ApprovalRequest.objects.get(pk=suspect.pk).status == ApprovalStatus.PENDING


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_only_people_who_decide_may_decide_in_bulk(client_for, held_sends, role):
    client = client_for(role)
    assert client.get(BULK).status_code == 403
    posted = client.post(
        DECIDE, {"shape": SHAPE, "approval": [held_sends[0].pk], "action": "approve"}
    )
    assert posted.status_code == 403
    assert ApprovalRequest.objects.get(pk=held_sends[0].pk).status == ApprovalStatus.PENDING


def test_the_bulk_retry_report_says_what_became_of_the_runs(client_for, two_step_version):
    runs = [
        add_run(two_step_version, status="running"),
        add_run(two_step_version, status="stopped", stop_reason="budget"),
        add_run(two_step_version, status="stopped", stop_reason="budget"),
    ]
    ids = ",".join(str(run.pk) for run in runs)
    page = client_for("operator").get("/console/dead-letters/", {"retried": ids})
    assert page.context["retried"]["summary"] == "3 retried → 2 stopped: budget, 1 running"
    assert "Retried just now: 3 retried → 2 stopped: budget, 1 running" in page.content.decode()
