"""Inbound Standard Webhooks: verified, deduplicated, one run per message."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client

from integrations.models import WebhookDelivery
from integrations.webhooks import WebhookRejected, verify
from lib.webhooks import sign
from runs.models import Run, RunStatus
from tests.api.conftest import SECRET, deliver
from tests.conftest import race

OTHER_SECRET = "whsec_" + "b" * 44


@pytest.fixture
def source(make_source, simple_workflow):
    return make_source(simple_workflow, slug="crm")


def test_a_signed_delivery_starts_a_run_of_the_sources_workflow(
    client, source, rung, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        response = deliver(client, "crm", {"email": "lead@acme.io"}, webhook_id="msg_1")
    assert response.status_code == 202
    body = response.json()
    run = Run.objects.get()
    assert body == {"delivery_id": body["delivery_id"], "run_id": run.pk, "duplicate": False}
    assert run.input == {"email": "lead@acme.io"} and run.workflow == source.workflow
    assert run.status == RunStatus.QUEUED and rung == [run.pk]  # queued, not run inline
    delivery = WebhookDelivery.objects.get()
    assert delivery.webhook_id == "msg_1" and delivery.run_id == run.pk


def test_the_input_can_be_taken_from_a_path_in_the_payload(client, source):
    source.input_path = "data.lead"
    source.save()
    response = deliver(
        client, "crm", {"type": "lead.created", "data": {"lead": {"email": "x@y.z"}}}
    )
    assert response.status_code == 202
    assert Run.objects.get().input == {"email": "x@y.z"}
    missing = deliver(client, "crm", {"type": "other"}, webhook_id="msg_2")
    assert missing.status_code == 422 and missing.json()["fields"] == {
        "input": "data.lead must be a JSON object"
    }


def test_a_repeat_is_acknowledged_and_starts_nothing(client, source):
    first = deliver(client, "crm", {"email": "a@b.co"}, webhook_id="msg_1")
    for _ in range(3):
        again = deliver(client, "crm", {"email": "a@b.co"}, webhook_id="msg_1")
        assert again.status_code == 200
        assert again.json() == {**first.json(), "duplicate": True}
    assert Run.objects.count() == 1
    assert WebhookDelivery.objects.get().repeats == 3


def test_a_stale_or_future_timestamp_is_a_400_and_starts_nothing(client, source):
    for skew in (-3600, 3600):
        response = deliver(client, "crm", {"email": "a@b.co"}, timestamp=int(time.time()) + skew)
        assert response.status_code == 400
        assert response.json()["code"] == "stale_timestamp"
    assert not Run.objects.exists() and not WebhookDelivery.objects.exists()


def test_the_tolerance_is_the_sources(source):
    body = b"{}"

    def headers(stamp: int) -> dict[str, str]:
        signature = sign(secret=SECRET, webhook_id="m", timestamp=stamp, body=body)
        return {"webhook-id": "m", "webhook-timestamp": str(stamp), "webhook-signature": signature}

    now = 1_800_000_000.0
    for stamp in (now - 300, now + 300):
        assert verify(source=source, headers=headers(int(stamp)), body=body, now=now) == "m"
    for stamp in (now - 301, now + 301):
        with pytest.raises(WebhookRejected):
            verify(source=source, headers=headers(int(stamp)), body=body, now=now)


def test_a_bad_signature_is_a_400_and_starts_nothing(client, source):
    wrong_secret = deliver(client, "crm", {"email": "a@b.co"}, secret=OTHER_SECRET)
    assert wrong_secret.status_code == 400 and wrong_secret.json()["code"] == "invalid_signature"
    stamp = int(time.time())
    signed = sign(secret=SECRET, webhook_id="msg_1", timestamp=stamp, body=b'{"email": "a@b.co"}')
    tampered = Client().post(
        "/api/v1/webhooks/crm",
        data=b'{"email": "evil@b.co"}',
        content_type="application/json",
        headers={
            "webhook-id": "msg_1",
            "webhook-timestamp": str(stamp),
            "webhook-signature": signed,
        },
    )
    assert tampered.status_code == 400
    garbage = deliver(client, "crm", {"email": "a@b.co"}, signature="v1,bm9wZQ==")
    assert garbage.status_code == 400
    assert not Run.objects.exists() and not WebhookDelivery.objects.exists()


def test_one_valid_signature_among_several_is_enough(client, source):
    body = json.dumps({"email": "a@b.co"}).encode()
    stamp = int(time.time())
    old = sign(secret=OTHER_SECRET, webhook_id="m", timestamp=stamp, body=body)
    new = sign(secret=SECRET, webhook_id="m", timestamp=stamp, body=body)
    response = Client().post(
        "/api/v1/webhooks/crm",
        data=body,
        content_type="application/json",
        headers={
            "webhook-id": "m",
            "webhook-timestamp": str(stamp),
            "webhook-signature": f"v1a,ignored {old} {new}",
        },
    )
    assert response.status_code == 202


def test_missing_headers_an_unknown_source_and_a_disabled_one(client, source):
    response = client.post("/api/v1/webhooks/crm", data=b"{}", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "missing_header"
    assert deliver(client, "nope", {"email": "a@b.co"}).status_code == 404
    source.enabled = False
    source.save()
    assert deliver(client, "crm", {"email": "a@b.co"}).status_code == 404


def test_a_body_that_is_not_json_or_holds_nul_is_a_400(client, source):
    stamp = int(time.time())
    for body in (b"{nope", b'{"email": "a\\u0000b"}'):
        signature = sign(secret=SECRET, webhook_id="m", timestamp=stamp, body=body)
        response = client.post(
            "/api/v1/webhooks/crm",
            data=body,
            content_type="application/json",
            headers={
                "webhook-id": "m",
                "webhook-timestamp": str(stamp),
                "webhook-signature": signature,
            },
        )
        assert response.status_code == 400 and response.json()["code"] == "invalid_body"


def test_a_full_queue_records_nothing_so_the_senders_retry_starts_the_run(
    client, make_workflow, make_source
):
    workflow = make_workflow(
        [{"key": "done", "kind": "end", "config": {}}], max_active_runs=1
    ).workflow
    make_source(workflow, slug="q")
    assert deliver(client, "q", {}, webhook_id="m1").status_code == 202
    refused = deliver(client, "q", {}, webhook_id="m2")
    assert refused.status_code == 429 and refused["Retry-After"]
    assert not WebhookDelivery.objects.filter(webhook_id="m2").exists()
    Run.objects.update(status=RunStatus.SUCCEEDED)
    assert deliver(client, "q", {}, webhook_id="m2").status_code == 202


def test_an_api_key_is_not_needed_and_input_is_still_screened(client, source):
    response = deliver(client, "crm", {"name": "no email"})
    assert response.status_code == 422 and "input.email" in response.json()["fields"]
    assert not WebhookDelivery.objects.exists()


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_the_same_delivery_a_hundred_times_at_once_starts_one_run(make_workflow, make_source):
    workflow = make_workflow([{"key": "done", "kind": "end", "config": {}}]).workflow
    make_source(workflow, slug="crm")
    body = json.dumps({"lead": "acme"}).encode()
    stamp = int(time.time())
    signature = sign(secret=SECRET, webhook_id="msg_42", timestamp=stamp, body=body)
    headers = {
        "webhook-id": "msg_42",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature,
    }

    def send(_: int) -> int:
        response = Client().post(
            "/api/v1/webhooks/crm", data=body, content_type="application/json", headers=headers
        )
        return response.status_code

    statuses = race(100, send)
    assert all(isinstance(s, int) and 200 <= s < 300 for s in statuses), statuses
    assert sorted(statuses).count(202) == 1
    assert Run.objects.count() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.repeats == 99 and delivery.run_id == Run.objects.get().pk
