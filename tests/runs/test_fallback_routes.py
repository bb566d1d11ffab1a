"""Fallback routes: a tier's ordered models. When the first one's breaker is
open or its call fails for an outage, the step asks the next in the same
attempt, records which answered and why, and is priced at what answered."""

from __future__ import annotations

import json

import pytest

from policies.models import Breaker
from runs import engine
from runs.engine.errors import PublishError
from runs.llm.base import Usage, cost_of
from runs.models import StepRun
from tests.conftest import chain, drive
from tests.testapp import providers

pytestmark = pytest.mark.django_db
FIRST, SECOND = "claude-sonnet-4-6", "claude-haiku-4-5"
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
ANSWER = {"text": json.dumps({"total": 70}), "model": SECOND}
DOWN = {"error": "overloaded", "retryable": True}


@pytest.fixture(autouse=True)
def _routes(settings):
    settings.BOSUN_MODEL_TIERS = {**settings.BOSUN_MODEL_TIERS, "balanced": FIRST}
    settings.BOSUN_MODEL_ROUTES = {"balanced": [FIRST, SECOND]}
    settings.BOSUN_BREAKER_FAILURES = 1  # one outage opens the first route's breaker
    settings.BOSUN_INLINE_WAIT_S = 0
    providers.calls.clear()


def ask(make_workflow, first_reply, **config):
    step = {
        "key": "ask",
        "kind": "llm",
        "max_attempts": 3,
        "config": {
            "provider": "sequence",
            "tier": "balanced",
            "prompt": "Score it",
            "output_schema": {"type": "object", "required": ["total"]},
            "scripted": {"by_model": {FIRST: [first_reply], SECOND: [ANSWER]}},
            **config,
        },
    }
    return make_workflow(chain(step, END))


def start(version):
    return drive(engine.start_run(workflow=version.workflow, input={}).run.pk)


def asked() -> list[str]:
    return [request.model for request in providers.calls]


def test_an_outage_of_the_first_route_is_answered_by_the_next_in_the_same_attempt(
    make_workflow,
):
    run = start(ask(make_workflow, DOWN))
    assert (run.status, run.attempt) == ("succeeded", 1)
    assert asked() == [FIRST, SECOND]
    step = StepRun.objects.get(run=run, step_key="ask")
    assert (step.provider, step.model_requested, step.model_answered) == (
        "sequence",
        FIRST,
        SECOND,
    )
    route = step.input["route"]
    assert route["answered"] == f"sequence:{SECOND}"
    assert route["passed_over"][0]["route"] == f"sequence:{FIRST}"
    assert "overloaded" in route["passed_over"][0]["why"]
    # Priced at what answered.
    usage = Usage(input_tokens=1000, output_tokens=200, cache_read_tokens=500)
    assert step.model_usd == cost_of(SECOND, usage, requested=FIRST)
    assert step.output == {"total": 70}


def test_an_open_breaker_is_passed_over_without_a_call(make_workflow):
    version = ask(make_workflow, DOWN)
    start(version)  # the outage opens the first route's breaker
    assert Breaker.objects.get(key=f"llm:sequence:{FIRST}").state == "open"
    providers.calls.clear()
    run = start(version)
    assert run.status == "succeeded"
    assert asked() == [SECOND]  # the open route is not called at all
    step = StepRun.objects.get(run=run, step_key="ask")
    assert "is open" in step.input["route"]["passed_over"][0]["why"]


def test_a_step_may_forbid_fallback(make_workflow):
    run = start(ask(make_workflow, DOWN, fallback=False))
    assert asked() == [FIRST]
    assert (run.status, run.wait_reason) == ("waiting", "retry")  # its own retry policy


def test_an_error_that_is_not_an_outage_does_not_fall_back(make_workflow):
    run = start(ask(make_workflow, {"error": "invalid_request", "retryable": False}))
    assert asked() == [FIRST]
    assert run.status == "failed"


def test_when_every_route_is_down_the_step_retries_as_before(make_workflow, settings):
    settings.BOSUN_MODEL_ROUTES = {"balanced": [FIRST]}
    settings.BOSUN_BREAKER_FAILURES = 5
    run = start(ask(make_workflow, DOWN))
    assert (run.status, run.wait_reason, asked()) == ("waiting", "retry", [FIRST])


def test_a_route_on_an_unknown_provider_is_refused_at_publish(make_workflow, settings):
    settings.BOSUN_MODEL_ROUTES = {"balanced": [FIRST, "nowhere:some-model"]}
    with pytest.raises(PublishError) as refused:
        ask(make_workflow, DOWN)
    assert "fallback route nowhere:some-model: no such provider" in str(refused.value.problems)
