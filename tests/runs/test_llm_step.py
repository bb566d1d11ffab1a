"""The llm step: contracts, repair, escape, cost, and the scripted provider."""

from __future__ import annotations

import json
from decimal import Decimal

from runs import engine
from runs.models import Run, StepRun
from tests.conftest import drive

SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
REVIEW = {"key": "review", "kind": "end", "config": {"outcome": "needs_review", "success": False}}
DONE = {"key": "done", "kind": "end", "config": {"outcome": "scored"}}


def llm(replies=None, **config):
    step = {
        "key": "ask",
        "kind": "llm",
        "edges": {"next": "done", "escape": "review"},
        "config": {
            "prompt": "Score {{ input.company }}",
            "output_schema": SCHEMA,
            "provider": "sequence",
            "tier": "fast",
            **config,
        },
    }
    if replies is not None:
        step["config"]["scripted"] = {"replies": replies}
    return step


def run_of(make_workflow, step, input=None) -> Run:
    version = make_workflow([step, DONE, REVIEW])
    return drive(
        engine.start_run(workflow=version.workflow, input=input or {"company": "Acme"}).run.pk
    )


def test_a_valid_reply_is_the_output_and_its_cost_is_recorded(make_workflow):
    run = run_of(make_workflow, llm([{"text": '{"total": 80}'}]))
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "scored" and step.output == {"total": 80}
    assert step.input["prompt"] == "Score Acme"
    assert (step.model_requested, step.model_answered) == ("claude-haiku-4-5", "claude-haiku-4-5")
    assert (step.tokens_in, step.tokens_out, step.cache_read_tokens) == (1000, 200, 500)
    # haiku: $1/M in, $5/M out, $0.10/M cache read
    assert step.cost_usd == Decimal("0.002050")
    assert run.cost_usd == Decimal("0.002050") and run.llm_calls == 1


def test_a_schema_miss_is_repaired_with_the_error_fed_back(make_workflow):
    run = run_of(make_workflow, llm([{"text": '{"total": "high"}'}, {"text": '{"total": 75}'}]))
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "scored" and step.output == {"total": 75}
    assert run.llm_calls == 2 and step.cost_usd == Decimal("0.004100")


def test_repairs_exhausted_take_the_escape_edge_never_a_made_up_value(make_workflow):
    run = run_of(make_workflow, llm([{"text": "not json"}, {"text": '{"score": 1}'}]))
    step = StepRun.objects.get(run=run, step_key="ask")
    assert run.outcome == "needs_review"
    assert step.edge == "escape" and step.output["escaped"] is True
    assert "total" in step.output["reason"]


def test_truncation_and_refusal_escape(make_workflow):
    for stop in ("max_tokens", "refusal"):
        run = run_of(make_workflow, llm([{"text": '{"total": 1', "stop_reason": stop}]))
        assert run.outcome == "needs_review", stop
        assert stop in StepRun.objects.get(run=run, step_key="ask").output["reason"]


def test_a_reply_below_the_confidence_floor_escapes(make_workflow):
    schema = {
        "type": "object",
        "properties": {"total": {"type": "number"}, "confidence": {"type": "number"}},
    }
    run = run_of(
        make_workflow,
        llm(
            [{"text": '{"total": 90, "confidence": 0.3}'}],
            output_schema=schema,
            confidence_field="confidence",
            confidence_floor=0.6,
        ),
    )
    assert run.outcome == "needs_review"


def test_an_escape_without_an_escape_edge_fails_the_run(make_workflow):
    step = llm([{"text": "nope"}])
    step["edges"] = {"next": "done"}
    version = make_workflow([step, DONE])
    run = drive(engine.start_run(workflow=version.workflow, input={"company": "A"}).run.pk)
    assert run.status == "failed" and "escape" in run.error


def test_a_retryable_provider_error_is_retried_by_the_engine(make_workflow):
    step = llm([{"error": "overloaded"}])
    step["max_attempts"] = 2
    run = run_of(make_workflow, step)
    assert run.status == "failed"
    assert StepRun.objects.filter(run=run, step_key="ask").count() == 2


def test_an_undefined_prompt_variable_fails_the_step_instead_of_rendering_empty(make_workflow):
    run = run_of(make_workflow, llm([{"text": '{"total": 1}'}], prompt="Hi {{ input.nobody }}"))
    assert run.status == "failed" and "nobody" in run.error


def test_the_scripted_provider_scores_from_rules_offline(make_workflow):
    step = llm(
        provider="scripted",
        scripted={
            "points": [
                {
                    "criterion": "size",
                    "add": 40,
                    "when": {"path": "input.employees", "op": ">=", "value": 100},
                },
                {
                    "criterion": "market",
                    "add": 30,
                    "when": {"path": "input.country", "op": "==", "value": "US"},
                },
            ],
            "reply": {"total": "{{ points.total }}", "why": "{{ points.criteria }}"},
        },
    )
    big = run_of(make_workflow, step, {"company": "Acme", "employees": 500, "country": "US"})
    out = StepRun.objects.get(run=big, step_key="ask")
    assert out.output == {"total": 70, "why": {"size": 40, "market": 30}}
    assert out.provider == "scripted" and out.model_answered == "scripted"
    assert out.tokens_in > 0 and out.tokens_out == len(json.dumps(out.output)) // 4
    small = run_of(make_workflow, step, {"company": "Tiny", "employees": 3, "country": "PT"})
    assert StepRun.objects.get(run=small, step_key="ask").output["total"] == 0


def test_an_empty_reply_escapes_saying_it_was_empty(make_workflow):
    run = run_of(make_workflow, llm([{"text": ""}]))
    assert StepRun.objects.get(run=run, step_key="ask").output["reason"] == "reply empty"


def test_a_context_window_stop_counts_as_truncation(make_workflow):
    run = run_of(
        make_workflow,
        llm([{"text": '{"total": 1}', "stop_reason": "model_context_window_exceeded"}]),
    )
    assert "truncated" in StepRun.objects.get(run=run, step_key="ask").output["reason"]


def test_a_dated_model_id_is_priced_as_its_alias(make_workflow):
    run = run_of(
        make_workflow, llm([{"text": '{"total": 80}', "model": "claude-haiku-4-5-20251001"}])
    )
    assert StepRun.objects.get(run=run, step_key="ask").cost_usd == Decimal("0.002050")
