"""Entity keys: one normaliser per entity type, extensible from settings."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from knowledge import keys, memory, services
from knowledge.keys import Key
from knowledge.models import Entity

ACCOUNT = [
    # (raw, key, canonical)
    ("acme.com", "acme.com", True),
    ("  ACME.com  ", "acme.com", True),
    ("https://www.acme.com/pricing?plan=pro#top", "acme.com", True),
    ("http://acme.com:8080", "acme.com", True),
    ("acme.com:8443/path", "acme.com", True),
    ("acme.com.", "acme.com", True),
    ("www.acme.com", "acme.com", True),
    ("WWW.Shop.Acme.co.uk/", "shop.acme.co.uk", True),
    ("https://user:secret@shop.acme.co.uk/x", "shop.acme.co.uk", True),
    ("www.com", "www.com", True),  # `www.` only goes when a domain is left
    ("bob@Acme.com", "acme.com", True),
    ("Bob <bob@acme.com>", "acme.com", True),
    ("mailto:bob@acme.com", "acme.com", True),
    ("bücher.de", "xn--bcher-kva.de", True),
    ("https://www.Bücher.de/katalog", "xn--bcher-kva.de", True),
    ("xn--bcher-kva.de", "xn--bcher-kva.de", True),
    ("ACME。COM", "acme.com", True),  # an ideographic full stop
    ("Bareco", "bareco", False),
    ("Acme   Inc.", "acme inc.", False),
    ("10.0.0.1", "10.0.0.1", False),
    ("http://localhost:8000/x", "localhost", False),
    ("-acme.com", "-acme.com", False),
    ("acme..com", "acme..com", False),
]
PERSON = [
    (" Bob@Acme.COM ", "bob@acme.com", True),
    ("mailto:Bob@acme.com", "bob@acme.com", True),
    ("Bob Smith <Bob@acme.com>", "bob@acme.com", True),
    ("bob@bücher.de", "bob@xn--bcher-kva.de", True),
    ("bob@www.acme.com", "bob@www.acme.com", True),
    ("Bob  Smith", "bob smith", False),
    ("bob@localhost", "bob@localhost", False),
]
GARBAGE = [
    ("account", ""),
    ("account", "   "),
    ("account", "http://"),
    ("account", "mailto:"),
    ("account", "bob@"),
    ("account", "http://[::1"),
    ("person", ""),
    ("person", "bob@"),
    ("person", "@acme.com"),
    ("lead", " \t "),
]


@pytest.mark.parametrize("raw, key, canonical", ACCOUNT)
def test_an_account_key_is_its_domain(raw, key, canonical):
    assert keys.normalise("account", raw) == Key(
        key, canonical, "" if canonical else keys.DOMAIN_FORM
    )


@pytest.mark.parametrize("raw, key, canonical", PERSON)
def test_a_person_key_is_an_email_address(raw, key, canonical):
    assert keys.normalise("person", raw) == Key(
        key, canonical, "" if canonical else keys.EMAIL_FORM
    )


@pytest.mark.parametrize("entity_type, raw", GARBAGE)
def test_a_value_with_nothing_usable_in_it_does_not_normalise(entity_type, raw):
    assert keys.normalise(entity_type, raw) is None
    assert memory.normalise_key(entity_type, raw) is None


def test_any_other_type_is_trimmed_collapsed_and_lower_cased():
    assert keys.normalise("lead", "  Big \n  Lead ") == Key("big lead")
    assert memory.normalise_key("lead", "Big Lead") == "big lead"


def ticket_key(raw: str) -> Key | None:
    digits = "".join(c for c in raw if c.isdigit())
    return Key(f"T{digits}") if digits else None


@override_settings(BOSUN_ENTITY_KEYS={"ticket": "tests.knowledge.test_keys.ticket_key"})
def test_an_installation_adds_its_own_types_in_settings(db):
    assert memory.normalise_key("ticket", "t-0012") == "T0012"
    entity = services.upsert_entity(type="ticket", key="ticket #0012")
    assert entity.key == "T0012"
    # Types not listed fall back to the name normaliser.
    assert memory.normalise_key("account", "https://Acme.com/") == "https://acme.com/"


@pytest.mark.parametrize("path", ["knowledge.keys.no_such_key", "knowledge.keys.DOMAIN_FORM"])
def test_a_bad_normaliser_path_fails_at_start_up(path):
    with (
        override_settings(BOSUN_ENTITY_KEYS={"account": path}),
        pytest.raises(ImproperlyConfigured, match="BOSUN_ENTITY_KEYS"),
    ):
        keys.check_registry()
    keys.check_registry()  # the project's own registry imports


def test_every_spelling_of_a_domain_upserts_one_account(db):
    spellings = ["acme.com", "https://www.Acme.com/", "bob@ACME.com", "acme.com.", "Acme.com:443"]
    entities = {services.upsert_entity(type="account", key=raw).pk for raw in spellings}
    assert len(entities) == 1
    assert services.upsert_entity(type="account", key="acme.com").key == "acme.com"


def test_a_key_that_does_not_normalise_is_refused_and_nothing_is_written(db):
    with pytest.raises(services.InvalidKey) as caught:
        services.upsert_entity(type="account", key="mailto:")
    assert list(caught.value.errors) == ["entity_key"]
    with pytest.raises(services.InvalidKey):
        services.upsert_entity(type="lead", key="İ" * 300)  # longer than a key once lower-cased
    assert not Entity.objects.exists()
