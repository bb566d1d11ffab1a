"""Knowledge guards at the gate: a pause is obeyed at the moment of the
send, not only when a step looked it up earlier."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail

from approvals.models import ApprovalRequest
from demo.models import VendorCall
from knowledge import services as knowledge
from knowledge.models import EventType
from runs import engine
from runs.models import StepRun, ToolCallRecord
from tests.conftest import drive
from tests.samples.conftest import OUTREACH, run_of

pytestmark = pytest.mark.django_db
LEADS = "lead-qualification"
ACCOUNT = "acme-robotics.example"


def _pause(key: str, *, days: int = 200, reason: str = "founder request"):
    account = knowledge.upsert_entity(type="account", key=key)
    return knowledge.record_event(
        entity=account,
        type="outreach.paused",
        payload={},
        reason=reason,
        actor_label="ana",
        valid_until=knowledge.database_now() + timedelta(days=days),
    )


def _approve_waiting_draft(run):
    review = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=review.pk, approve=True, actor_label="riley")
    return drive(run.pk)


def test_an_account_paused_while_its_draft_waits_is_not_emailed_after_approval(samples):
    run = run_of(LEADS, OUTREACH)
    assert run.wait_reason == "approval"  # the pause step found nothing then
    event = _pause(ACCOUNT)

    run = _approve_waiting_draft(run)

    assert not VendorCall.objects.filter(vendor="mailco").exists()
    assert (run.status, run.outcome, run.success) == ("succeeded", "held_at_send", False)
    refused = StepRun.objects.get(run=run, step_key="send").output
    assert refused["code"] == "guarded"
    assert refused["events"][0]["id"] == event.pk
    assert refused["events"][0]["reason"] == "founder request"
    assert "outreach.paused on account:acme-robotics.example" in refused["reason"]
    ledger = ToolCallRecord.objects.get(run=run, tool="outreach.send")
    assert ledger.status == "failed" and "held" in ledger.error


def test_a_pause_recorded_under_an_alias_of_the_account_holds_the_send(samples):
    run = run_of(LEADS, OUTREACH)
    account = knowledge.upsert_entity(type="account", key=ACCOUNT)
    knowledge.add_alias(entity=account, key="acme robotics")
    _pause("acme robotics")
    run = _approve_waiting_draft(run)
    assert run.outcome == "held_at_send"
    assert not VendorCall.objects.filter(vendor="mailco").exists()


def test_a_pause_that_ended_or_was_superseded_holds_nothing(samples):
    first = run_of(LEADS, OUTREACH)
    event = _pause(ACCOUNT)
    knowledge.supersede_event(
        event=event,
        payload={},
        reason="founder changed their mind",
        actor_label="ana",
        valid_from=knowledge.database_now() - timedelta(days=2),
        valid_until=knowledge.database_now() - timedelta(days=1),
    )
    run = _approve_waiting_draft(first)
    assert run.outcome == "outreach_sent"
    assert VendorCall.objects.filter(vendor="mailco").count() == 1


def test_a_guard_holds_email_send_called_directly_through_the_gate(make_workflow):
    EventType.objects.get_or_create(name="outreach.paused")
    send = {
        "key": "send",
        "kind": "tool",
        "config": {
            "tool": "email.send",
            "args": {"to": ["{{ input.to }}"], "subject": "Hi", "body": "Hello"},
        },
        "edges": {"next": "done"},
    }
    policy = {
        "destinations": {"email.send": ["*"]},
        "guards": [
            {"event_type": "outreach.paused", "entity_type": "account", "tools": ["email.send"]}
        ],
    }
    version = make_workflow(
        [send, {"key": "done", "kind": "end", "config": {"outcome": "done"}}], policy=policy
    )
    _pause("globex.io")
    held = drive(engine.start_run(workflow=version.workflow, input={"to": "cfo@globex.io"}).run.pk)
    other = drive(
        engine.start_run(workflow=version.workflow, input={"to": "cfo@initech.io"}).run.pk
    )
    assert held.status == "failed" and "outreach.paused" in held.error
    assert other.outcome == "done"
    assert [m.to for m in mail.outbox] == [["cfo@initech.io"]]
