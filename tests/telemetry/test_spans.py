"""Traces of runs: a span per slice, step, model call and tool call.

The model is the real anthropic SDK talking to the local fake of the
Messages API; spans are collected in memory (see conftest).
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import runs.llm.anthropic_provider  # noqa: F401  (the SDK's import takes seconds: not in a step)
from approvals.models import ApprovalRequest
from policies.services import rules_for
from runs import engine
from runs.engine import gate
from runs.engine import tracing as telemetry
from runs.models import Run, StepRun
from tests.conftest import chain, drive
from tests.fakes.messages_api import MessagesAPI, message, tool_use_block, usage

pytestmark = pytest.mark.django_db

KEY = "sk-ant-test-key"
EMAIL = "jane.doe@example.com"
SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
ASK = {
    "key": "ask",
    "kind": "llm",
    "config": {
        "provider": "anthropic",
        "tier": "fast",
        "system": "You score sales leads.",
        "prompt": "Score {{ input.company }}; the contact is {{ input.email }}",
        "output_schema": SCHEMA,
    },
}
SEND = {
    "key": "send",
    "kind": "tool",
    "config": {"tool": "test.send", "args": {"to": "{{ input.email }}"}},
}
END = {"key": "done", "kind": "end", "config": {"outcome": "scored"}}


@pytest.fixture
def served(settings):
    api = MessagesAPI()
    with api.serve() as base_url:
        settings.ANTHROPIC_API_KEY = KEY
        settings.ANTHROPIC_BASE_URL = base_url
        yield api


def start(version, **input) -> int:
    data = {"company": "Acme", "email": EMAIL, **input}
    return engine.start_run(workflow=version.workflow, input=data).run.pk


def test_a_run_is_one_trace_of_run_step_model_and_tool_spans(make_workflow, served, spans):
    tokens = usage(1000, 200, cache_read=500, cache_write=2000)
    served.reply(
        message(tool_use_block({"total": 90}), model="claude-haiku-4-5-20251001", usage_=tokens)
    )
    version = make_workflow(chain(ASK, SEND, END))
    run = drive(start(version))
    assert run.status == "succeeded"
    trace = spans()

    assert len(run.trace_id) == 32 and int(run.trace_id, 16)
    assert {s.context.trace_id for s in trace.spans} == {int(run.trace_id, 16)}

    root = trace.one(f"run {version.workflow.slug}")
    assert dict(root.attributes) == {
        "bosun.run.id": run.pk,
        "bosun.workflow": version.workflow.slug,
        "bosun.workflow.version": 1,
        "bosun.run.result": "finished",
    }
    ask, send, done = (trace.one(f"step {key}") for key in ("ask", "send", "done"))
    assert {trace.parent_of(s).name for s in (ask, send, done)} == {root.name}
    step_row = StepRun.objects.get(run=run, step_key="ask")
    assert ask.attributes["bosun.step.key"] == "ask"
    assert ask.attributes["bosun.step.kind"] == "llm"
    assert (ask.attributes["bosun.step.seq"], send.attributes["bosun.step.seq"]) == (1, 2)
    assert ask.attributes["bosun.step.attempt"] == 1
    assert ask.attributes["bosun.step.status"] == "succeeded"
    assert ask.attributes["bosun.step.cache_hit"] is False
    assert ask.attributes["bosun.cost_usd"] == float(step_row.cost_usd) > 0
    assert send.attributes["bosun.step.kind"] == "tool" and send.attributes["bosun.cost_usd"] == 0

    chat = trace.one("chat claude-haiku-4-5")
    assert trace.parent_of(chat) is ask and chat.kind is SpanKind.CLIENT
    assert {k: v for k, v in chat.attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.system": "anthropic",
        "gen_ai.request.model": "claude-haiku-4-5",
        "gen_ai.request.max_tokens": 1024,
        "gen_ai.response.model": "claude-haiku-4-5-20251001",
        "gen_ai.response.finish_reasons": ("tool_use",),
        "gen_ai.usage.input_tokens": 3500,  # uncached + cache read + cache write
        "gen_ai.usage.output_tokens": 200,
        "gen_ai.usage.cache_read.input_tokens": 500,
        "gen_ai.usage.cache_creation.input_tokens": 2000,
    }
    assert chat.attributes["bosun.cost_usd"] == float(step_row.cost_usd)
    assert (chat.attributes["bosun.run.id"], chat.attributes["bosun.step.key"]) == (run.pk, "ask")

    tool = trace.one("tool test.send")
    assert trace.parent_of(tool) is send
    assert tool.attributes["bosun.tool.name"] == "test.send"
    assert tool.attributes["bosun.tool.side_effect"] == "write_idempotent"
    assert tool.attributes["bosun.tool.outcome"] == "called"

    texts = trace.attribute_texts()
    assert not [t for t in texts if EMAIL in t], "no personal data leaves in a span"
    assert not [t for t in texts if "Score Acme" in t], "prompts stay out of spans"


def test_every_slice_of_a_run_joins_the_trace_stored_at_its_first(make_workflow, spans):
    review = {
        "key": "review",
        "kind": "approval",
        "config": {"draft": "hello"},
        "edges": {"approved": "done", "rejected": "done"},
    }
    version = make_workflow([review, END])
    run_id = start(version)
    assert drive(run_id).status == "waiting"
    first_trace_id = Run.objects.get(pk=run_id).trace_id
    engine.decide_approval(
        approval_id=ApprovalRequest.objects.get(run_id=run_id).pk, approve=True, actor_label="ana"
    )
    run = drive(run_id)
    assert run.status == "succeeded" and run.trace_id == first_trace_id

    slices = spans().named("run ")
    assert [s.attributes["bosun.run.result"] for s in slices] == ["waiting", "finished"]
    assert {s.context.trace_id for s in slices} == {int(first_trace_id, 16)}
    # Both hang under the same (never emitted) remote parent of the run.
    assert len({s.parent.span_id for s in slices}) == 1 and slices[0].parent.is_remote
    waited = [s for s in spans().named("step review")]
    assert [s.attributes["bosun.step.status"] for s in waited] == ["waiting", "succeeded"]


def test_the_trace_id_is_stored_by_the_claim_itself(make_workflow, spans):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    version = make_workflow(chain({**SEND, "config": {"tool": "test.send"}}, END))
    run_id = start(version)
    with CaptureQueriesContext(connection) as queries:
        run = drive(run_id)
    assert run.status == "succeeded" and len(run.trace_id) == 32
    writes = [q["sql"] for q in queries if "trace_id =" in q["sql"]]
    assert writes and all("fence = fence + 1" in sql for sql in writes)  # claims only
    assert spans().named("run ")[0].context.trace_id == int(run.trace_id, 16)


def test_with_tracing_off_nothing_is_recorded_or_stored(make_workflow, settings):
    settings.BOSUN_TRACING = False  # no OTLP endpoint
    telemetry.reset()
    version = make_workflow(chain({**SEND, "config": {"tool": "test.send"}}, END))
    run = drive(start(version))
    assert run.status == "succeeded" and run.trace_id == ""
    assert telemetry.step_span(run_id=1, key="k", kind="tool", seq=1, attempt=1) is telemetry.OFF
    off = telemetry.run_span(run_id=run.pk, workflow="x", version=1, trace_id="ab" * 16)
    assert off is telemetry.OFF and telemetry.new_trace_id() == ""


def test_error_texts_are_redacted_in_spans(make_workflow, spans):
    failing = {
        "key": "ask",
        "kind": "llm",
        "max_attempts": 1,
        "config": {
            "provider": "sequence",
            "prompt": "hi",
            "scripted": {"replies": [{"error": f"mailbox {EMAIL} refused", "retryable": False}]},
        },
    }
    version = make_workflow(chain(failing, END))
    assert drive(start(version)).status == "failed"
    trace = spans()
    step, chat = trace.one("step ask"), trace.one("chat claude-sonnet-4-6")
    for span in (step, chat):
        assert span.status.status_code is StatusCode.ERROR
        assert "[EMAIL]" in span.status.description and EMAIL not in span.status.description
    assert step.attributes["bosun.step.error_type"] == "llm"
    assert chat.attributes["error.type"] == "LLMError"
    assert not [t for t in trace.attribute_texts() if EMAIL in t]


def test_a_model_span_per_call_of_a_repair_loop(make_workflow, spans):
    think = {
        "key": "think",
        "kind": "llm",
        "config": {
            "provider": "sequence",
            "prompt": "?",
            "output_schema": SCHEMA,
            "max_repairs": 1,
            "scripted": {"replies": [{"text": "nope"}, {"text": '{"total": 3}'}]},
        },
    }
    version = make_workflow(chain(think, END))
    assert drive(start(version)).status == "succeeded"
    calls = spans().named("chat ")
    assert [c.attributes["bosun.llm.repair"] for c in calls] == [0, 1]
    assert all(c.attributes["gen_ai.usage.input_tokens"] == 1500 for c in calls)
    assert {spans().parent_of(c).name for c in calls} == {"step think"}


def test_a_cache_hit_is_a_step_span_without_a_model_call(make_workflow, spans):
    cached = {
        "key": "think",
        "kind": "llm",
        "cache_ttl_s": 600,
        "config": {"provider": "sequence", "prompt": "?", "scripted": {"replies": [{"text": "x"}]}},
    }
    version = make_workflow(chain(cached, END))
    drive(start(version))
    drive(start(version))
    steps = spans().named("step think")
    assert [s.attributes["bosun.step.cache_hit"] for s in steps] == [False, True]
    assert steps[1].attributes["bosun.cost_saved_usd"] > 0
    assert len(spans().named("chat ")) == 1


def test_a_budget_stop_shows_on_the_step_span(make_workflow, spans):
    version = make_workflow(
        chain({**SEND, "key": "one"}, {**SEND, "key": "two"}, END), policy={"max_steps": 1}
    )
    assert drive(start(version)).stop_reason == "budget"
    stopped = spans().one("step two")
    assert stopped.attributes["bosun.step.error_type"] == "budget"
    assert stopped.status.status_code is StatusCode.ERROR
    assert spans().one(f"run {version.workflow.slug}").attributes["bosun.run.result"] == "stopped"


def _caller(run: Run, seq: int = 1) -> gate.Caller:
    return gate.Caller(
        run_id=run.pk,
        seq=seq,
        step_key="direct",
        attempt=1,
        timeout_s=5,
        workflow=run.workflow.slug,
        rules=rules_for(run.role_version_id, run.policy_version_id),
    )


def test_tool_spans_say_how_the_call_ended(make_workflow, spans):
    version = make_workflow(chain({**SEND, "config": {"tool": "test.send"}}, END))
    run = Run.objects.get(pk=start(version))
    caller = _caller(run)
    assert gate.call_tool("test.send", {"to": EMAIL}, caller).from_ledger is False
    assert gate.call_tool("test.send", {"to": EMAIL}, caller).from_ledger is True
    with pytest.raises(gate.Refused):
        gate.call_tool("crm.get", {"key": "x"}, caller)  # not in the run's role
    outcomes = [s.attributes["bosun.tool.outcome"] for s in spans().named("tool ")]
    assert outcomes == ["called", "from_ledger", "refused"]
    refused = spans().one("tool crm.get")
    assert refused.attributes["bosun.tool.refusal"] == "not_in_role"
    assert refused.status.status_code is StatusCode.ERROR


def test_a_call_waiting_for_approval_is_not_an_error(make_workflow, spans):
    rule = {"tool": "test.send", "mode": "approve"}
    version = make_workflow(
        chain({**SEND, "config": {"tool": "test.send"}}, END), policy={"autonomy": [rule]}
    )
    run = drive(start(version))
    assert (run.status, run.wait_reason) == ("waiting", "approval")
    waiting = spans().one("tool test.send")
    assert waiting.attributes["bosun.tool.outcome"] == "needs_approval"
    assert waiting.status.status_code is StatusCode.UNSET
    assert spans().one("step send").attributes["bosun.step.status"] == "waiting"


def test_costs_are_numbers_not_text(make_workflow, spans):
    think = {
        "key": "think",
        "kind": "llm",
        "config": {
            "provider": "sequence",
            "prompt": "?",
            "scripted": {"replies": [{"text": "x", "model": "test-priced"}]},
        },
    }
    version = make_workflow(chain(think, END))
    drive(start(version))
    chat = spans().one("chat claude-sonnet-4-6")
    assert chat.attributes["bosun.cost_usd"] == float(Decimal("0.07"))
