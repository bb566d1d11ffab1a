"""The audit log in admin: everyone with a role reads it, nobody edits it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from policies import audit
from policies.models import AuditEntry

pytestmark = pytest.mark.django_db

LIST = "admin:policies_auditentry_changelist"


@pytest.fixture
def entries(db) -> list[AuditEntry]:
    return [
        audit.record(
            action="run.cancelled",
            actor="user:ana",
            target_type="runs.run",
            target_id=12,
            data={"reason": "customer asked; mail jane.doe@example.com"},
        ),
        audit.record(action="run.retried", actor="user:bo", target_type="runs.run", target_id=112),
        audit.record(
            action="killswitch.engaged", actor="key:bk_3f9a", target_type="x", target_id=1
        ),
    ]


@pytest.mark.parametrize("role", ["viewer", "manager", "operator"])
def test_viewers_managers_and_operators_read_the_list(client, make_user, entries, role):
    client.force_login(make_user(role))
    response = client.get(reverse(LIST))
    assert response.status_code == 200
    text = response.content.decode()
    assert "run.cancelled" in text and "key:bk_3f9a" in text


def test_reviewers_need_only_their_queue(client, make_user, entries):
    client.force_login(make_user("reviewer"))
    assert client.get(reverse(LIST)).status_code == 403


def test_nobody_adds_changes_or_deletes_an_entry_not_even_a_superuser(client, make_user, entries):
    client.force_login(make_user(superuser=True))
    entry = entries[0]
    assert client.get(reverse("admin:policies_auditentry_add")).status_code == 403
    assert client.post(reverse("admin:policies_auditentry_add"), {}).status_code == 403
    delete = reverse("admin:policies_auditentry_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    change = reverse("admin:policies_auditentry_change", args=[entry.pk])
    page = client.get(change)
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert client.post(change, {"actor": "user:mallory"}).status_code == 403
    listing = client.get(reverse(LIST)).content.decode()
    assert "delete_selected" not in listing
    assert AuditEntry.objects.get(pk=entry.pk).actor == "user:ana"
    assert audit.verify() == (3, None)


def test_the_list_filters_by_action_and_actor(client, make_user, entries):
    client.force_login(make_user("operator"))

    def shown(**query) -> list[int]:
        return [e.pk for e in client.get(reverse(LIST), query).context["cl"].result_list]

    assert shown(action="run.retried") == [entries[1].pk]
    assert shown(actor="user:ana") == [entries[0].pk]
    assert shown(actor="key:bk_3f9a", action="run.retried") == []


def test_search_finds_a_target_by_type_and_exact_id(client, make_user, entries):
    client.force_login(make_user("operator"))
    response = client.get(reverse(LIST), {"q": "runs.run 12"})
    assert [e.pk for e in response.context["cl"].result_list] == [entries[0].pk]


def test_entry_data_is_redacted_for_people_without_the_personal_data_permission(
    client, make_user, entries
):
    change = reverse("admin:policies_auditentry_change", args=[entries[0].pk])
    client.force_login(make_user("viewer"))
    for page in (client.get(change), client.get(reverse(LIST))):
        text = page.content.decode()
        assert "jane.doe@example.com" not in text and "[EMAIL]" in text
    client.force_login(make_user("operator"))  # operators may see personal data
    assert "jane.doe@example.com" in client.get(change).content.decode()


def test_the_list_costs_a_fixed_number_of_queries(
    client, make_user, entries, django_assert_max_num_queries
):
    client.force_login(make_user("operator"))
    for i in range(30):
        audit.record(action="run.retried", actor=f"user:u{i}", target_type="runs.run", target_id=i)
    with django_assert_max_num_queries(12):
        assert client.get(reverse(LIST)).status_code == 200
