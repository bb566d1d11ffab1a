"""An operator in a real browser starts a run from a workflow's page with
the form its input schema generates, lands on the run's page, then finds
that run by searching for the account."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, User
from playwright.sync_api import expect

from knowledge import services
from runs.models import Run
from tests.browser.conftest import DOCS

pytestmark = [pytest.mark.django_db(transaction=True)]

SCREENSHOTS = DOCS
SCHEMA = {
    "type": "object",
    "required": ["domain", "seats"],
    "properties": {
        "domain": {"type": "string", "title": "Domain", "description": "The account's domain"},
        "seats": {"type": "integer", "minimum": 1, "title": "Seats"},
        "tier": {"enum": ["gold", "silver"], "title": "Tier"},
        "trial": {"type": "boolean", "title": "On a trial"},
        "contact": {"type": "object", "title": "Contact", "description": "JSON object"},
    },
}


def test_an_operator_starts_a_run_from_the_form_and_finds_it_by_the_account(
    live_server, page, make_workflow
):
    user = User.objects.create_user(username="otto", password="correct horse 42")
    user.groups.add(Group.objects.get(name="operator"))
    make_workflow(
        [{"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}],
        slug="qualify-account",
        input_schema=SCHEMA,
    )
    services.upsert_entity(type="account", key="acme.com", name="Acme Inc")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server.url}/accounts/login/?next=/console/workflows/")
    page.fill("input[name=username]", "otto")
    page.fill("input[name=password]", "correct horse 42")
    page.click("button[type=submit]")
    page.click("#workflow-table a[href='/console/workflows/qualify-account/']")
    page.wait_for_selector("#run-form")
    page.wait_for_load_state()  # htmx (a deferred script) has wired the form

    # Broken JSON in the nested field: its error shows, what was typed stays.
    page.fill("input[name=domain]", "acme.com")
    page.fill("input[name=seats]", "25")
    page.select_option("select[name=tier]", label="gold")
    page.fill("textarea[name=contact]", '{"name": "Dana"')
    page.click("#start-run")
    expect(page.locator("#error-contact")).to_be_visible()
    expect(page.locator("input[name=domain]")).to_have_value("acme.com")
    expect(page.locator("input[name=seats]")).to_have_value("25")
    assert not Run.objects.exists()
    page.screenshot(path=str(SCREENSHOTS / "run-form.png"), full_page=True)

    page.check("input[name=trial]")
    page.fill("textarea[name=contact]", '{"name": "Dana"}')
    page.click("#start-run")
    page.wait_for_selector("#timeline")
    run = Run.objects.get()
    assert page.url == f"{live_server.url}/console/runs/{run.pk}/"
    assert run.input == {
        "domain": "acme.com",
        "seats": 25,
        "tier": "gold",
        "trial": True,
        "contact": {"name": "Dana"},
    }

    page.click("header.top a[href='/console/search/']")
    page.wait_for_selector("#search-form")
    page.wait_for_load_state()
    page.fill("input[name=q]", "https://www.Acme.com/")
    page.click("#search-form button[type=submit]")
    expect(page.locator(f"#search-runs a[href='/console/runs/{run.pk}/']")).to_be_visible()
    expect(page.locator("#search-entities")).to_contain_text("account:acme.com")
    assert "q=https" in page.url  # the address keeps the search
    page.screenshot(path=str(SCREENSHOTS / "search.png"), full_page=True)

    page.click("#search-entities a")
    expect(page.locator("#entity-runs")).to_contain_text(f"#{run.pk}")
