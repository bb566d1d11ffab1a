"""The console page of an entity: its events with provenance and validity,
what holds now (a pause and until when), its runs and what they spent,
links to the search; redaction and roles."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from knowledge import services
from knowledge.models import EventType
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version
HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def acme(db):
    return services.upsert_entity(type="account", key="acme.com", name="Acme Inc")


def page(entity) -> str:
    return reverse("console-entity-detail", args=[entity.pk])


def test_the_page_shows_a_pause_until_when_and_each_events_provenance(
    client_for, two_step_version, acme
):
    paused = EventType.objects.create(name="outreach.paused")
    noted = EventType.objects.create(name="account.noted")
    writer = add_run(two_step_version, input={"domain": "acme.com"})
    until = timezone.now() + timedelta(days=14)
    services.record_event(
        entity=acme,
        type=paused,
        payload={"channel": "email"},
        reason="asked us to stop",
        valid_until=until,
        source_run_id=writer.pk,
        source_seq=2,
        source_step_key="pause",
    )
    services.record_event(
        entity=acme,
        type=noted,
        payload={"note": "old"},
        actor_label="user:rita",
        reason="met at a fair",
        valid_from=timezone.now() - timedelta(days=10),
        valid_until=timezone.now() - timedelta(days=1),
    )
    response = client_for("viewer").get(page(acme))
    assert response.status_code == 200
    body = response.content.decode()
    now_section = body.split('id="entity-now"')[1].split("</section>")[0]
    assert "outreach.paused" in now_section and until.strftime("%Y-%m-%d") in now_section
    assert "account.noted" not in now_section
    assert "expired" in body and "active" in body
    assert f'href="/console/runs/{writer.pk}/"' in body and "pause" in body
    assert "user:rita" in body and "asked us to stop" in body


def test_a_corrected_event_is_marked_superseded_and_no_longer_holds(client_for, acme):
    paused = EventType.objects.create(name="outreach.paused")
    first = services.record_event(
        entity=acme,
        type=paused,
        payload={},
        actor_label="api",
        reason="asked",
        valid_from=timezone.now() - timedelta(days=2),
    )
    services.supersede_event(
        event=first, payload={}, valid_until=timezone.now() - timedelta(seconds=1),
        actor_label="api", reason="lifted early",
    )  # fmt: skip
    body = client_for("viewer").get(page(acme)).content.decode()
    assert "superseded" in body
    assert "No event holds now" in body


def test_the_page_lists_the_entitys_runs_and_sums_what_they_spent(
    client_for, two_step_version, acme
):
    one = add_run(two_step_version, input={"domain": "acme.com"}, cost="0.25")
    two = add_run(
        two_step_version, input={"company": "Acme Inc"}, cost="0.50", credits={"enrichco": 15}
    )
    other = add_run(two_step_version, input={"domain": "globex.com"}, cost="9")
    response = client_for("viewer").get(page(acme))
    body = response.content.decode()
    assert f'href="/console/runs/{one.pk}/"' in body and f'href="/console/runs/{two.pk}/"' in body
    assert f'href="/console/runs/{other.pk}/"' not in body
    assert response.context["cost"] == Decimal("0.75") and response.context["run_count"] == 2
    assert "enrichco 15 cr" in body
    assert 'href="/console/search/?q=acme.com"' in body


def test_payloads_are_redacted_without_the_personal_data_permission(client_for, acme):
    kind = EventType.objects.create(name="contact.added")
    services.record_event(
        entity=acme, type=kind, payload={"email": "dana@acme.com"}, actor_label="api", reason="x"
    )
    assert "dana@acme.com" not in client_for("viewer").get(page(acme)).content.decode()
    assert "dana@acme.com" in client_for("operator").get(page(acme)).content.decode()


def test_the_search_links_to_the_entity_page(client_for, acme):
    body = client_for("viewer").get(reverse("console-run-search"), {"q": "Acme Inc"}, **HX)
    assert f'href="{page(acme)}"' in body.content.decode()


def test_the_page_needs_the_permission_to_see_runs(client_for, acme):
    assert client_for(None).get(page(acme)).status_code == 403
    assert client_for(None).get(page(acme), **HX).status_code == 403
    assert client_for("viewer").get(reverse("console-entity-detail", args=[999])).status_code == 404


def test_the_run_page_links_the_entities_its_input_names(client_for, two_step_version, acme):
    bob = services.upsert_entity(type="person", key="bob@acme.com")
    run = add_run(two_step_version, input={"domain": "https://acme.com/", "email": "bob@acme.com"})
    unrelated = add_run(two_step_version, input={"domain": "globex.com"})
    url = reverse("console-run-detail", args=[run.pk])
    body = client_for("operator").get(url).content.decode()
    assert f'href="{page(acme)}"' in body and f'href="{page(bob)}"' in body
    assert "person:bob@acme.com" in body
    polled = client_for("operator").get(url, **HX).content.decode()
    assert f'href="{page(acme)}"' in polled
    # Someone who may not see personal data gets the link, not the address.
    redacted = client_for("viewer").get(url).content.decode()
    assert f'href="{page(bob)}"' in redacted and "bob@acme.com" not in redacted
    other = client_for("viewer").get(reverse("console-run-detail", args=[unrelated.pk]))
    assert 'id="run-entities"' not in other.content.decode()


def test_keys_are_redacted_on_the_page_without_the_personal_data_permission(client_for):
    bob = services.upsert_entity(type="person", key="bob@acme.com")
    assert "bob@acme.com" not in client_for("viewer").get(page(bob)).content.decode()
    assert "bob@acme.com" in client_for("operator").get(page(bob)).content.decode()


def test_the_figures_cover_the_newest_runs_and_say_when_there_are_more(
    client_for, two_step_version, acme, monkeypatch
):
    from knowledge import views

    monkeypatch.setattr(views, "TOTALS_SHOWN", 3)
    runs = [add_run(two_step_version, input={"domain": "acme.com"}, cost="1") for _ in range(4)]
    response = client_for("viewer").get(page(acme))
    assert response.context["run_count"] == 3 and response.context["capped"]
    assert response.context["cost"] == Decimal("3")
    body = response.content.decode()
    assert 'id="entity-run-count">3+<' in body
    assert f'href="/console/runs/{runs[-1].pk}/"' in body


def test_the_page_costs_a_fixed_number_of_queries(
    client_for, two_step_version, acme, django_assert_num_queries
):
    kind = EventType.objects.create(name="outreach.paused")
    client = client_for("viewer")
    first = add_run(two_step_version, input={"domain": "acme.com"})
    services.record_event(entity=acme, type=kind, payload={}, source_run_id=first.pk, source_seq=1)
    client.get(page(acme))
    with django_assert_num_queries(17) as few:
        client.get(page(acme))
    for _ in range(5):
        run = add_run(two_step_version, input={"company": "Acme Inc"}, credits={"enrichco": 5})
        services.record_event(
            entity=acme, type=kind, payload={}, source_run_id=run.pk, source_seq=1
        )
    with django_assert_num_queries(len(few)):
        client.get(page(acme))
