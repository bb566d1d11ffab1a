"""Operational state in view: a banner on every console page while a kill
switch is engaged, lifted from there by an operator with a reason; console
error pages instead of Django's; durations in human units."""

from __future__ import annotations

import pytest
from django.test import RequestFactory
from django.urls import reverse
from django.views.defaults import server_error

from lib.durations import human_ms
from policies.models import AuditEntry, KillSwitch
from runs.engine.switches import set_switch

PAGES = ("console-dashboard", "console-run-list", "console-review-queue")


@pytest.fixture
def paused(db):
    return set_switch(
        scope="workflow", target="lead-intake", engaged=True, reason="vendor outage", by="dana"
    )


@pytest.mark.parametrize("page", PAGES)
def test_every_console_page_shows_an_engaged_switch_with_who_and_why(client_for, paused, page):
    body = client_for("operator").get(reverse(page)).content.decode()
    assert 'id="switch-banner"' in body
    assert "Kill switch engaged on workflow lead-intake" in body
    assert "dana" in body and "vendor outage" in body
    assert reverse("console-switch-lift", args=[paused.pk]) in body


def test_no_banner_while_nothing_is_engaged(client_for, paused):
    set_switch(scope="workflow", target="lead-intake", engaged=False, reason="back", by="dana")
    body = client_for("operator").get(reverse("console-run-list")).content.decode()
    assert "switch-banner" not in body


def test_an_operator_lifts_it_from_the_banner_with_a_reason(client_for, paused):
    client = client_for("operator", csrf=False)
    back = reverse("console-run-list") + "?status=failed"
    response = client.post(
        reverse("console-switch-lift", args=[paused.pk]),
        {"reason": "vendor is back", "next": back},
    )
    assert response.status_code == 302 and response["Location"] == back
    paused.refresh_from_db()
    assert not paused.engaged and paused.reason == "vendor is back"
    assert paused.changed_by == client.user.get_username()
    entry = AuditEntry.objects.filter(action="killswitch.lifted").latest("id")
    assert entry.data["reason"] == "vendor is back"
    assert "switch-banner" not in client.get(back).content.decode()


def test_lifting_needs_a_reason_and_goes_back_only_to_this_site(client_for, paused):
    client = client_for("operator")
    response = client.post(
        reverse("console-switch-lift", args=[paused.pk]),
        {"reason": "  ", "next": "https://evil.example/"},
    )
    assert response["Location"] == reverse("console-home")
    paused.refresh_from_db()
    assert paused.engaged
    body = client.get(reverse("console-run-list")).content.decode()
    assert "Say why the kill switch on workflow lead-intake is lifted." in body


def test_who_may_not_change_switches_sees_no_lift_button_and_cannot_post(client_for, paused):
    client = client_for("reviewer")
    body = client.get(reverse("console-review-queue")).content.decode()
    assert "Kill switch engaged on workflow lead-intake" in body
    assert reverse("console-switch-lift", args=[paused.pk]) not in body
    response = client.post(reverse("console-switch-lift", args=[paused.pk]), {"reason": "x"})
    assert response.status_code == 403
    assert "Not allowed" in response.content.decode()  # the console's 403 page
    assert KillSwitch.objects.get(pk=paused.pk).engaged


def test_unknown_console_pages_get_the_console_404_and_the_api_keeps_its_shape(client_for):
    client = client_for("operator")
    response = client.get("/console/no-such-page/")
    assert response.status_code == 404
    body = response.content.decode()
    assert "Page not found" in body and "/console/no-such-page/" in body
    assert "Back to the console" in body
    api = client.get("/api/v1/no-such-endpoint")
    assert api.status_code == 404 and api.json()["code"] == "not_found"


def test_a_server_error_gets_the_console_500_page():
    response = server_error(RequestFactory().get("/console/"))
    assert response.status_code == 500
    assert "Something went wrong" in response.content.decode()


@pytest.mark.parametrize(
    "ms, text",
    [
        (None, ""),
        (4.25, "4.2 ms"),
        (840, "840 ms"),
        (3_210, "3.2 s"),
        (270_000, "4.5 min"),
        (48_600_000, "13.5 h"),
        (124_931_836, "34.7 h"),
        (400_000_000, "4.6 d"),
    ],
)
def test_durations_read_in_human_units(ms, text):
    assert human_ms(ms) == text
