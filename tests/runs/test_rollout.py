"""Live version, canary share, promote and roll back (runs.engine.rollout)."""

from __future__ import annotations

import math

import pytest

from policies.models import AuditEntry
from runs import engine
from runs.engine import rollout
from runs.models import Rollout, RolloutStatus, Workflow, WorkflowVersion
from tests.conftest import chain, drive
from tests.testapp.models import Switch

END = {"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}


def two_versions(make_workflow) -> tuple[Workflow, WorkflowVersion, WorkflowVersion]:
    """A workflow with v1 live and a changed draft published as v2 (live)."""
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    workflow = v1.workflow
    workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": 2}})
    return workflow, v1, engine.publish_workflow(workflow=workflow)


def edit_draft(workflow: Workflow, value: int) -> None:
    workflow.steps.filter(key="a").update(config={"tool": "echo", "args": {"value": value}})


def canary(make_workflow, share: int = 30) -> tuple[Workflow, Rollout]:
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    workflow = v1.workflow
    edit_draft(workflow, 2)
    engine.publish_workflow(workflow=workflow, canary_share=share, actor="user:olga")
    return workflow, Rollout.objects.get(workflow=workflow, status=RolloutStatus.ACTIVE)


def version_of(workflow: Workflow, key: str | None = None) -> int:
    return engine.start_run(workflow=workflow, input={}, idempotency_key=key).run.version.number


def test_without_a_canary_new_runs_start_on_the_newest_published_version(make_workflow):
    workflow, _, v2 = two_versions(make_workflow)
    assert workflow.live_version_id is None
    assert version_of(workflow) == v2.number


@pytest.mark.parametrize("share", [10, 30, 70])
def test_a_canary_takes_its_share_of_new_runs_and_the_live_version_the_rest(make_workflow, share):
    workflow, active = canary(make_workflow, share=share)
    assert (active.baseline.number, active.candidate.number, active.share_pct) == (1, 2, share)
    workflow.refresh_from_db()
    assert workflow.live_version == active.baseline
    numbers = [version_of(workflow, f"order-{i}") for i in range(100)]
    # Each key falls in its hash bucket (of the key and the rollout's id):
    # about `share` of 100 on the candidate, within 3.5 standard deviations.
    spread = 3.5 * math.sqrt(100 * share / 100 * (1 - share / 100))
    assert abs(numbers.count(2) - share) <= spread
    assert numbers.count(1) + numbers.count(2) == 100
    # The same keys draw the same way again.
    assert [rollout.canary_bucket(active.pk, f"order-{i}") < share for i in range(100)] == [
        n == 2 for n in numbers
    ]


def test_the_draw_is_deterministic_per_idempotency_key(make_workflow):
    _, active = canary(make_workflow, share=50)
    buckets = [rollout.canary_bucket(active.pk, f"k-{i}") for i in range(50)]
    assert buckets == [rollout.canary_bucket(active.pk, f"k-{i}") for i in range(50)]
    assert len(set(buckets)) > 10


def test_a_run_without_a_key_draws_once_and_keeps_its_version(make_workflow):
    workflow, _ = canary(make_workflow, share=50)
    versions = {version_of(workflow) for _ in range(40)}
    assert versions == {1, 2}  # both sides get runs (a 2**-39 chance of failing)


def test_a_share_of_1_to_99_is_required(make_workflow):
    v1 = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    edit_draft(v1.workflow, 2)
    with pytest.raises(engine.PublishError, match="1 to 99"):
        engine.publish_workflow(workflow=v1.workflow, canary_share=100)
    assert v1.workflow.versions.count() == 1


def test_the_first_version_cannot_be_a_canary(make_workflow):
    workflow = make_workflow(chain(END), publish=False)
    with pytest.raises(engine.PublishError, match="publish it live"):
        engine.publish_workflow(workflow=workflow, canary_share=10)


def test_publishing_while_a_canary_runs_is_refused(make_workflow):
    workflow, _ = canary(make_workflow)
    edit_draft(workflow, 3)
    with pytest.raises(engine.PublishError, match="canary is running"):
        engine.publish_workflow(workflow=workflow)


def test_promote_makes_the_candidate_live_and_runs_keep_their_version(make_workflow):
    workflow, active = canary(make_workflow, share=50)
    before = {
        run.pk: run.version_id
        for run in (engine.start_run(workflow=workflow, input={}).run for _ in range(10))
    }
    engine.promote_rollout(rollout_id=active.pk, actor="user:olga", reason="looks good")
    assert {version_of(workflow) for _ in range(10)} == {2}
    for run_id, version_id in before.items():
        assert drive(run_id).version_id == version_id
    active.refresh_from_db()
    assert active.status == RolloutStatus.PROMOTED and active.promoted_by == "user:olga"


def test_roll_back_keeps_the_baseline_and_after_a_promote_returns_to_it(make_workflow):
    workflow, active = canary(make_workflow)
    engine.roll_back_rollout(rollout_id=active.pk, actor="user:olga", reason="more errors")
    assert {version_of(workflow) for _ in range(10)} == {1}

    edit_draft(workflow, 3)
    engine.publish_workflow(workflow=workflow, canary_share=20)
    second = Rollout.objects.get(workflow=workflow, status=RolloutStatus.ACTIVE)
    engine.promote_rollout(rollout_id=second.pk, actor="user:olga")
    assert version_of(workflow) == 3
    engine.roll_back_rollout(rollout_id=second.pk, actor="user:olga", reason="refunds broke")
    assert {version_of(workflow) for _ in range(5)} == {1}
    with pytest.raises(engine.InvalidState, match="rolled back already"):
        engine.roll_back_rollout(rollout_id=second.pk, actor="user:olga")


def test_a_promote_cannot_be_undone_once_another_version_went_live(make_workflow):
    workflow, active = canary(make_workflow)
    engine.promote_rollout(rollout_id=active.pk, actor="user:olga")
    edit_draft(workflow, 3)
    engine.publish_workflow(workflow=workflow)
    assert version_of(workflow) == 3  # a live publish moves the pinned live version
    with pytest.raises(engine.InvalidState, match="made live since"):
        engine.roll_back_rollout(rollout_id=active.pk, actor="user:olga")


def test_promote_and_roll_back_are_audited_with_who_and_why(make_workflow):
    _, active = canary(make_workflow)
    engine.promote_rollout(rollout_id=active.pk, actor="user:olga", reason="green for a day")
    engine.roll_back_rollout(rollout_id=active.pk, actor="user:ivan", reason="refund bug")
    entries = AuditEntry.objects.filter(target_type="runs.rollout", target_id=str(active.pk))
    rows = [(e.action, e.actor, e.data["reason"], e.data.get("live")) for e in entries]
    assert rows == [
        ("rollout.started", "user:olga", "", None),
        ("rollout.promoted", "user:olga", "green for a day", 2),
        ("rollout.rolled_back", "user:ivan", "refund bug", 1),
    ]
    assert entries.last().data["was"] == "promoted"


def test_a_retried_run_keeps_the_version_it_started_on_after_a_promote(make_workflow):
    Switch.objects.create(name="down", on=True)
    v1 = make_workflow(
        chain(
            {
                "key": "a",
                "kind": "tool",
                "config": {"tool": "test.fail_while", "args": {"switch": "down"}},
            },
            END,
        )
    )
    workflow = v1.workflow
    run = drive(engine.start_run(workflow=workflow, input={}).run.pk)
    assert run.status == "failed" and run.version == v1
    workflow.steps.filter(key="done").update(config={"outcome": "done2", "success": True})
    engine.publish_workflow(workflow=workflow, canary_share=99)
    active = Rollout.objects.get(workflow=workflow)
    engine.promote_rollout(rollout_id=active.pk, actor="user:olga")
    Switch.objects.filter(name="down").update(on=False)
    engine.retry_run(run_id=run.pk)
    run = drive(run.pk)
    assert run.status == "succeeded" and run.version == v1 and run.outcome == "done"


def test_one_canary_at_a_time(make_workflow):
    workflow, active = canary(make_workflow)
    with pytest.raises(engine.InvalidState, match="canary of"):
        rollout.start_canary(
            workflow=workflow, candidate=active.candidate, share_pct=5, actor="user:x"
        )


def test_a_sandbox_run_without_a_version_runs_the_live_one_and_takes_no_draw(make_workflow):
    workflow, _ = canary(make_workflow, share=99)
    started = [
        engine.start_run(workflow=workflow, input={}, mode="dry_run", idempotency_key=f"k{i}")
        for i in range(10)
    ]
    assert {s.run.version.number for s in started} == {1}
    assert {s.run.mode for s in started} == {"dry_run"}
