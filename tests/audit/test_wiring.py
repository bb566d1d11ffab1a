"""Every human or policy decision writes one audit entry, with its change.

Admin actions go through the same service functions as the API and the
console, so these tests drive admin where a person acts (the actor is the
logged-in user) and the engine where the policy acts (actor "policy").
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.urls import reverse

from policies import audit
from policies.models import AgentRole, AuditEntry, KillSwitch, Policy
from runs import engine
from runs.engine.switches import set_switch
from runs.models import Run, ToolCallRecord, Workflow
from tests.conftest import chain, drive

pytestmark = pytest.mark.django_db

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
ECHO = {"key": "echo", "kind": "tool", "config": {"tool": "echo", "args": {"value": 1}}}


def last_id() -> int:
    return AuditEntry.objects.order_by("-id").values_list("id", flat=True).first() or 0


def entries_since(mark: int) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(id__gt=mark).order_by("id"))


def only_entry(mark: int) -> AuditEntry:
    found = entries_since(mark)
    assert len(found) == 1, [(e.action, e.actor) for e in found]
    return found[0]


def inline(prefix: str, existing: int = 0) -> dict[str, int]:
    """The management form of an admin inline with no new rows."""
    return {f"{prefix}-TOTAL_FORMS": existing, f"{prefix}-INITIAL_FORMS": existing}


@pytest.fixture
def admin_user(make_user):
    return make_user(superuser=True, username="ana")


@pytest.fixture
def ana(client, admin_user):
    client.force_login(admin_user)
    return client


def failed_run(make_workflow) -> Run:
    step = {"key": "boom", "kind": "tool", "config": {"tool": "test.fail"}, "max_attempts": 1}
    version = make_workflow(chain(step, END))
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed"
    return run


def test_publishing_in_admin_is_audited_with_the_version(ana, make_workflow):
    workflow = make_workflow(chain(ECHO, END), publish=False)
    mark = last_id()
    ana.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "publish", "_selected_action": [workflow.pk]},
    )
    entry = only_entry(mark)
    version = workflow.versions.get()
    assert (entry.action, entry.actor) == ("workflow.published", "user:ana")
    assert (entry.target_type, entry.target_id) == ("runs.workflow", str(workflow.pk))
    assert entry.data["version"] == 1 and entry.data["version_id"] == version.pk


def test_a_refused_publish_writes_nothing(make_workflow):
    broken = {**ECHO, "edges": {"next": "nowhere"}}
    workflow = make_workflow(chain(broken, END), publish=False)
    mark = last_id()
    with pytest.raises(engine.PublishError):
        engine.publish_workflow(workflow=workflow, actor="user:ana")
    assert entries_since(mark) == []


def test_saving_a_role_in_admin_is_audited_with_what_changed(ana):
    mark = last_id()
    ana.post(
        reverse("admin:policies_agentrole_add"),
        {"name": "triage", "allowed_tools": '["echo"]', **inline("versions")},
    )
    role = AgentRole.objects.get(name="triage")
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("role.saved", "user:ana")
    assert (entry.target_type, entry.target_id) == ("policies.agentrole", str(role.pk))
    assert entry.data["version"] == 1
    assert entry.data["changed"]["allowed_tools"] == [None, ["echo"]]

    mark = last_id()
    ana.post(
        reverse("admin:policies_agentrole_change", args=[role.pk]),
        {"name": "triage", "allowed_tools": '["echo", "crm.get"]', **inline("versions")},
    )
    entry = only_entry(mark)
    assert entry.data["version"] == 2
    assert entry.data["changed"] == {"allowed_tools": [["echo"], ["crm.get", "echo"]]}


def test_saving_a_policy_in_admin_is_audited_with_what_changed(ana):
    policy = Policy.objects.create(name="careful")
    mark = last_id()
    ana.post(
        reverse("admin:policies_policy_change", args=[policy.pk]),
        {
            "name": "careful",
            "description": "",
            "max_steps": 7,
            "max_llm_calls": policy.max_llm_calls,
            "max_tool_calls": policy.max_tool_calls,
            "max_cost_usd": "0.25",
            "max_wall_s": policy.max_wall_s,
            "autonomy": "[]",
            "redact_prompts": "on",
            **inline("versions"),
        },
    )
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("policy.saved", "user:ana")
    assert (entry.target_type, entry.target_id) == ("policies.policy", str(policy.pk))
    assert entry.data["changed"]["max_steps"][1] == 7
    assert entry.data["changed"]["max_cost_usd"][1] == "0.25"


def test_engaging_and_lifting_a_switch_in_admin_are_audited(ana):
    mark = last_id()
    ana.post(
        reverse("admin:policies_killswitch_add"),
        {
            "scope": "tool",
            "target": "echo",
            "engaged": "on",
            "reason": "vendor incident",
            **inline("changes"),
        },
    )
    switch = KillSwitch.objects.get(scope="tool", target="echo")
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("killswitch.engaged", "user:ana")
    assert (entry.target_type, entry.target_id) == ("policies.killswitch", str(switch.pk))
    assert entry.data["reason"] == "vendor incident"

    mark = last_id()
    ana.post(
        reverse("admin:policies_killswitch_change", args=[switch.pk]),
        {"reason": "vendor back", **inline("changes")},  # `engaged` unticked: lifted
    )
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("killswitch.lifted", "user:ana")
    assert entry.data["reason"] == "vendor back"


def test_lifting_a_switch_audits_each_run_it_resumes(make_workflow):
    version = make_workflow(chain(ECHO, END))
    slug = version.workflow.slug
    set_switch(scope="workflow", target=slug, engaged=True, reason="pause", by="ops")
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.wait_reason) == ("waiting", "paused")
    mark = last_id()
    set_switch(
        scope="workflow", target=slug, engaged=False, reason="go", by="ops", actor="user:ops"
    )
    lifted, resumed = entries_since(mark)
    assert (lifted.action, lifted.actor) == ("killswitch.lifted", "user:ops")
    assert (resumed.action, resumed.actor) == ("run.resumed", "user:ops")
    assert (resumed.target_type, resumed.target_id) == ("runs.run", str(run.pk))


def test_resuming_nothing_writes_nothing(db):
    mark = last_id()
    assert engine.resume_paused(actor="user:ops") == []
    assert entries_since(mark) == []


def test_retrying_in_admin_is_audited(ana, make_workflow):
    run = failed_run(make_workflow)
    mark = last_id()
    ana.post(
        reverse("admin:runs_run_changelist"),
        {"action": "retry_from_failed_step", "_selected_action": [run.pk]},
    )
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("run.retried", "user:ana")
    assert (entry.target_type, entry.target_id) == ("runs.run", str(run.pk))


def test_a_refused_retry_writes_nothing(make_workflow):
    version = make_workflow(chain(ECHO, END))
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    mark = last_id()
    with pytest.raises(engine.InvalidState):
        engine.retry_run(run_id=run.pk, actor="user:ana")
    assert entries_since(mark) == []


def test_cancelling_in_admin_is_audited_with_the_reason(ana, make_workflow):
    version = make_workflow(chain(ECHO, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    ana.post(
        reverse("admin:runs_run_changelist"),
        {"action": "cancel", "_selected_action": [run.pk]},
    )
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("run.cancelled", "user:ana")
    assert (entry.target_type, entry.target_id) == ("runs.run", str(run.pk))
    assert entry.data["reason"] == "cancelled by ana"


def test_settling_a_tool_call_in_admin_is_audited(ana, make_workflow):
    step = {"key": "send", "kind": "tool", "config": {"tool": "test.unsafe_send"}}
    version = make_workflow(chain(step, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    record = ToolCallRecord.objects.create(
        run=run, seq=1, step_key="send", tool="test.unsafe_send", side_effect="write_unsafe",
        idempotency_key=f"bosun-run-{run.pk}-seq-1", args={}, args_hash="x", status="unknown",
        calls=1, started_at=run.created_at,
    )  # fmt: skip
    mark = last_id()
    ana.post(
        reverse("admin:runs-toolcall-reconcile", args=[record.pk]),
        {"happened": "yes", "result": '{"sent": true}', "note": "found it in the outbox"},
    )
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("toolcall.reconciled", "user:ana")
    assert (entry.target_type, entry.target_id) == ("runs.toolcallrecord", str(record.pk))
    assert entry.data["happened"] is True
    assert entry.data["note"] == "found it in the outbox"
    assert entry.data["run"] == run.pk


def test_a_budget_stop_is_audited_as_a_policy_decision(make_workflow):
    version = make_workflow(
        chain({**ECHO, "key": "one"}, {**ECHO, "key": "two"}, END), policy={"max_steps": 1}
    )
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    run = drive(run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("run.stopped", "policy")
    assert (entry.target_type, entry.target_id) == ("runs.run", str(run.pk))
    assert entry.data["reason"] == "budget" and entry.data["step"] == "two"


def test_a_cost_stop_inside_an_llm_step_is_audited_once(make_workflow):
    think = {
        "key": "think",
        "kind": "llm",
        "config": {
            "provider": "sequence",
            "prompt": "?",
            "max_repairs": 3,
            "output_schema": {"type": "object", "required": ["x"]},
            "scripted": {"replies": [{"text": "not json", "model": "test-priced"}]},
        },
    }
    version = make_workflow(chain(think, END), policy={"max_cost_usd": Decimal("0.10")})
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    run = drive(run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    entry = only_entry(mark)
    assert (entry.action, entry.actor, entry.data["step"]) == ("run.stopped", "policy", "think")


def test_a_gate_refusal_is_audited_as_a_policy_decision(make_workflow):
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send"}}
    version = make_workflow(chain(send, END), tools=["echo"])
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    run = drive(run.pk)
    assert run.status == "failed"
    entry = only_entry(mark)
    assert (entry.action, entry.actor) == ("tool.refused", "policy")
    assert (entry.target_type, entry.target_id) == ("runs.run", str(run.pk))
    assert entry.data["code"] == "not_in_role" and entry.data["tool"] == "test.send"


def test_a_refusal_the_workflow_routes_is_audited_too(make_workflow):
    send = {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "test.send"},
        "edges": {"next": "done", "refused": "done"},
    }
    version = make_workflow([send, END], tools=["echo"])
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    assert drive(run.pk).status == "succeeded"
    entry = only_entry(mark)
    assert (entry.action, entry.data["code"]) == ("tool.refused", "not_in_role")


def test_normal_steps_write_no_audit_entries(make_workflow):
    version = make_workflow(chain(ECHO, {**ECHO, "key": "again"}, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    mark = last_id()
    assert drive(run.pk).status == "succeeded"
    assert entries_since(mark) == []


def test_the_audit_entry_rolls_back_with_the_change(make_workflow):
    """record() joins the caller's transaction: a change that fails after
    it leaves neither the change nor the entry."""
    from django.db import transaction

    workflow = make_workflow(chain(ECHO, END), publish=False)
    mark = last_id()
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.publish_workflow(workflow=workflow, actor="user:ana")
        raise RuntimeError("the caller's transaction fails later")
    assert entries_since(mark) == []
    assert not Workflow.objects.get(pk=workflow.pk).versions.exists()


def test_every_wired_entry_keeps_the_chain_intact(ana, make_workflow):
    failed_run(make_workflow)
    run = Run.objects.get()
    engine.retry_run(run_id=run.pk, actor="user:ana")
    engine.cancel_run(run_id=run.pk, actor="user:ana")
    checked, broken = audit.verify()
    assert broken is None
    assert checked == AuditEntry.objects.count() >= 4
