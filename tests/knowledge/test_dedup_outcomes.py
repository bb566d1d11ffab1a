"""What an `end` step decides for the dedup keys its run holds: keep them,
release them, or keep them for a window of their own."""

from __future__ import annotations

from datetime import timedelta

import pytest

from knowledge import services
from knowledge.models import DedupRecord
from runs import engine
from runs.models import Run, StepRun
from tests.clock import lapse_lease
from tests.conftest import drive
from tests.testapp.models import Execution

DAY = 86400
# A lead is counted (the paid step), then routed to the end its input names.
FLOW = [
    {
        "key": "gate",
        "kind": "dedup",
        "config": {
            "key": "{{ input.key }}",
            "scope": "lead",
            "window_s": 90 * DAY,
            "at": "{{ input.at }}",
        },
        "edges": {"next": "enrich", "duplicate": "duplicate"},
    },
    {"key": "enrich", "kind": "tool", "config": {"tool": "test.count"}, "edges": {"next": "route"}},
    {
        "key": "route",
        "kind": "branch",
        "config": {
            "rules": [
                {"when": {"path": "input.end", "op": "==", "value": end}, "edge": end}
                for end in ("held", "short")
            ],
            "default": "kept",
        },
        "edges": {"held": "held", "short": "short", "kept": "kept"},
    },
    {"key": "held", "kind": "end", "config": {"outcome": "held", "dedup": "release"}},
    {"key": "short", "kind": "end", "config": {"outcome": "short", "dedup": {"keep_s": 7 * DAY}}},
    {"key": "kept", "kind": "end", "config": {"outcome": "kept"}},
    {"key": "duplicate", "kind": "end", "config": {"outcome": "duplicate", "success": False}},
]


@pytest.fixture
def workflow(make_workflow):
    return make_workflow(FLOW).workflow


def lead(workflow, at: str, end: str = "kept", key: str = "ana@acme.com") -> Run:
    data = {"key": key, "at": at, "end": end}
    return drive(engine.start_run(workflow=workflow, input=data).run.pk)


def enriched() -> list[int]:
    return sorted(Execution.objects.filter(step_key="enrich").values_list("run_id", flat=True))


def test_a_key_kept_by_default_makes_the_next_lead_a_duplicate(workflow):
    first = lead(workflow, "2025-03-03T09:00:00Z")
    again = lead(workflow, "2025-03-04T09:00:00Z")
    assert (first.outcome, again.outcome) == ("kept", "duplicate")
    assert enriched() == [first.pk]
    record = DedupRecord.objects.get()
    assert record.run_id == first.pk
    assert record.expires_at - record.first_seen_at == timedelta(days=90)


def test_a_key_released_by_its_end_lets_the_next_lead_through(workflow):
    held = lead(workflow, "2025-03-03T09:00:00Z", end="held")
    assert held.outcome == "held"
    assert not DedupRecord.objects.exists()
    assert StepRun.objects.get(run=held, step_key="held").input == {"dedup": "release"}
    later = lead(workflow, "2025-03-04T09:00:00Z")
    assert later.outcome == "kept"
    assert enriched() == [held.pk, later.pk]
    assert DedupRecord.objects.get().run_id == later.pk


def test_a_key_kept_for_a_shorter_window_comes_back_when_it_ends(workflow):
    short = lead(workflow, "2025-03-03T09:00:00Z", end="short")
    record = DedupRecord.objects.get()
    assert record.expires_at - record.first_seen_at == timedelta(days=7)
    within = lead(workflow, "2025-03-09T09:00:00Z")  # six days on
    after = lead(workflow, "2025-03-10T10:00:00Z")  # seven days and an hour on
    assert (within.outcome, after.outcome) == ("duplicate", "kept")
    assert enriched() == [short.pk, after.pk]
    gate = StepRun.objects.get(run=after, step_key="gate").output
    assert gate["replaced"] == {"run": short.pk, "expired": True}


def test_a_release_leaves_a_key_another_run_has_taken_over_since(workflow):
    first = lead(workflow, "2025-03-03T09:00:00Z", end="short")
    second = lead(workflow, "2025-03-20T09:00:00Z")  # after the 7 days: takes the key over
    assert DedupRecord.objects.get().run_id == second.pk
    services.settle_dedup(run_id=first.pk, keep_s=None)  # e.g. applied late, once more
    assert DedupRecord.objects.get().run_id == second.pk


def test_keys_in_other_scopes_and_of_other_runs_are_not_touched(workflow):
    other = lead(workflow, "2025-03-03T09:00:00Z", key="bo@acme.com")
    held = lead(workflow, "2025-03-03T10:00:00Z", end="held")
    assert held.outcome == "held"
    assert list(DedupRecord.objects.values_list("run_id", flat=True)) == [other.pk]


def test_a_crash_between_the_end_and_its_release_leaves_neither_and_the_end_is_done_again(
    workflow, monkeypatch
):
    real = services.settle_dedup
    crashed: list[int] = []

    def crash_once(*, run_id: int, keep_s: float | None) -> None:
        if not crashed:
            crashed.append(run_id)
            raise RuntimeError("worker died between the end's checkpoint and the release")
        real(run_id=run_id, keep_s=keep_s)

    monkeypatch.setattr(services, "settle_dedup", crash_once)
    data = {"key": "ana@acme.com", "at": "2025-03-03T09:00:00Z", "end": "held"}
    run_id = engine.start_run(workflow=workflow, input=data).run.pk
    with pytest.raises(RuntimeError):
        engine.advance_run(run_id)
    # The end did not commit without its release: the run still stands at
    # its end step, holding the key as before.
    run = Run.objects.get(pk=run_id)
    assert (run.status, run.current_step, run.outcome) == ("running", "held", "")
    assert DedupRecord.objects.get().run_id == run_id
    assert not StepRun.objects.filter(run=run, step_key="held").exists()
    # Its lease runs out; the next worker executes the end again, release included.
    lapse_lease(run_id)
    run = drive(run_id)
    assert (run.status, run.outcome) == ("succeeded", "held")
    assert crashed == [run_id]
    assert not DedupRecord.objects.exists()
    assert StepRun.objects.filter(run=run, step_key="held").count() == 1
    assert enriched() == [run_id]  # the paid step before was not done again


@pytest.mark.parametrize(
    "value",
    ["forever", "", 3600, {"keep_s": 0}, {"keep_s": -5}, {"keep_s": "30d"}, {"keep_s": True},
     {"keep": 60}, {"keep_s": 60, "extra": 1}, {"keep_s": 20 * 365 * DAY}],
)  # fmt: skip
def test_publish_refuses_a_dedup_disposition_it_cannot_apply(make_workflow, value):
    steps = [
        {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "done"}},
        {"key": "done", "kind": "end", "config": {"outcome": "done", "dedup": value}},
    ]
    workflow = make_workflow(steps, publish=False)
    with pytest.raises(engine.PublishError) as caught:
        engine.publish_workflow(workflow=workflow)
    [problem] = caught.value.problems
    assert "'done'" in problem and "config.dedup" in problem
    assert 'must be "keep", "release" or {"keep_s": seconds}' in problem


@pytest.mark.parametrize("value", ["keep", "release", {"keep_s": 30 * DAY}, {"keep_s": 0.5}])
def test_publish_takes_each_disposition(make_workflow, value):
    steps = [
        {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "done"}},
        {"key": "done", "kind": "end", "config": {"outcome": "done", "dedup": value}},
    ]
    version = make_workflow(steps)
    assert version.definition["steps"]["done"]["config"]["dedup"] == value
