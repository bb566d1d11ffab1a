"""The step cache and the replay provider: pay once for the same input."""

from __future__ import annotations

from decimal import Decimal

import pytest

from runs import engine
from runs.engine.cache import invalidate_step_cache
from runs.models import Run, StepCacheEntry, StepRun
from tests.conftest import chain, drive
from tests.runs.test_concurrency import race
from tests.testapp.models import Execution

SCHEMA = {"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}
DONE = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def scored(ttl: int = 3600) -> list[dict]:
    return chain(
        {
            "key": "ask",
            "kind": "llm",
            "cache_ttl_s": ttl,
            "config": {
                "prompt": "Score {{ input.company }}",
                "output_schema": SCHEMA,
                "provider": "sequence",
                "tier": "fast",
                "scripted": {"replies": [{"text": '{"total": 64}'}]},
            },
        },
        DONE,
    )


def ask(run: Run) -> StepRun:
    return StepRun.objects.get(run=run, step_key="ask")


def start(version, company: str = "Acme", **kwargs) -> Run:
    return drive(
        engine.start_run(workflow=version.workflow, input={"company": company}, **kwargs).run.pk
    )


def test_a_repeated_input_is_answered_from_the_cache_at_zero_cost(make_workflow):
    version = make_workflow(scored())
    first, second = start(version), start(version)
    assert not ask(first).cache_hit and ask(first).cost_usd == Decimal("0.002050")
    hit = ask(second)
    assert hit.cache_hit and hit.output == {"total": 64} and hit.cost_usd == 0
    assert hit.cost_saved_usd == Decimal("0.002050")
    assert (second.llm_calls, second.cost_usd) == (0, 0)
    assert StepCacheEntry.objects.count() == 1


def test_a_different_input_misses(make_workflow):
    version = make_workflow(scored())
    start(version, "Acme")
    assert not ask(start(version, "Globex")).cache_hit
    assert StepCacheEntry.objects.count() == 2


def test_an_expired_entry_is_recomputed_in_place(make_workflow):
    version = make_workflow(scored(ttl=60))
    start(version)
    StepCacheEntry.objects.update(expires_at="2000-01-01T00:00:00Z")
    again = start(version)
    assert not ask(again).cache_hit and again.llm_calls == 1
    assert StepCacheEntry.objects.count() == 1
    assert ask(start(version)).cache_hit


def test_invalidating_a_step_drops_its_entries(make_workflow):
    version = make_workflow(scored())
    start(version)
    assert invalidate_step_cache(workflow_id=version.workflow_id, step_key="ask") == 1
    assert not ask(start(version)).cache_hit


def test_a_ttl_of_zero_never_caches(make_workflow):
    version = make_workflow(scored(ttl=0))
    start(version)
    assert not ask(start(version)).cache_hit and StepCacheEntry.objects.count() == 0


def test_a_read_tool_is_cached_and_a_write_tool_cannot_be(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "lookup",
                "kind": "tool",
                "cache_ttl_s": 60,
                "config": {"tool": "test.count", "args": {}},
            },
            DONE,
        )
    )
    for _ in range(3):
        start(version)
    assert Execution.objects.count() == 1

    workflow = make_workflow(
        chain(
            {"key": "send", "kind": "tool", "cache_ttl_s": 60, "config": {"tool": "test.send"}},
            DONE,
        ),
        publish=False,
    )
    with pytest.raises(engine.PublishError, match="only llm steps and read-only tools"):
        engine.publish_workflow(workflow=workflow)


def test_a_replayed_run_reproduces_its_outputs_without_model_calls(make_workflow):
    version = make_workflow(scored(ttl=0))
    original = start(version)
    replay = drive(engine.replay_run(run_id=original.pk).run.pk)
    assert replay.status == "succeeded" and replay.replay_of_id == original.pk
    assert ask(replay).output == ask(original).output
    assert ask(replay).provider == "replay" and replay.llm_calls == 0
    assert replay.cost_usd == 0 and replay.tokens_in == 0


def test_replaying_a_step_the_original_never_reached_fails_instead_of_inventing(make_workflow):
    version = make_workflow(scored(ttl=0))
    original = engine.start_run(workflow=version.workflow, input={"company": "A"}).run
    replay = drive(engine.replay_run(run_id=original.pk).run.pk)
    assert replay.status == "failed" and "recorded no answer" in replay.error


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_misses_for_one_key_compute_once(make_workflow):
    version = make_workflow(
        chain(
            {
                "key": "lookup",
                "kind": "tool",
                "cache_ttl_s": 60,
                "config": {"tool": "test.count", "args": {"sleep_s": 0.3}},
            },
            DONE,
        )
    )
    ids = [engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(8)]
    results = race(8, lambda i: drive(ids[i]).status)
    assert results == ["succeeded"] * 8
    assert Execution.objects.count() == 1
    assert StepCacheEntry.objects.count() == 1
    assert StepRun.objects.filter(step_key="lookup", cache_hit=True).count() == 7
