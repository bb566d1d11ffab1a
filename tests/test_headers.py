"""Response headers: a Content-Security-Policy on every page (console, admin,
API docs) that templates keep to without inline scripts or styles, and
`Cache-Control: no-store` on every API answer, errors included."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.test import Client

from integrations.apikeys import create_apikey
from policies.models import ApiScope

ROOT = Path(__file__).resolve().parent.parent
POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "frame-ancestors": "'none'",
    "form-action": "'self'",
}


def directives(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    parts = (part.strip().partition(" ") for part in header.split(";"))
    return {name: value for name, _, value in parts}


# --- Content-Security-Policy ---------------------------------------------------------


# What the policy refuses in markup (a JSON data block is not a script).
INLINE = [
    (r"<script(?![^>]*\bsrc=)(?![^>]*type=[\"']application/json)", "an inline script"),
    (r"<style\b", "a style element"),
    (r"\sstyle=", "a style attribute"),
    (r"\son[a-z]+=", "an event handler attribute"),
    (r"javascript:", "a javascript: URL"),
]


def inline_in(html: str) -> list[str]:
    return [what for pattern, what in INLINE if re.search(pattern, html)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "url",
    [
        "/console/runs/",
        "/console/dashboard/",
        "/console/review/",
        "/console/review/sample/",
        "/console/dead-letters/",
        "/admin/",
        "/admin/runs/run/",
        "/admin/policies/rubric/add/",
    ],
)
def test_console_and_admin_pages_carry_the_policy_and_keep_to_it(client, make_user, url):
    client.force_login(make_user(superuser=True))
    response = client.get(url)
    assert response.status_code == 200
    assert directives(response) == POLICY
    assert inline_in(response.content.decode()) == []  # widgets' markup included


@pytest.mark.django_db
def test_an_htmx_partial_and_the_login_page_carry_it_too(client, make_user):
    assert directives(client.get("/accounts/login/")) == POLICY
    client.force_login(make_user("operator"))
    partial = client.get("/console/runs/", headers={"HX-Request": "true"})
    assert partial.status_code == 200 and directives(partial) == POLICY


def test_the_api_docs_run_under_the_same_policy_from_local_assets(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and directives(page) == POLICY
    html = page.content.decode()
    # Only data and local files: nothing the policy would refuse.
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == [
        "<script type='application/json' id='swagger-settings'>"
    ]
    for asset in re.findall(r"(?:src|href)='([^']+)'", html):
        assert asset.startswith("/api/v1/docs/assets/")
        assert client.get(asset).status_code == 200


def test_templates_hold_nothing_inline_that_the_policy_refuses():
    found = [
        f"{path.relative_to(ROOT)}: {what}"
        for path in sorted((ROOT / "templates").rglob("*.html"))
        for what in inline_in(path.read_text())
    ]
    assert found == []


# --- Cache-Control on the API -----------------------------------------------------------


@pytest.fixture
def api(db) -> Client:
    _key, secret = create_apikey(name="headers", scopes=list(ApiScope.values))
    return Client(headers={"Authorization": f"Bearer {secret}"})


def test_every_api_answer_is_no_store(api, client, make_workflow, settings):
    make_workflow([{"key": "done", "kind": "end", "config": {}}], slug="plain")
    start = {"data": '{"workflow": "plain"}', "content_type": "application/json"}
    answers = {
        "ok": api.get("/api/v1/runs"),
        "created": api.post("/api/v1/runs", **start, headers={"Idempotency-Key": "k"}),
        "replayed": api.post("/api/v1/runs", **start, headers={"Idempotency-Key": "k"}),
        "no key": client.get("/api/v1/runs"),
        "not found": api.get("/api/v1/runs/999"),
        "invalid": api.get("/api/v1/runs?limit=x"),
        "no such path": api.get("/api/v1/no-such-thing"),
        "docs": client.get("/api/v1/docs"),
        "schema": client.get("/api/v1/openapi.json"),
    }
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10
    answers["too large"] = api.post("/api/v1/runs", **start)
    statuses = {name: response.status_code for name, response in answers.items()}
    assert statuses == {
        "ok": 200,
        "created": 201,
        "replayed": 201,
        "no key": 401,
        "not found": 404,
        "invalid": 422,
        "no such path": 404,
        "docs": 200,
        "schema": 200,
        "too large": 413,
    }
    assert {name: r.get("Cache-Control") for name, r in answers.items()} == {
        name: "no-store" for name in answers
    }


def test_a_server_error_in_the_api_is_no_store_too(api, monkeypatch):
    import integrations.kit

    def broken(**_):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(integrations.kit, "authenticate_apikey", broken)
    api.raise_request_exception = False
    response = api.get("/api/v1/runs")
    assert response.status_code == 500 and response["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_pages_outside_the_api_keep_their_own_caching(client, make_user):
    client.force_login(make_user("operator"))
    assert client.get("/console/runs/").get("Cache-Control") != "no-store"
