"""`guarding_events`: what the tool gate asks at the moment of a call."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from knowledge import memory, services
from knowledge.models import Entity, Event, EventType

AT = datetime(2025, 6, 15, 9, tzinfo=UTC)


def day(month: int, day: int = 1) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


def write(entity: Entity, type: str, start: datetime, end: datetime | None, **payload) -> Event:
    return services.record_event(
        entity=entity,
        type=type,
        payload=payload or {"until": "2025-07-01"},
        reason="asked",
        actor_label="ops",
        valid_from=start,
        valid_until=end,
    )


@pytest.fixture
def acme(db, paused_type) -> Entity:
    EventType.objects.create(name="email.bounced")
    return services.upsert_entity(type="account", key="acme.com")


def guards(*keys: str, types=("outreach.paused",), at: datetime | None = AT) -> list[int]:
    found = memory.guarding_events(entity_type="account", keys=keys, event_types=types, at=at)
    return [event.pk for event in found]


def test_only_active_events_of_the_named_types_on_the_named_entities_guard(acme):
    active = write(acme, "outreach.paused", day(5), day(7))
    write(acme, "outreach.paused", day(1), day(2))  # over
    write(acme, "outreach.paused", day(8), None)  # not yet
    bounced = write(acme, "email.bounced", day(6), None, address="bob@acme.com")
    write(services.upsert_entity(type="account", key="globex.com"), "outreach.paused", day(5), None)

    assert guards("acme.com") == [active.pk]
    assert guards("acme.com", types=("outreach.paused", "email.bounced")) == [bounced.pk, active.pk]
    assert guards("acme.com", types=("email.bounced",)) == [bounced.pk]
    assert guards("acme.com", types=()) == []
    assert guards("initech.com") == []
    assert guards("acme.com", at=day(7)) == []  # valid_until is exclusive
    assert guards("acme.com", at=day(8)) == [Event.objects.get(valid_from=day(8)).pk]


def test_a_superseded_pause_does_not_guard(acme):
    pause = write(acme, "outreach.paused", day(5), day(7))
    assert guards("acme.com") == [pause.pk]
    services.supersede_event(
        event=pause,
        payload={"until": "2025-05-10"},
        reason="the founder meant May",
        actor_label="ops",
        valid_until=day(5, 10),
    )
    assert guards("acme.com") == []
    assert guards("acme.com", at=day(5, 5)) == [pause.superseded_by.pk]


def test_the_keys_of_a_call_are_normalised_and_garbage_is_skipped(acme):
    pause = write(acme, "outreach.paused", day(5), day(7))
    # A recipient, a URL and a spelling of the domain: one entity, one event.
    assert guards("Bob@ACME.com", "https://www.acme.com/x", "acme.com.") == [pause.pk]
    assert guards("mailto:", "", "http://") == []
    assert guards("mailto:", "bob@acme.com") == [pause.pk]


def test_keys_resolve_through_aliases_both_ways(acme):
    services.add_alias(entity=acme, key="Acme")
    pause = write(acme, "outreach.paused", day(5), day(7))
    assert guards("acme") == [pause.pk]
    # A pause filed under a name before it became an alias guards the domain.
    globex = services.upsert_entity(type="account", key="globex.com")
    misfiled = write(
        Entity.objects.create(type="account", key="globex"), "outreach.paused", day(5), None
    )
    assert guards("sales@globex.com") == []
    services.add_alias(entity=globex, key="globex")
    assert guards("sales@globex.com") == [misfiled.pk]
    assert guards("globex") == [misfiled.pk]


def test_it_answers_in_two_queries_however_many_keys(acme, django_assert_num_queries):
    write(acme, "outreach.paused", day(5), None)
    services.add_alias(entity=acme, key="acme")
    keys = [f"user{n}@acme.com" for n in range(20)] + ["acme", "globex.com", "mailto:"]
    with django_assert_num_queries(2):  # the database clock, then the events
        found = memory.guarding_events(
            entity_type="account", keys=keys, event_types=["outreach.paused"]
        )
        assert [event.entity.key for event in found] == ["acme.com"]  # loaded, no query
        assert [event.type.name for event in found] == ["outreach.paused"]
    with django_assert_num_queries(1):
        memory.guarding_events(
            entity_type="account", keys=keys, event_types=["outreach.paused"], at=AT
        )
    with django_assert_num_queries(0):
        memory.guarding_events(entity_type="account", keys=["mailto:"], event_types=["x.y"])


def test_it_reads_now_from_the_database_clock(acme):
    now = services.database_now()
    current = write(acme, "outreach.paused", now - timedelta(hours=1), now + timedelta(hours=1))
    write(acme, "outreach.paused", now - timedelta(hours=2), now - timedelta(hours=1))
    assert guards("acme.com", at=None) == [current.pk]
