"""An event written for an entity no workflow can match is written, with a
warning that says why and how to fix it (admin and API); aliases are
managed in both."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.urls import reverse

from integrations.apikeys import create_apikey
from knowledge import memory, services
from knowledge.models import Entity, EntityAlias, Event
from runs import engine
from runs.models import Step
from tests.api.conftest import client_for, post
from tests.knowledge.test_graph_steps import OUTREACH

EVENTS = "/api/v1/knowledge/events"


@pytest.fixture
def lead_workflow(make_workflow, paused_type):
    """A published workflow whose knowledge steps key accounts (by domain)."""
    return make_workflow(OUTREACH)


@pytest.fixture
def api(db):
    _key, secret = create_apikey(name="ops", scopes=["knowledge:write"], workflows=())
    return client_for(secret)


def pause_by_api(api, key: str, entity_type: str = "account"):
    body = {
        "entity_type": entity_type,
        "entity_key": key,
        "type": "outreach.paused",
        "payload": {"until": "2025-07-01"},
        "reason": "the founder asked",
    }
    return post(api, EVENTS, body)


def test_an_event_for_a_bare_name_is_written_with_a_warning_naming_the_fix(api, lead_workflow):
    response = pause_by_api(api, "Bareco")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["entity_key"] == "bareco"
    [warning] = body["warnings"]
    assert "account:bareco is not a domain" in warning
    assert "alias" in warning and "/entities/<id>/aliases" in warning
    assert Event.objects.get().entity.key == "bareco"  # written all the same


def test_an_event_for_a_domain_or_an_alias_carries_no_warning(api, lead_workflow):
    response = pause_by_api(api, "https://www.Bareco.com/")
    assert response.status_code == 201
    assert (response.json()["entity_key"], response.json()["warnings"]) == ("bareco.com", [])
    bareco = Entity.objects.get()
    services.add_alias(entity=bareco, key="bareco")
    response = pause_by_api(api, "Bareco")
    assert (response.json()["entity_key"], response.json()["warnings"]) == ("bareco.com", [])
    # A name filed before the alias existed is matched through it: no warning.
    stale = Entity.objects.create(type="account", key="bareco")
    assert memory.entity_warnings(entity=stale) == []


def test_an_entity_type_no_workflow_reads_is_warned_about(api, lead_workflow, make_workflow):
    response = pause_by_api(api, "acme-corp", entity_type="customer")
    assert response.status_code == 201
    [warning] = response.json()["warnings"]
    assert "entity type 'customer'" in warning and "they use: account" in warning
    # Once a published workflow's knowledge step reads the type, the warning goes.
    steps = json.loads(json.dumps(OUTREACH).replace('"account"', '"customer"'))
    make_workflow(steps)
    assert pause_by_api(api, "acme-corp", entity_type="customer").json()["warnings"] == []


def test_without_any_workflow_reading_accounts_every_account_write_is_warned(api, paused_type):
    [warning] = pause_by_api(api, "acme.com").json()["warnings"]
    assert "entity type 'account'" in warning and "they use: none" in warning


def test_only_the_latest_published_version_of_a_workflow_counts(lead_workflow):
    assert memory.referenced_entity_types() == {"account"}
    check = Step.objects.get(workflow=lead_workflow.workflow, kind="knowledge_check")
    check.config = {**check.config, "entity_type": "customer"}
    check.save()
    assert engine.publish_workflow(workflow=lead_workflow.workflow).number == 2
    assert memory.referenced_entity_types() == {"customer"}


def test_aliases_are_added_and_removed_through_the_api(api, lead_workflow):
    bareco = services.upsert_entity(type="account", key="bareco.com")
    url = f"/api/v1/knowledge/entities/{bareco.pk}/aliases"
    response = post(api, url, {"key": " Bareco "})
    assert response.status_code == 201, response.content
    assert response.json()["key"] == "bareco" and response.json()["entity_key"] == "bareco.com"
    assert response.json()["actor"].startswith("key:")
    other = services.upsert_entity(type="account", key="globex.com")
    taken = post(api, f"/api/v1/knowledge/entities/{other.pk}/aliases", {"key": "bareco"})
    assert taken.status_code == 422 and taken.json()["code"] == "invalid_alias"

    listed = api.get("/api/v1/knowledge/entities", {"type": "account", "key": "Bareco"}).json()
    assert [(e["key"], e["aliases"]) for e in listed["items"]] == [("bareco.com", ["bareco"])]
    events = api.get(EVENTS, {"entity_type": "account", "entity_key": "Bareco"})
    assert events.status_code == 200

    assert api.delete(url + "?key=BARECO").status_code == 204
    assert not EntityAlias.objects.exists()
    assert api.delete(url + "?key=bareco").status_code == 404
    assert post(api, "/api/v1/knowledge/entities/999999/aliases", {"key": "x"}).status_code == 404


def test_the_event_list_finds_events_through_an_alias(api, lead_workflow):
    pause_by_api(api, "bareco.com")
    bareco = Entity.objects.get()
    assert api.get(EVENTS, {"entity_type": "account", "entity_key": "bareco"}).json()["count"] == 0
    services.add_alias(entity=bareco, key="bareco")
    assert api.get(EVENTS, {"entity_type": "account", "entity_key": "Bareco"}).json()["count"] == 1
    assert api.get(EVENTS, {"entity_key": "bareco"}).json()["count"] == 1


def test_an_entity_key_that_does_not_normalise_is_a_422(api, lead_workflow):
    response = pause_by_api(api, "mailto:")
    assert response.status_code == 422 and response.json()["code"] == "invalid_key"
    assert list(response.json()["fields"]) == ["entity_key"]
    response = post(api, "/api/v1/knowledge/entities", {"type": "account", "key": "http://"})
    assert response.status_code == 422 and list(response.json()["fields"]) == ["key"]
    assert not Entity.objects.exists()


# ------------------------------------------------------------------ admin


@pytest.fixture
def admin_client(client, db):
    client.force_login(User.objects.create_superuser("ops", "ops@example.com", "pw"))
    return client


def add_event(admin_client, entity: Entity, paused_type):
    form = {
        "entity": entity.pk,
        "type": paused_type.pk,
        "payload": '{"until": "2025-07-01"}',
        "valid_from_0": "2025-05-01",
        "valid_from_1": "00:00:00",
        "valid_until_0": "2025-07-01",
        "valid_until_1": "00:00:00",
        "reason": "the founder asked",
        "supersedes": "",
    }
    response = admin_client.post(reverse("admin:knowledge_event_add"), form, follow=True)
    assert response.redirect_chain, response.content  # saved, not the form again
    return [(m.level_tag, str(m)) for m in response.context["messages"]]


def test_admin_warns_when_an_event_is_added_for_a_bare_name(
    admin_client, lead_workflow, paused_type
):
    bare = Entity.objects.create(type="account", key="bareco")
    messages = add_event(admin_client, bare, paused_type)
    warnings = [text for level, text in messages if level == "warning"]
    assert len(warnings) == 1 and "account:bareco is not a domain" in warnings[0]
    assert Event.objects.filter(entity=bare).count() == 1  # written all the same

    domain = services.upsert_entity(type="account", key="bareco.com")
    messages = add_event(admin_client, domain, paused_type)
    assert [level for level, _ in messages] == ["success"]


def entity_form(entity: Entity, *aliases: str, **fields) -> dict:
    existing = list(entity.aliases.order_by("id")) if entity.pk else []
    form = {
        "type": entity.type,
        "key": entity.key,
        "name": entity.name,
        "attributes": "{}",
        "aliases-TOTAL_FORMS": str(len(existing) + len(aliases)),
        "aliases-INITIAL_FORMS": str(len(existing)),
        "aliases-MIN_NUM_FORMS": "0",
        "aliases-MAX_NUM_FORMS": "1000",
        **fields,
    }
    for index, alias in enumerate(existing):
        form[f"aliases-{index}-id"] = str(alias.pk)
        form[f"aliases-{index}-entity"] = str(entity.pk)
    for index, key in enumerate(aliases, start=len(existing)):
        form[f"aliases-{index}-key"] = key
        form[f"aliases-{index}-entity"] = str(entity.pk or "")
    return form


def test_admin_adds_and_removes_aliases_inline_on_the_entity(admin_client, lead_workflow):
    bareco = services.upsert_entity(type="account", key="bareco.com")
    url = reverse("admin:knowledge_entity_change", args=[bareco.pk])
    response = admin_client.post(url, entity_form(bareco, " Bareco "))
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.errors
    alias = EntityAlias.objects.get()
    assert (alias.key, alias.entity_id, alias.actor_label) == ("bareco", bareco.pk, "ops")
    assert admin_client.get(url).status_code == 200

    response = admin_client.post(url, entity_form(bareco, "https://bareco.com"))
    assert response.status_code == 200  # the entity's own key is no alias
    errors = response.context["inline_admin_formsets"][0].formset.errors
    assert "own key" in str(errors)
    assert EntityAlias.objects.count() == 1

    form = entity_form(bareco)
    form["aliases-0-DELETE"] = "on"
    assert admin_client.post(url, form).status_code == 302
    assert not EntityAlias.objects.exists()


def test_admin_stores_an_entity_key_as_its_type_spells_it(admin_client, lead_workflow):
    new = Entity(type="account", key="https://www.Acme.com/", name="Acme")
    response = admin_client.post(reverse("admin:knowledge_entity_add"), entity_form(new))
    assert response.status_code == 302
    assert Entity.objects.get().key == "acme.com"
    messages = [(m.level_tag, str(m)) for m in get_messages(response.wsgi_request)]
    assert [level for level, _ in messages] == ["success"]

    services.add_alias(entity=Entity.objects.get(), key="acme")
    again = Entity(type="account", key="ACME", name="")
    response = admin_client.post(reverse("admin:knowledge_entity_add"), entity_form(again))
    assert response.status_code == 200
    assert "is an alias of account:acme.com" in str(response.context["adminform"].form.errors)
