"""Existing entities are re-keyed to the normal form when keys became normalised."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from knowledge.models import Entity

pytestmark = pytest.mark.django_db
migration = importlib.import_module("knowledge.migrations.0003_normalise_entity_keys")


def test_old_spellings_are_re_keyed_and_a_clash_is_left_for_a_person(capsys):
    spelled = Entity.objects.create(type="account", key="https://www.Globex.com/")
    clash = Entity.objects.create(type="account", key="Initech.com")
    holder = Entity.objects.create(type="account", key="initech.com")
    person = Entity.objects.create(type="person", key=" Dana@Acme.com ")
    migration.normalise(apps, None)
    spelled.refresh_from_db(), clash.refresh_from_db(), person.refresh_from_db()
    assert (spelled.key, person.key) == ("globex.com", "dana@acme.com")
    assert clash.key == "Initech.com"
    assert f"#{clash.pk}" in capsys.readouterr().out and holder.key == "initech.com"
