"""Sandbox runs (experiment, shadow, dry run): the real engine, no effect outside.

Counted where the effect would land: test tools record every execution in
`Execution` (the fake vendor), knowledge events, dedup records, approval
requests, cache entries and shared answers are rows.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest
from approvals.sampling import candidates, week_of
from knowledge.models import DedupRecord, Event, EventType
from runs import engine, metrics
from runs.engine import gate
from runs.models import Run, StepCacheEntry, StepRun, ToolCallRecord
from runs.tools.base import get_tool, stub_result
from tests.conftest import chain, drive
from tests.console.runs_fixtures import add_run
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
SEND = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "ops"}}}
METERED = {
    "key": "lookup",
    "kind": "tool",
    "config": {"tool": "test.metered", "args": {"limit": 50, "found": 12}},
}


def _run(version, *, mode="experiment", tools_from=None, input=None) -> Run:
    started = engine.start_run(
        workflow=version.workflow,
        input=input or {},
        version=version,
        mode=mode,
        tools_from=tools_from,
    )
    return drive(started.run.pk)


def test_a_write_tool_in_an_experiment_reaches_no_vendor(make_workflow):
    version = make_workflow(chain(SEND, END))
    run = _run(version)
    assert (run.status, run.outcome) == ("succeeded", "done")
    assert Execution.objects.count() == 0  # the vendor never saw it
    record = ToolCallRecord.objects.get(run=run)
    assert (record.status, record.args, record.calls) == ("stubbed", {"to": "ops"}, 0)
    assert StepRun.objects.get(run=run, step_key="send").output == {"sent": False}
    assert run.cost_usd == 0 and run.tool_calls == 0


def test_the_same_write_in_a_live_run_reaches_the_vendor(make_workflow):
    version = make_workflow(chain(SEND, END))
    _run(version, mode="live")
    assert Execution.objects.count() == 1


def test_a_paid_read_answered_from_the_recording_costs_nothing(make_workflow):
    version = make_workflow(chain(METERED, END))
    live = _run(version, mode="live")
    assert live.credits == {"meterco": 12} and live.cost_usd == Decimal("0.12")
    run = _run(version, tools_from=live.pk)
    assert Execution.objects.count() == 1  # only the live run's call
    assert run.cost_usd == 0 and run.credits == {}
    record = ToolCallRecord.objects.get(run=run)
    assert record.status == "replayed"
    assert record.would_cost_usd == Decimal("0.12") and record.would_credits == 12
    assert StepRun.objects.get(run=run, step_key="lookup").output == {
        "rows": 12,
        "credits_used": 12,
    }


def test_a_paid_read_without_a_recording_is_stubbed_at_its_price(make_workflow):
    version = make_workflow(chain(METERED, END))
    run = _run(version)
    assert Execution.objects.count() == 0
    record = ToolCallRecord.objects.get(run=run)
    # The price known before the call: at most `limit` credits.
    assert (record.status, record.would_credits, record.would_vendor) == ("stubbed", 50, "meterco")
    assert record.would_cost_usd == Decimal("0.50")
    assert run.cost_usd == 0


def test_a_free_read_runs_as_it_would_live(make_workflow):
    count = {"key": "count", "kind": "tool", "config": {"tool": "test.count"}}
    version = make_workflow(chain(count, END))
    run = _run(version)
    assert Execution.objects.count() == 1
    assert StepRun.objects.get(run=run, step_key="count").output == {"executions": 1}


def test_a_free_read_is_answered_from_the_recorded_step(make_workflow):
    count = {"key": "count", "kind": "tool", "config": {"tool": "test.count"}}
    version = make_workflow(chain(count, END))
    live = _run(version, mode="live")
    run = _run(version, tools_from=live.pk)
    assert Execution.objects.count() == 1
    assert ToolCallRecord.objects.get(run=run).status == "replayed"


def test_an_approval_step_passes_the_draft_as_proposed_without_asking_anyone(make_workflow):
    steps = [
        {
            "key": "review",
            "kind": "approval",
            "config": {"draft": {"to": "{{ input.to }}"}, "title": "Send?"},
            "edges": {"approved": "send", "rejected": "done"},
        },
        {
            "key": "send",
            "kind": "tool",
            "config": {"tool": "test.send", "args": {"to": "{{ steps.review.draft.to }}"}},
            "edges": {"next": "done"},
        },
        END,
    ]
    version = make_workflow(steps)
    run = _run(version, input={"to": "ana"})
    assert run.status == "succeeded"
    assert not ApprovalRequest.objects.exists()  # nothing in the review queue
    review = StepRun.objects.get(run=run, step_key="review")
    assert review.edge == "approved"
    assert review.output["auto_passed"] is True and review.output["draft"] == {"to": "ana"}
    assert ToolCallRecord.objects.get(run=run).args == {"to": "ana"}
    assert Execution.objects.count() == 0


def test_a_call_the_policy_gates_behind_a_person_is_stubbed_without_asking(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    version = make_workflow(chain(SEND, END), policy=policy)
    run = _run(version)
    assert run.status == "succeeded"
    assert not ApprovalRequest.objects.exists()
    assert ToolCallRecord.objects.get(run=run).status == "stubbed"


def test_a_blocked_tool_is_refused_in_a_sandbox_as_it_would_be_live(make_workflow):
    policy = {"autonomy": [{"tool": "test.send", "mode": "block"}]}
    version = make_workflow(chain(SEND, END), policy=policy)
    run = _run(version)
    assert run.status == "failed"
    assert StepRun.objects.get(run=run).error_type == "refused:blocked"


def test_knowledge_writes_and_dedup_keys_are_not_made(make_workflow):
    EventType.objects.create(name="lead.seen")
    steps = chain(
        {"key": "gate", "kind": "dedup", "config": {"key": "{{ input.lead }}", "scope": "leads"}},
        {
            "key": "note",
            "kind": "knowledge_write",
            "config": {
                "entity_type": "account",
                "entity_key": "acme.com",
                "event_type": "lead.seen",
            },
        },
        {**END, "config": {"outcome": "done", "dedup": "release"}},
    )
    steps[0]["edges"] = {"next": "note", "duplicate": "done"}
    version = make_workflow(steps)
    run = _run(version, input={"lead": "l-1"})
    assert run.status == "succeeded"
    assert not Event.objects.exists() and not DedupRecord.objects.exists()
    assert StepRun.objects.get(run=run, step_key="note").output["sandboxed"] is True
    # A live run with the same key is the first to see it.
    live = _run(version, mode="live", input={"lead": "l-1"})
    assert StepRun.objects.get(run=live, step_key="gate").edge == "next"


def test_the_step_cache_is_neither_read_nor_written(make_workflow):
    count = {"key": "count", "kind": "tool", "config": {"tool": "test.count"}, "cache_ttl_s": 600}
    version = make_workflow(chain(count, END))
    _run(version)
    assert not StepCacheEntry.objects.exists()
    _run(version, mode="live")
    _run(version)  # a live entry exists now: the sandbox does not read it
    assert Execution.objects.count() == 3
    assert not StepRun.objects.filter(run__mode="experiment", cache_hit=True).exists()


def test_dashboards_count_live_runs_only(make_workflow):
    version = make_workflow(chain(SEND, END))
    now = timezone.now()
    add_run(version, cost="0.10", created_at=now, latency_ms=10, success=True)
    add_run(version, cost="5", created_at=now, latency_ms=10, success=True, mode="experiment")
    add_run(version, cost="7", created_at=now, latency_ms=10, mode="shadow")
    [row] = metrics.workflow_metrics(since=now - timedelta(hours=1), until=now + timedelta(hours=1))
    assert row.runs == 1 and row.cost_usd == Decimal("0.100000")


def test_the_sample_review_draws_from_live_runs_only(make_workflow):
    version = make_workflow(chain(SEND, END))
    live = add_run(version, latency_ms=10)
    add_run(version, latency_ms=10, mode="experiment")
    week = week_of(timezone.now())
    assert [c.run_id for c in candidates(workflow=version.workflow, week=week)] == [live.pk]


def test_a_sandbox_run_keeps_its_idempotency_keys_apart_from_live_runs(make_workflow):
    version = make_workflow(chain(SEND, END))
    first = engine.start_run(workflow=version.workflow, input={}, idempotency_key="k1").run
    other = engine.start_run(
        workflow=version.workflow, input={}, idempotency_key="k1", mode="experiment"
    )
    assert other.created and other.run.pk != first.pk
    again = engine.start_run(
        workflow=version.workflow, input={}, idempotency_key="k1", mode="experiment"
    )
    assert not again.created and again.run.pk == other.run.pk


def test_sandbox_runs_do_not_fill_the_live_queue(make_workflow):
    version = make_workflow(chain(SEND, END), max_active_runs=1)
    engine.start_run(workflow=version.workflow, input={}, mode="experiment")
    engine.start_run(workflow=version.workflow, input={}, mode="experiment")
    assert engine.start_run(workflow=version.workflow, input={}).created


def test_a_stub_is_a_valid_result_of_its_tool():
    assert get_tool("email.send").stub(
        get_tool("email.send").Args(to=["a@b.co"], subject="s", body="b")
    ).to == ["a@b.co"]
    upsert = get_tool("crm.upsert")
    stub = upsert.stub(upsert.Args(object_type="lead", external_id="1", data={"a": 1}))
    assert (stub.created, stub.data) == (True, {"a": 1})
    for name, extra in (
        ("http.post_json", {}),
        ("http.get_json", {}),
        ("webhook.post", {"type": "t"}),
    ):
        tool = get_tool(name)
        stub = tool.stub(tool.Args(url="https://x.io/", **extra))
        assert tool.Result.model_validate(stub.model_dump()).status == 200


def test_the_default_stub_fills_each_field_from_the_arguments_or_empty():
    from pydantic import BaseModel

    class Result(BaseModel):
        to: str
        count: int
        tags: list[str]
        sent: bool

    class Args(BaseModel):
        to: str

    assert stub_result(Result, Args(to="x")).model_dump() == {
        "to": "x",
        "count": 0,
        "tags": [],
        "sent": False,
    }


def test_a_stubbed_call_made_again_after_a_crash_answers_the_same(make_workflow):
    version = make_workflow(chain(SEND, END))
    run = engine.start_run(workflow=version.workflow, input={}, mode="experiment").run
    from policies.services import rules_for

    caller = gate.Caller(
        run_id=run.pk,
        seq=1,
        step_key="send",
        attempt=1,
        timeout_s=5,
        workflow=version.workflow.slug,
        rules=rules_for(run.role_version_id, run.policy_version_id),
        mode="experiment",
    )
    first = gate.call_tool("test.send", {"to": "x"}, caller)
    second = gate.call_tool("test.send", {"to": "x"}, caller)
    assert first.record_id == second.record_id and first.result == second.result
    assert ToolCallRecord.objects.count() == 1 and Execution.objects.count() == 0


def test_every_registered_tool_has_a_valid_default_stub():
    from runs.tools.base import tool_names

    for name in tool_names():
        tool = get_tool(name)
        stub = stub_result(tool.Result)
        assert tool.Result.model_validate(stub.model_dump(mode="json")), name
