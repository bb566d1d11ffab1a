"""Fixtures for the JSON API: keys, clients that send them, workflows to
start, runs in each state, webhook sources and signed deliveries."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from django.test import Client

from integrations.apikeys import create_apikey
from integrations.models import WebhookSource
from lib.webhooks import sign
from policies.models import ApiScope
from runs import engine
from tests.conftest import chain, drive

ALL_SCOPES = tuple(ApiScope.values)
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
SECRET = "whsec_" + base64.b64encode(b"a shared secret of 32 bytes long").decode()


@pytest.fixture
def make_key(db):
    """`make_key(scopes=..., workflows=..., expires_at=...)` -> plaintext."""

    def make(scopes=ALL_SCOPES, *, workflows=(), name: str = "test key", **fields: Any) -> str:
        _key, plaintext = create_apikey(name=name, scopes=scopes, workflows=workflows, **fields)
        return plaintext

    return make


def client_for(secret: str | None) -> Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return Client(headers=headers)


@pytest.fixture
def api(make_key) -> Client:
    """A client holding a key with every scope, bound to no workflow."""
    return client_for(make_key())


def post(client: Client, url: str, body: Any = None, **headers: str):
    data = "" if body is None else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", headers=headers)


@pytest.fixture
def simple_workflow(make_workflow):
    """A published one-step workflow (it ends at once) with an entry schema."""
    return make_workflow(
        [END],
        input_schema={
            "type": "object",
            "properties": {"email": {"type": "string"}},
            "required": ["email"],
        },
    ).workflow


@pytest.fixture
def failed_run(make_workflow) -> int:
    """The id of a run that failed at its tool step (retryable from there)."""
    version = make_workflow(
        chain(
            {
                "key": "call",
                "kind": "tool",
                "config": {"tool": "test.fail", "args": {"retryable": False}},
                "max_attempts": 1,
            },
            END,
        )
    )
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    assert drive(run_id).status == "failed"
    return run_id


@pytest.fixture
def make_source(db):
    def make(workflow, *, slug: str = "crm", **fields: Any) -> WebhookSource:
        return WebhookSource.objects.create(slug=slug, workflow=workflow, secret=SECRET, **fields)

    return make


def deliver(
    client: Client,
    slug: str,
    payload: Any,
    *,
    webhook_id: str = "msg_1",
    timestamp: int | None = None,
    secret: str = SECRET,
    signature: str | None = None,
):
    """POST a signed Standard Webhooks delivery."""
    body = json.dumps(payload).encode()
    stamp = int(time.time()) if timestamp is None else timestamp
    signature = signature or sign(secret=secret, webhook_id=webhook_id, timestamp=stamp, body=body)
    return client.post(
        f"/api/v1/webhooks/{slug}",
        data=body,
        content_type="application/json",
        headers={
            "webhook-id": webhook_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature,
        },
    )
