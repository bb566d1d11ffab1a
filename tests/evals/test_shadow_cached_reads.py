"""A shadow run's reads are answered from its live run, also when the live
run's step was answered from the step cache."""

from __future__ import annotations

import pytest

from evals.shadow import shadow_run_of, start_shadow
from runs import engine
from runs.engine.definition import freeze_candidate
from runs.models import Run, Step, StepRun, ToolCallRecord
from tests.conftest import drive

pytestmark = pytest.mark.django_db

STEPS = [
    {
        "key": "count",
        "kind": "tool",
        "cache_ttl_s": 3600,
        "config": {"tool": "test.metered", "args": {"limit": 5, "found": 3}},
        "edges": {"next": "done"},
    },
    {"key": "done", "kind": "end", "config": {"outcome": "counted"}},
]


def test_a_shadow_of_a_run_answered_from_the_cache_replays_the_call_that_filled_it(
    make_workflow,
):
    workflow = make_workflow(STEPS).workflow
    first = drive(engine.start_run(workflow=workflow, input={}, idempotency_key="a").run.pk)
    second = drive(engine.start_run(workflow=workflow, input={}, idempotency_key="b").run.pk)
    assert StepRun.objects.get(run=second, step_key="count").cache_hit
    Step.objects.filter(workflow=workflow, key="done").update(config={"outcome": "tallied"})
    start_shadow(workflow=workflow, candidate=freeze_candidate(workflow=workflow))

    shadow = drive(shadow_run_of(run_id=second.pk).pk)
    assert shadow.outcome == "tallied"
    call = ToolCallRecord.objects.get(run=shadow)
    assert call.status == "replayed" and call.result == {"rows": 3, "credits_used": 3}
    assert ToolCallRecord.objects.filter(run=first, status="succeeded").count() == 1
    assert Run.objects.filter(mode="live").count() == 2
