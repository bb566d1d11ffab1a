"""The knowledge_check and knowledge_write steps inside real runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge import memory, services
from knowledge.models import Entity, Event
from runs import engine
from runs.engine.errors import StepError
from runs.engine.registry import KINDS
from runs.models import StepRun
from tests.conftest import chain, drive
from tests.knowledge.conftest import END, context
from tests.testapp.models import Execution

OUTREACH = [
    {
        "key": "check",
        "kind": "knowledge_check",
        "config": {
            "entity_type": "account",
            "entity_key": "{{ input.account }}",
            "event_type": "outreach.paused",
            "at": "{{ input.at }}",
        },
        "edges": {"found": "paused", "clear": "outreach"},
    },
    {
        "key": "outreach",
        "kind": "tool",
        "config": {"tool": "test.count"},
        "edges": {"next": "sent"},
    },
    {"key": "paused", "kind": "end", "config": {"outcome": "paused"}},
    {"key": "sent", "kind": "end", "config": {"outcome": "sent"}},
]
WRITE = {
    "key": "pause",
    "kind": "knowledge_write",
    "config": {
        "entity_type": "account",
        "entity_key": "{{ input.account }}",
        "entity_name": "{{ input.name }}",
        "event_type": "outreach.paused",
        "payload": {"until": "{{ input.until }}"},
        "valid_from": "{{ input.since }}",
        "valid_until": "{{ input.until }}",
        "reason": "{{ input.name }} replied: not before {{ input.until }}",
    },
}

PAUSE = {"account": "acme", "name": "Acme", "since": "2025-05-01", "until": "2025-07-01"}


def outreach(workflow, account: str, at: str):
    run = drive(engine.start_run(workflow=workflow, input={"account": account, "at": at}).run.pk)
    sent = Execution.objects.filter(run_id=run.pk, step_key="outreach").count()
    return run, sent


def test_a_paused_account_is_not_contacted_until_the_date_and_others_are(
    make_workflow, paused_type
):
    workflow = make_workflow(OUTREACH).workflow
    acme = services.upsert_entity(type="account", key="acme")
    pause = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="the founder asked us to pause until July",
        actor_label="founder-call",
        valid_from=datetime(2025, 5, 1, tzinfo=UTC),
        valid_until=datetime(2025, 7, 1, tzinfo=UTC),
    )

    run, sent = outreach(workflow, "acme", "2025-06-15T09:00:00Z")
    assert (run.outcome, sent) == ("paused", 0)
    check = StepRun.objects.get(run=run, step_key="check")
    assert check.edge == "found" and check.output["found"] is True
    [blocker] = check.output["events"]
    assert blocker["id"] == pause.pk and blocker["actor"] == "founder-call"
    assert blocker["reason"] == "the founder asked us to pause until July"
    assert blocker["valid_until"].startswith("2025-07-01")

    assert outreach(workflow, "globex", "2025-06-15T09:00:00Z")[0].outcome == "sent"
    assert outreach(workflow, "globex", "2025-06-15T09:00:00Z")[1] == 1
    run, sent = outreach(workflow, "acme", "2025-07-01")  # the pause ends at the date
    assert (run.outcome, sent) == ("sent", 1)
    assert StepRun.objects.get(run=run, step_key="check").output["events"] == []


def test_an_event_written_by_a_run_links_back_to_its_run_and_step(make_workflow, paused_type):
    version = make_workflow(
        chain({"key": "first", "kind": "tool", "config": {"tool": "echo"}}, WRITE, END)
    )
    run = drive(
        engine.start_run(
            workflow=version.workflow,
            input=PAUSE,
        ).run.pk
    )
    assert run.status == "succeeded"
    event = Event.objects.get()
    assert (event.source_run_id, event.source_seq, event.source_step_key) == (run.pk, 2, "pause")
    assert event.entity.name == "Acme" and event.payload == {"until": "2025-07-01"}
    assert event.valid_until == datetime(2025, 7, 1, tzinfo=UTC)
    assert event.reason == "Acme replied: not before 2025-07-01"
    assert StepRun.objects.get(run=run, step_key="pause").output["event_id"] == event.pk

    history = memory.entity_history(entity=event.entity)
    assert [(e.id, e.source_run_id, e.source_step_key) for e in history.events] == [
        (event.pk, run.pk, "pause")
    ]
    assert [(r.id, r.status, r.steps) for r in history.runs] == [(run.pk, "succeeded", ("pause",))]


def test_a_write_step_executed_again_after_a_crash_writes_no_second_event(make_runs, paused_type):
    [run_id] = make_runs(1)
    kind = KINDS["knowledge_write"]
    config = kind.Config.model_validate(WRITE["config"])
    ctx = context(run_id, step_key="pause", seq=3, **PAUSE)
    first = kind.execute(config, ctx)
    ctx.attempt = 2  # the worker died before the checkpoint; the step runs again
    second = kind.execute(config, ctx)
    assert Event.objects.count() == 1
    assert first.output["event_id"] == second.output["event_id"] == Event.objects.get().pk
    # Another step of the same run writes its own event.
    kind.execute(config, context(run_id, step_key="pause", seq=4, **PAUSE))
    assert Event.objects.count() == 2


def test_an_invalid_payload_fails_the_write_step_at_once_with_the_field_errors(
    make_workflow, paused_type
):
    bad = {**WRITE, "config": {**WRITE["config"], "payload": {"note": "{{ input.until }}"}}}
    version = make_workflow(chain(bad, END))
    run = drive(engine.start_run(workflow=version.workflow, input=PAUSE).run.pk)
    assert run.status == "failed"
    [attempt] = StepRun.objects.filter(run=run)  # not retried
    assert attempt.error_type == "invalid_event"
    assert "until: 'until' is a required property" in attempt.error
    assert Event.objects.count() == 0
    assert not Entity.objects.exists()  # nothing is written, not even the entity


def test_a_check_of_an_entity_never_seen_is_clear(make_runs, paused_type):
    [run_id] = make_runs(1)
    kind = KINDS["knowledge_check"]
    config = kind.Config.model_validate(OUTREACH[0]["config"])
    outcome = kind.execute(
        config, context(run_id, step_key="check", account="new", at="2025-06-01")
    )
    assert outcome.edge == "clear"
    assert outcome.output == {"found": False, "entity": None, "events": []}
    assert not Entity.objects.exists()


def test_an_empty_entity_key_fails_the_step_without_retries(make_runs, paused_type):
    [run_id] = make_runs(1)
    kind = KINDS["knowledge_check"]
    config = kind.Config.model_validate(OUTREACH[0]["config"])
    with pytest.raises(StepError) as caught:
        kind.execute(config, context(run_id, step_key="check", account=" ", at="2025-06-01"))
    assert caught.value.retryable is False


def problems(make_workflow, steps) -> list[str]:
    workflow = make_workflow(steps, publish=False)
    with pytest.raises(engine.PublishError) as caught:
        engine.publish_workflow(workflow=workflow)
    return caught.value.problems


def test_publish_checks_the_configs_of_knowledge_and_dedup_steps(make_workflow, paused_type):
    typo = [{**OUTREACH[0], "config": {**OUTREACH[0]["config"], "event_type": "outreach.pausd"}}]
    found = problems(make_workflow, typo + OUTREACH[1:])
    assert any(
        p.startswith("step 'check' (knowledge_check): no event type named 'outreach.pausd'")
        for p in found
    ), found

    no_clear = [{**OUTREACH[0], "edges": {"found": "paused"}}, *OUTREACH[1:]]
    assert "step 'check' (knowledge_check): edge 'clear' is missing" in problems(
        make_workflow, no_clear
    )

    extra = {**WRITE, "config": {**WRITE["config"], "colour": "red"}}
    assert "step 'pause' (knowledge_write): config.colour: Extra inputs are not permitted" in (
        problems(make_workflow, chain(extra, END))
    )

    gate = {
        "key": "gate",
        "kind": "dedup",
        "config": {"key": "{{ input.domain", "scope": "lead", "window_s": -1},
        "edges": {"next": "done"},
    }
    found = problems(make_workflow, [gate, END])
    assert any(p.startswith("step 'gate' (dedup): config.window_s:") for p in found), found
    gate["config"]["window_s"] = 60
    found = problems(make_workflow, [gate, END])
    assert "step 'gate' (dedup): edge 'duplicate' is missing" in found
    assert any(p.startswith("step 'gate' (dedup): template '{{ input.domain'") for p in found)
