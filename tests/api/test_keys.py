"""API keys: scopes per endpoint, workflow bindings, revocation and
expiry, and the secret that is never stored nor logged."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from config.api import api as ninja_api
from integrations.apikeys import authenticate_apikey, create_apikey, revoke_apikey
from knowledge.models import EventType
from knowledge.services import record_event, upsert_entity
from policies.models import ApiKey, ApiScope, AuditEntry
from runs.models import Run
from tests.api.conftest import client_for, post
from tests.conftest import waiting_for_review

# Every operation that takes a key, with the one scope it needs.
ENDPOINTS = [
    ("post", "/api/v1/runs", ApiScope.RUNS_WRITE),
    ("get", "/api/v1/runs", ApiScope.RUNS_READ),
    ("get", "/api/v1/runs/{run}", ApiScope.RUNS_READ),
    ("post", "/api/v1/runs/{run}/cancel", ApiScope.RUNS_WRITE),
    ("post", "/api/v1/runs/{run}/retry", ApiScope.RUNS_WRITE),
    ("get", "/api/v1/metrics", ApiScope.RUNS_READ),
    ("get", "/api/v1/webhook-sources", ApiScope.WEBHOOKS),
    ("get", "/api/v1/approvals", ApiScope.APPROVALS_WRITE),
    ("post", "/api/v1/approvals/{approval}/decision", ApiScope.APPROVALS_WRITE),
    ("post", "/api/v1/knowledge/entities", ApiScope.KNOWLEDGE_WRITE),
    ("get", "/api/v1/knowledge/entities", ApiScope.KNOWLEDGE_WRITE),
    ("post", "/api/v1/knowledge/entities/{entity}/aliases", ApiScope.KNOWLEDGE_WRITE),
    ("delete", "/api/v1/knowledge/entities/{entity}/aliases", ApiScope.KNOWLEDGE_WRITE),
    ("post", "/api/v1/knowledge/events", ApiScope.KNOWLEDGE_WRITE),
    ("get", "/api/v1/knowledge/events", ApiScope.KNOWLEDGE_WRITE),
    ("post", "/api/v1/knowledge/events/{event}/supersede", ApiScope.KNOWLEDGE_WRITE),
    ("post", "/api/v1/rollouts", ApiScope.ROLLOUTS_WRITE),
    ("get", "/api/v1/rollouts", ApiScope.RUNS_READ),
    ("get", "/api/v1/rollouts/{rollout}", ApiScope.RUNS_READ),
    ("post", "/api/v1/rollouts/{rollout}/promote", ApiScope.ROLLOUTS_WRITE),
    ("post", "/api/v1/rollouts/{rollout}/rollback", ApiScope.ROLLOUTS_WRITE),
    ("get", "/api/v1/lanes/proposals", ApiScope.RUNS_READ),
    ("post", "/api/v1/lanes/proposals/{proposal}/accept", ApiScope.LANES_WRITE),
    ("post", "/api/v1/lanes/proposals/{proposal}/dismiss", ApiScope.LANES_WRITE),
    ("post", "/api/v1/experiments", ApiScope.RUNS_WRITE),
    ("get", "/api/v1/experiments/{experiment}", ApiScope.RUNS_READ),
    ("post", "/api/v1/shadows", ApiScope.RUNS_WRITE),
    ("post", "/api/v1/shadows/{rollout}/stop", ApiScope.RUNS_WRITE),
]
BODIES = {
    "/api/v1/runs": {"workflow": "nope"},
    "/api/v1/approvals/{approval}/decision": {"decision": "approve"},
    "/api/v1/knowledge/entities": {"type": "account", "key": "acme"},
    "/api/v1/knowledge/entities/{entity}/aliases": {"key": "acme.example"},
    "/api/v1/knowledge/events": {
        "entity_type": "account",
        "entity_key": "acme",
        "type": "outreach.paused",
        "reason": "asked",
    },
    "/api/v1/knowledge/events/{event}/supersede": {"payload": {}, "reason": "typo"},
    "/api/v1/rollouts": {"workflow": "nope", "version": 1, "share_pct": 10},
    "/api/v1/rollouts/{rollout}/promote": {"reason": "fine"},
    "/api/v1/rollouts/{rollout}/rollback": {"reason": "not fine"},
    "/api/v1/lanes/proposals/{proposal}/dismiss": {"note": "not yet"},
    "/api/v1/experiments": {"workflow": "nope", "eval_set": "nope"},
    "/api/v1/shadows": {"workflow": "nope"},
}


def test_the_matrix_lists_every_operation():
    paths = ninja_api.get_openapi_schema(path_prefix="/api/v1/")["paths"]
    declared = {
        (method, re.sub(r"\{[a-z_]+_id\}", "{}", path))
        for path, operations in paths.items()
        for method in operations
        if not path.startswith("/api/v1/webhooks/")  # signed, not keyed
    }
    listed = {(method, re.sub(r"\{[a-z]+\}", "{}", path)) for method, path, _ in ENDPOINTS}
    assert declared == listed


@pytest.fixture
def targets(make_workflow):
    run_id = waiting_for_review(make_workflow)
    EventType.objects.create(name="outreach.paused")
    event = record_event(
        entity=upsert_entity(type="account", key="acme"),
        type="outreach.paused",
        payload={},
        reason="asked",
        actor_label="ops",
    )
    return {
        "run": run_id,
        "approval": ApprovalRequest.objects.get(run_id=run_id).pk,
        "event": event.pk,
        "entity": event.entity_id,
        "rollout": 999999,  # none: a 404 past the scope check
        "proposal": 999999,
        "experiment": 999999,
    }


@pytest.mark.parametrize("scope", ApiScope.values)
def test_each_endpoint_needs_its_scope(scope, make_key, targets):
    client = client_for(make_key([scope]))
    for method, path, needed in ENDPOINTS:
        url = path.format(**targets)
        if method == "get":
            response = client.get(url)
        elif method == "delete":
            response = client.delete(url + "?key=acme.example")
        else:
            response = post(client, url, BODIES.get(path))
        if scope == needed:
            assert response.status_code not in (401, 403), (scope, method, url, response.content)
        else:
            assert response.status_code == 403, (scope, method, url, response.content)
            assert response.json()["code"] == "missing_scope"


def test_a_key_bound_to_a_workflow_cannot_see_or_touch_another(
    make_key, make_workflow, make_source
):
    run_a = waiting_for_review(make_workflow)
    run_b = waiting_for_review(make_workflow)
    workflow_a = Run.objects.get(pk=run_a).workflow
    workflow_b = Run.objects.get(pk=run_b).workflow
    make_source(workflow_a, slug="for-a")
    make_source(workflow_b, slug="for-b")
    approval_a = ApprovalRequest.objects.get(run_id=run_a).pk
    approval_b = ApprovalRequest.objects.get(run_id=run_b).pk
    bound = client_for(make_key(workflows=[workflow_a]))

    assert [r["id"] for r in bound.get("/api/v1/runs").json()["items"]] == [run_a]
    assert bound.get(f"/api/v1/runs/{run_a}").status_code == 200
    for response in (
        bound.get(f"/api/v1/runs/{run_b}"),
        post(bound, f"/api/v1/runs/{run_b}/cancel"),
        post(bound, f"/api/v1/runs/{run_b}/retry"),
        post(bound, f"/api/v1/approvals/{approval_b}/decision", {"decision": "approve"}),
        post(bound, "/api/v1/runs", {"workflow": workflow_b.slug}),
    ):
        assert response.status_code == 404, response.content
        assert response.json()["code"] == "not_found"
    assert ApprovalRequest.objects.get(pk=approval_b).status == ApprovalStatus.PENDING
    assert Run.objects.get(pk=run_b).status == "waiting"
    assert [a["id"] for a in bound.get("/api/v1/approvals").json()["items"]] == [approval_a]
    assert [s["slug"] for s in bound.get("/api/v1/webhook-sources").json()] == ["for-a"]
    metrics = bound.get("/api/v1/metrics").json()["versions"]
    assert {m["workflow"] for m in metrics} == {workflow_a.slug}
    assert bound.get("/api/v1/metrics", {"workflow": workflow_b.slug}).status_code == 404

    decided = post(bound, f"/api/v1/approvals/{approval_a}/decision", {"decision": "approve"})
    assert decided.status_code == 200
    assert post(bound, "/api/v1/runs", {"workflow": workflow_a.slug}).status_code == 201


def test_revoked_and_expired_keys_are_refused(make_key, simple_workflow):
    key, secret = create_apikey(name="k", scopes=["runs:read"])
    assert client_for(secret).get("/api/v1/runs").status_code == 200
    assert revoke_apikey(key=key) is True
    assert revoke_apikey(key=key) is False  # once
    assert client_for(secret).get("/api/v1/runs").status_code == 401

    expired = make_key(["runs:read"], expires_at=timezone.now() - timedelta(seconds=1))
    response = client_for(expired).get("/api/v1/runs")
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    later = make_key(["runs:read"], expires_at=timezone.now() + timedelta(days=1))
    assert client_for(later).get("/api/v1/runs").status_code == 200


def test_a_key_is_shown_once_and_stored_as_a_hash(db):
    key, secret = create_apikey(name="crm", scopes=["runs:read", "runs:write"])
    prefix, rest = secret[:11], secret[12:]
    assert re.fullmatch(r"bk_[a-z0-9]{8}", prefix) and secret[11] == "_" and len(rest) >= 32
    assert key.prefix == prefix
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert authenticate_apikey(secret=secret).pk == key.pk
    assert authenticate_apikey(secret=secret[:-1] + "x") is None
    with pytest.raises(ValueError):
        create_apikey(name="bad", scopes=["runs:everything"])


def test_last_use_is_recorded_at_most_once_a_minute(make_key):
    secret = make_key(["runs:read"])
    client = client_for(secret)
    client.get("/api/v1/runs")
    first = ApiKey.objects.get().last_used_at
    assert first is not None
    client.get("/api/v1/runs")
    assert ApiKey.objects.get().last_used_at == first
    ApiKey.objects.update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/v1/runs")
    assert ApiKey.objects.get().last_used_at > first - timedelta(minutes=2)


def test_key_events_are_audited(db):
    user = User.objects.create_user("ops")
    key, _secret = create_apikey(name="crm", scopes=["runs:read"], by=user)
    revoke_apikey(key=key, by=user)
    entries = list(AuditEntry.objects.filter(target_id=str(key.pk)).values_list("action", "actor"))
    assert entries == [("apikey.created", "user:ops"), ("apikey.revoked", "user:ops")]


def test_no_plaintext_key_in_a_database_dump_or_the_logs(make_key, simple_workflow, caplog, client):
    caplog.set_level(logging.DEBUG)
    secret = make_key()
    user_client = client_for(secret)
    body = {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
    post(user_client, "/api/v1/runs", body, **{"Idempotency-Key": "k1"})
    post(user_client, "/api/v1/runs", body, **{"Idempotency-Key": "k1"})
    user_client.get("/api/v1/runs")
    client.get("/api/v1/runs", headers={"Authorization": f"Token {secret}"})  # wrong scheme
    client.get("/api/v1/runs", headers={"Authorization": f"Bearer {secret}x"})  # wrong key

    dump = io.StringIO()
    call_command("dumpdata", stdout=dump)
    text = dump.getvalue()
    assert secret[:11] in text  # the prefix is there, to show the dump holds the key row
    assert secret not in text and secret[12:] not in text
    assert secret[12:] not in caplog.text


@pytest.fixture
def admin_client(client, db):
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_admin_creates_a_key_shows_it_once_and_revokes_it(admin_client, simple_workflow):
    response = admin_client.post(
        reverse("admin:policies_apikey_add"),
        {
            "name": "crm sync",
            "scopes": ["runs:read", "runs:write"],
            "workflows": [simple_workflow.pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request)] or [
        m.message for m in response.context["messages"]
    ]
    key = ApiKey.objects.get()
    secrets_shown = re.findall(r"bk_[a-z0-9]{8}_[A-Za-z0-9_-]{32,}", response.content.decode())
    assert len(secrets_shown) == 1, shown
    assert hashlib.sha256(secrets_shown[0].encode()).hexdigest() == key.key_hash
    assert sorted(key.scopes) == ["runs:read", "runs:write"]
    assert list(key.workflows.all()) == [simple_workflow]

    again = admin_client.get(reverse("admin:policies_apikey_change", args=[key.pk]))
    assert secrets_shown[0] not in again.content.decode()  # never shown again
    listing = admin_client.get(reverse("admin:policies_apikey_changelist")).content.decode()
    assert key.prefix in listing and secrets_shown[0] not in listing

    admin_client.post(
        reverse("admin:policies_apikey_changelist"),
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    actions = list(AuditEntry.objects.values_list("action", flat=True))
    assert actions[-2:] == ["apikey.created", "apikey.revoked"]
    assert client_for(secrets_shown[0]).get("/api/v1/runs").status_code == 401


def test_the_webhook_admin_pages_render(admin_client, make_source, simple_workflow, client):
    source = make_source(simple_workflow, slug="crm")
    add = admin_client.get(reverse("admin:integrations_webhooksource_add")).content.decode()
    assert "whsec_" in add  # a fresh secret is suggested
    for url in (
        reverse("admin:integrations_webhooksource_changelist"),
        reverse("admin:integrations_webhooksource_change", args=[source.pk]),
        reverse("admin:integrations_webhookdelivery_changelist"),
    ):
        assert admin_client.get(url).status_code == 200, url
    bad = admin_client.post(
        reverse("admin:integrations_webhooksource_add"),
        {"slug": "x", "workflow": simple_workflow.pk, "secret": "plain", "tolerance_s": 300},
    )
    assert "whsec_" in bad.content.decode() and bad.status_code == 200
