"""Budgets: checked before each step and paid call, charged after."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runs import engine
from runs.models import StepRun
from tests.conftest import drive
from tests.testapp import providers

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_calls():
    providers.calls.clear()
    yield


def _think(reply: str, **step) -> dict:
    return {
        "key": "think",
        "kind": "llm",
        "config": {
            "provider": "sequence",
            "prompt": "What next?",
            "scripted": {"replies": [{"text": reply, "model": "test-priced"}]},
        },
        "max_visits": 200,
        **step,
    }


def test_a_cost_budget_stops_the_run_within_the_cap_plus_one_call(make_workflow):
    steps = [
        {**_think("again"), "edges": {"next": "loop"}},
        {
            "key": "loop",
            "kind": "branch",
            "config": {
                "rules": [
                    {"when": {"path": "steps.think", "op": "==", "value": "again"}, "edge": "more"}
                ],
                "default": "done",
            },
            "edges": {"more": "think", "done": "done"},
            "max_visits": 200,
        },
        {"key": "done", "kind": "end"},
    ]
    version = make_workflow(steps, policy={"max_cost_usd": Decimal("0.50"), "max_steps": 1000})
    run = engine.start_run(workflow=version.workflow, input={}).run
    run = drive(run.pk, limit=500)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert "cost_usd" in run.error
    assert Decimal("0.50") <= run.cost_usd <= Decimal("0.57")
    assert run.llm_calls == len(providers.calls) == 8
    # The stop is recorded where it happened, and nothing ran after it.
    last = StepRun.objects.filter(run=run).order_by("-seq", "-attempt").first()
    assert last.error_type == "budget"
    assert engine.advance_run(run.pk) is engine.Advance.NOT_CLAIMED
    assert len(providers.calls) == 8


def test_a_model_that_always_asks_for_another_step_stops_at_the_step_cap(make_workflow):
    steps = [
        {**_think('{"next": "search"}'), "edges": {"next": "route"}},
        {
            "key": "route",
            "kind": "branch",
            "config": {
                "rules": [
                    {
                        "when": {"path": "steps.think", "op": "contains", "value": "search"},
                        "edge": "search",
                    }
                ],
                "default": "done",
            },
            "edges": {"search": "search", "done": "done"},
            "max_visits": 200,
        },
        {
            "key": "search",
            "kind": "tool",
            "config": {"tool": "echo", "args": {"value": "results"}},
            "edges": {"next": "think"},
            "max_visits": 200,
        },
        {"key": "done", "kind": "end"},
    ]
    version = make_workflow(steps, policy={"max_steps": 12, "max_llm_calls": 100})
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk, limit=500)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert run.steps_executed == 12
    assert "steps" in run.error
    assert len(providers.calls) == 4  # think, route, search, ... x4 = 12 steps


def test_an_llm_call_budget_stops_before_the_call_over_it(make_workflow):
    steps = [
        {**_think("a"), "key": "one", "edges": {"next": "two"}},
        {**_think("b"), "key": "two", "edges": {"next": "done"}},
        {"key": "done", "kind": "end"},
    ]
    version = make_workflow(steps, policy={"max_llm_calls": 1})
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert len(providers.calls) == 1 and "llm_calls" in run.error


def test_a_run_without_a_policy_gets_the_default_budget(make_workflow, settings):
    settings.BOSUN_DEFAULT_BUDGET = {**settings.BOSUN_DEFAULT_BUDGET, "max_steps": 1}
    from policies.services import rules_for

    rules_for.cache_clear()
    steps = [
        {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "done"}},
        {"key": "done", "kind": "end"},
    ]
    version = make_workflow(steps)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.stop_reason, run.steps_executed) == ("stopped", "budget", 1)


def test_a_retried_run_gets_a_fresh_wall_time_allowance(make_workflow):
    """Dead-lettered for weeks, then retried: the wall-time budget counts
    from the retry, not from the run's first start."""
    from datetime import timedelta

    from django.utils import timezone

    from runs.models import Run
    from tests.conftest import chain

    steps = chain(
        {
            "key": "send",
            "kind": "tool",
            "config": {"tool": "test.fail", "args": {"failures": 1, "retryable": False}},
        },
        {"key": "done", "kind": "end", "config": {"outcome": "done"}},
    )
    run = drive(engine.start_run(workflow=make_workflow(steps).workflow, input={}).run.pk)
    assert run.status == "failed"
    weeks_ago = timezone.now() - timedelta(days=21)
    Run.objects.filter(pk=run.pk).update(started_at=weeks_ago, wall_from=weeks_ago)
    engine.retry_run(run_id=run.pk)
    run = drive(run.pk)
    assert run.status == "succeeded", run.error
    assert run.started_at == weeks_ago  # the record of when it first started stays
    assert timezone.now() - run.wall_from < timedelta(hours=1)
