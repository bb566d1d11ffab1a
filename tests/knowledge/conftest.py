"""Fixtures for the knowledge graph: event types, runs to write from, step contexts."""

from __future__ import annotations

from typing import Any

import pytest

from knowledge.models import EventType
from runs import engine
from runs.engine.kinds import StepContext
from tests.conftest import chain

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


@pytest.fixture
def paused_type(db) -> EventType:
    return EventType.objects.create(
        name="outreach.paused",
        description="Do not contact the account until the date.",
        payload_schema={
            "type": "object",
            "required": ["until"],
            "properties": {"until": {"type": "string", "format": "date"}},
        },
    )


@pytest.fixture
def profile_type(db) -> EventType:
    return EventType.objects.create(
        name="account.profile",
        sets_facts=True,
        payload_schema={
            "type": "object",
            "properties": {"plan": {"type": "string"}, "seats": {"type": "integer", "minimum": 1}},
        },
    )


@pytest.fixture
def make_runs(make_workflow):
    """`make_runs(n)`: ids of n queued runs of a one-step workflow (for
    executing a kind directly with a StepContext that points at a real run)."""

    def make(count: int = 1) -> list[int]:
        version = make_workflow(
            chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END)
        )
        return [
            engine.start_run(workflow=version.workflow, input={"n": n}).run.pk for n in range(count)
        ]

    return make


def context(run_id: int, *, step_key: str, seq: int = 1, **input: Any) -> StepContext:
    return StepContext(
        run_id=run_id,
        seq=seq,
        attempt=1,
        step_key=step_key,
        timeout_s=10.0,
        variables={"input": input, "steps": {}, "run": {"id": run_id}},
    )
