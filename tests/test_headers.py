"""Response headers: `Cache-Control: no-store` on every API answer, errors
included."""

from __future__ import annotations

import pytest
from django.test import Client

from integrations.apikeys import create_apikey
from policies.models import ApiScope

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
