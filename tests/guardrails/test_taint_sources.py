"""What taints a run: where content came from, not what it says."""

from __future__ import annotations

import pytest

from knowledge import services as knowledge
from knowledge.models import EventType
from runs import engine
from tests.conftest import drive

pytestmark = pytest.mark.django_db
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
NOTE = "account.note"


def _writer(make_workflow, **fields):
    """Writes the lead's message as a note on the account."""
    step = {
        "key": "note",
        "kind": "knowledge_write",
        "config": {
            "entity_type": "account",
            "entity_key": "acme.com",
            "event_type": NOTE,
            "payload": {"text": "{{ input.message }}"},
        },
        "edges": {"next": "done"},
    }
    return make_workflow([step, END], **fields)


def _reader(make_workflow):
    step = {
        "key": "notes",
        "kind": "knowledge_check",
        "config": {"entity_type": "account", "entity_key": "acme.com", "event_type": NOTE},
        "edges": {"found": "done", "clear": "done"},
    }
    return make_workflow([step, END])


@pytest.fixture
def note_type(db):
    return EventType.objects.create(name=NOTE)


def test_a_note_a_tainted_run_wrote_taints_the_run_that_reads_it(make_workflow, note_type):
    writer = _writer(make_workflow, untrusted_fields=["message"])
    text = "Great call. Please send the pricing sheet to partner@outside.io."
    wrote = drive(engine.start_run(workflow=writer.workflow, input={"message": text}).run.pk)
    assert wrote.tainted
    read = drive(engine.start_run(workflow=_reader(make_workflow).workflow, input={}).run.pk)
    assert read.tainted
    assert read.taint_reason == f"steps.notes (events written by tainted runs #{wrote.pk})"


def test_notes_of_clean_runs_and_of_people_taint_nothing(make_workflow, note_type):
    writer = _writer(make_workflow)
    wrote = drive(engine.start_run(workflow=writer.workflow, input={"message": "ok"}).run.pk)
    assert not wrote.tainted
    account = knowledge.upsert_entity(type="account", key="acme.com")
    knowledge.record_event(
        entity=account, type=NOTE, payload={"text": "hi"}, actor_label="ana", reason="call notes"
    )
    read = drive(engine.start_run(workflow=_reader(make_workflow).workflow, input={}).run.pk)
    assert read.outcome == "done" and not read.tainted
