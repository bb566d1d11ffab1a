"""Writing events: schemas, reasons, immutability and corrections."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge import services
from knowledge.models import Entity, Event


@pytest.fixture
def acme(db) -> Entity:
    return services.upsert_entity(type="account", key="acme", name="Acme Inc.")


def test_a_payload_that_breaks_its_schema_is_refused_field_by_field_and_nothing_is_written(
    acme, paused_type
):
    with pytest.raises(services.InvalidPayload) as caught:
        services.record_event(
            entity=acme,
            type="outreach.paused",
            payload={"note": "asked us to wait"},
            reason="founder asked",
            actor_label="ops@bosun",
        )
    assert caught.value.errors == {"until": "'until' is a required property"}
    assert caught.value.code == "invalid_payload"

    with pytest.raises(services.InvalidPayload) as caught:
        services.record_event(
            entity=acme,
            type="outreach.paused",
            payload={"until": 20250701},
            reason="founder asked",
            actor_label="ops@bosun",
        )
    assert caught.value.errors == {"until": "20250701 is not of type 'string'"}
    assert Event.objects.count() == 0


def test_an_unknown_event_type_is_refused(acme):
    with pytest.raises(services.UnknownEventType, match="outreach.pausd"):
        services.record_event(
            entity=acme, type="outreach.pausd", payload={}, reason="x", actor_label="ops"
        )
    assert Event.objects.count() == 0


def test_an_event_written_by_hand_needs_a_reason(acme, paused_type):
    with pytest.raises(services.InvalidEvent) as caught:
        services.record_event(
            entity=acme,
            type="outreach.paused",
            payload={"until": "2025-07-01"},
            reason="  ",
            actor_label="ops@bosun",
        )
    assert set(caught.value.errors) == {"reason"}
    assert Event.objects.count() == 0


def test_a_validity_window_must_end_after_it_starts(acme, paused_type):
    with pytest.raises(services.InvalidEvent) as caught:
        services.record_event(
            entity=acme,
            type="outreach.paused",
            payload={"until": "2025-07-01"},
            reason="founder asked",
            actor_label="ops",
            valid_from=datetime(2025, 7, 1, tzinfo=UTC),
            valid_until=datetime(2025, 6, 1, tzinfo=UTC),
        )
    assert caught.value.errors == {"valid_until": "must be after valid_from"}


def test_an_event_cannot_be_changed_once_written(acme, paused_type):
    event = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="founder asked",
        actor_label="ops",
    )
    event.payload = {"until": "2030-01-01"}
    with pytest.raises(ValueError, match="immutable"):
        event.save()
    assert Event.objects.get().payload == {"until": "2025-07-01"}


def test_an_event_is_superseded_once_and_a_second_correction_is_refused(acme, paused_type):
    first = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="founder asked",
        actor_label="ops",
        valid_from=datetime(2025, 5, 1, tzinfo=UTC),
        valid_until=datetime(2025, 7, 1, tzinfo=UTC),
    )
    fix = services.supersede_event(
        event=first, payload={"until": "2025-08-01"}, reason="typo in the date", actor_label="ops"
    )
    assert fix.supersedes == first and fix.entity == acme and fix.type == first.type
    assert fix.valid_until == first.valid_until  # the window is kept unless given
    with pytest.raises(services.AlreadySuperseded, match=f"by event {fix.pk}"):
        services.supersede_event(
            event=first, payload={"until": "2025-09-01"}, reason="other fix", actor_label="ops2"
        )
    assert Event.objects.count() == 2


def test_entity_upsert_returns_one_entity_per_type_and_key_and_merges_attributes(db):
    first = services.upsert_entity(type="account", key="acme", attributes={"plan": "pro"})
    again = services.upsert_entity(type="account", key="acme", name="Acme", attributes={"seats": 5})
    assert again.pk == first.pk
    assert again.name == "Acme" and again.attributes == {"plan": "pro", "seats": 5}
    assert services.upsert_entity(type="lead", key="acme").pk != first.pk
