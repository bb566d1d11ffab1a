"""Every console page shares one entry check (login, permission, htmx)."""

from __future__ import annotations

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

pytestmark = pytest.mark.django_db


def _console_patterns(resolver=None, prefix=""):
    for entry in (resolver or get_resolver()).url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from _console_patterns(entry, route)
        elif isinstance(entry, URLPattern) and route.startswith("console/"):
            yield route, entry.callback


def test_every_console_view_goes_through_console_view():
    patterns = list(_console_patterns())
    assert len(patterns) > 10
    unwrapped = [route for route, view in patterns if not hasattr(view, "console_permissions")]
    assert unwrapped == []


def test_an_anonymous_htmx_request_is_sent_to_login_by_the_browser(client):
    page = client.get("/console/review/", headers={"HX-Request": "true"})
    assert page.status_code == 200 and page["HX-Redirect"].startswith("/accounts/login/")
    plain = client.get("/console/review/")
    assert plain.status_code == 302 and plain["Location"].startswith("/accounts/login/")


def test_pages_vary_on_the_htmx_header(admin_client):
    for url in ("/console/review/", "/console/runs/", "/console/dashboard/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        assert "HX-Request" in response["Vary"], url
