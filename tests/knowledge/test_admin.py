"""Operators read and write the graph in admin."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from knowledge import services
from knowledge.models import DedupRecord, Event, EventType


@pytest.fixture
def admin_client(client, db):
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


@pytest.fixture
def pause(paused_type, make_runs):
    acme = services.upsert_entity(type="account", key="acme", name="Acme")
    event = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="the founder asked",
        actor_label="founder-call",
        valid_from=datetime(2025, 5, 1, tzinfo=UTC),
        valid_until=datetime(2025, 7, 1, tzinfo=UTC),
    )
    [run_id] = make_runs(1)
    services.claim_dedup(scope="lead", key="acme.com", run_id=run_id, seq=1, step_key="gate")
    return event


def test_the_knowledge_admin_pages_render(admin_client, pause):
    fix = services.supersede_event(
        event=pause, payload={"until": "2025-08-01"}, reason="typo", actor_label="ops"
    )
    pages = [
        reverse("admin:knowledge_eventtype_changelist"),
        reverse("admin:knowledge_eventtype_change", args=[pause.type_id]),
        reverse("admin:knowledge_eventtype_add"),
        reverse("admin:knowledge_entity_changelist") + "?q=acme",
        reverse("admin:knowledge_event_changelist"),
        reverse("admin:knowledge_event_change", args=[pause.pk]),
        reverse("admin:knowledge_event_add"),
        reverse("admin:knowledge_event_add") + f"?supersedes={fix.pk}",
        reverse("admin:knowledge_relation_changelist"),
        reverse("admin:knowledge_deduprecord_changelist"),
    ]
    for url in pages:
        assert admin_client.get(url).status_code == 200, url
    fix_page = admin_client.get(reverse("admin:knowledge_event_change", args=[fix.pk]))
    assert "Supersede this event" in fix_page.content.decode()
    page = admin_client.get(reverse("admin:knowledge_entity_change", args=[pause.entity_id]))
    text = page.content.decode()
    assert page.status_code == 200
    assert "Event timeline" in text and "superseded</strong> by event" in text
    assert "the founder asked" in text and "typo" in text


def test_existing_events_and_dedup_records_are_read_only(admin_client, pause):
    url = reverse("admin:knowledge_event_change", args=[pause.pk])
    response = admin_client.post(url, {"reason": "rewritten", "payload": "{}"})
    assert response.status_code == 403
    assert Event.objects.get(pk=pause.pk).reason == "the founder asked"
    delete = reverse("admin:knowledge_event_delete", args=[pause.pk])
    assert admin_client.post(delete, {"post": "yes"}).status_code == 403
    record = DedupRecord.objects.get()
    change = reverse("admin:knowledge_deduprecord_change", args=[record.pk])
    assert admin_client.post(change, {"key": "other"}).status_code == 403


def event_form(pause, **fields):
    return {
        "entity": pause.entity_id,
        "type": pause.type_id,
        "payload": '{"until": "2025-09-01"}',
        "valid_from_0": "2025-08-01",
        "valid_from_1": "00:00:00",
        "valid_until_0": "2025-09-01",
        "valid_until_1": "00:00:00",
        "reason": "asked again",
        "supersedes": "",
        **fields,
    }


def test_an_event_added_by_hand_needs_a_reason(admin_client, pause):
    response = admin_client.post(reverse("admin:knowledge_event_add"), event_form(pause, reason=""))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["reason"] == ["This field is required."]
    assert Event.objects.count() == 1


def test_an_event_added_by_hand_shows_payload_schema_errors_on_the_form(admin_client, pause):
    response = admin_client.post(
        reverse("admin:knowledge_event_add"), event_form(pause, payload='{"note": "x"}')
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors["payload"] == ["until: 'until' is a required property"]
    assert Event.objects.count() == 1


def test_an_event_added_by_hand_is_written_by_the_service_with_the_user_as_actor(
    admin_client, pause
):
    response = admin_client.post(reverse("admin:knowledge_event_add"), event_form(pause))
    assert response.status_code == 302
    event = Event.objects.exclude(pk=pause.pk).get()
    assert (event.actor_label, event.reason, event.source_run_id) == ("ops", "asked again", None)
    assert event.payload == {"until": "2025-09-01"}


def test_an_event_is_superseded_in_admin_by_naming_it_once(admin_client, pause):
    form = event_form(
        pause, supersedes=pause.pk, reason="the date was wrong", valid_from_0="", valid_from_1=""
    )
    assert admin_client.post(reverse("admin:knowledge_event_add"), form).status_code == 302
    fix = Event.objects.get(supersedes=pause)
    assert fix.actor_label == "ops" and fix.valid_from == pause.valid_from
    again = admin_client.post(reverse("admin:knowledge_event_add"), form)
    assert again.status_code == 200
    assert "supersedes" in again.context["adminform"].form.errors
    assert Event.objects.count() == 2


def test_an_event_type_with_an_invalid_schema_is_refused(admin_client, db):
    response = admin_client.post(
        reverse("admin:knowledge_eventtype_add"),
        {"name": "lead.scored", "description": "", "payload_schema": '{"type": "nope"}'},
    )
    assert response.status_code == 200
    assert "Not a valid JSON Schema" in str(response.context["adminform"].form.errors)
    assert not EventType.objects.filter(name="lead.scored").exists()
