"""Idempotency-Key on POST /runs: one run per key, the first answer replayed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from approvals.models import ApprovalRequest
from integrations.apikeys import create_apikey
from integrations.idempotency import purge_idempotency_keys, request_fingerprint
from integrations.models import IdempotencyRecord
from knowledge.models import Event, EventType
from runs.models import Run, RunStatus
from tests.api.conftest import client_for, post
from tests.conftest import race, waiting_for_review

URL = "/api/v1/runs"


def start(client: Client, workflow, key: str, email: str = "a@b.co"):
    body = {"workflow": workflow.slug, "input": {"email": email}}
    return post(client, URL, body, **{"Idempotency-Key": key})


def test_ten_replays_return_the_first_answer_byte_for_byte(api, simple_workflow):
    first = start(api, simple_workflow, "order-1")
    assert first.status_code == 201
    replays = [start(api, simple_workflow, "order-1") for _ in range(10)]
    assert {r.status_code for r in replays} == {201}
    assert {r.content for r in replays} == {first.content}
    assert all(r["Idempotent-Replayed"] == "true" for r in replays)
    assert "Idempotent-Replayed" not in first
    assert Run.objects.count() == 1


def test_the_same_key_with_another_body_is_a_422(api, simple_workflow):
    assert start(api, simple_workflow, "order-1").status_code == 201
    response = start(api, simple_workflow, "order-1", email="other@b.co")
    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Run.objects.count() == 1


def test_keys_belong_to_their_api_key(make_key, simple_workflow):
    one, two = client_for(make_key()), client_for(make_key())
    assert start(one, simple_workflow, "shared").status_code == 201
    assert start(two, simple_workflow, "shared").status_code == 201
    assert Run.objects.count() == 2


def test_without_a_key_every_request_starts_a_run(api, simple_workflow):
    body = {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
    post(api, URL, body)
    post(api, URL, body)
    assert Run.objects.count() == 2


def test_a_request_in_progress_is_a_409_with_retry_after(api, simple_workflow, make_key):
    secret = make_key()
    owner = secret.split("_")[0] + "_" + secret.split("_")[1]
    start(client_for(secret), simple_workflow, "k")  # the record exists; make it busy again
    IdempotencyRecord.objects.filter(owner=owner, key="k").update(
        in_progress=True, locked_until=timezone.now() + timedelta(seconds=30)
    )
    response = start(client_for(secret), simple_workflow, "k")
    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert response.json()["code"] == "idempotency_in_progress"


def test_an_abandoned_claim_is_taken_over(api, simple_workflow):
    IdempotencyRecord.objects.create(
        owner="bk_whoever", key="k", method="POST", path=URL, request_hash="x"
    )  # another owner: untouched
    assert start(api, simple_workflow, "k").status_code == 201
    record = IdempotencyRecord.objects.exclude(owner="bk_whoever").get()
    Run.objects.all().delete()
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        in_progress=True, locked_until=timezone.now() - timedelta(seconds=1)
    )
    assert start(api, simple_workflow, "k").status_code == 201  # the handler died: go again
    assert Run.objects.count() == 1


def test_a_server_error_is_not_stored_and_the_retry_finds_the_run(
    api, simple_workflow, monkeypatch
):
    """A 5xx releases the key; the retry is handled again and, since the run
    was started under a stable key, gets that run (200) instead of a second."""
    import config.api

    original = config.api.api.create_response
    calls = {"n": 0}

    def fail_once(request, data, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("lost the answer")
        return original(request, data, **kwargs)

    monkeypatch.setattr(config.api.api, "create_response", fail_once)
    api.raise_request_exception = False
    assert start(api, simple_workflow, "k").status_code == 500
    monkeypatch.setattr(config.api.api, "create_response", original)
    assert IdempotencyRecord.objects.get().status_code is None  # released, nothing stored
    retry = start(api, simple_workflow, "k")
    assert retry.status_code == 200 and Run.objects.count() == 1
    assert retry.json()["id"] == Run.objects.get().pk


def test_a_full_queue_is_not_stored_so_the_retry_starts_the_run(api, make_workflow):
    workflow = make_workflow(
        [{"key": "done", "kind": "end", "config": {}}], max_active_runs=1
    ).workflow
    blocker = post(api, URL, {"workflow": workflow.slug}).json()["id"]
    refused = post(api, URL, {"workflow": workflow.slug}, **{"Idempotency-Key": "k"})
    assert refused.status_code == 429
    Run.objects.filter(pk=blocker).update(status=RunStatus.SUCCEEDED)
    accepted = post(api, URL, {"workflow": workflow.slug}, **{"Idempotency-Key": "k"})
    assert accepted.status_code == 201


def raw_post(client: Client, url: str, data: str, key: str):
    return client.post(
        url, data=data, content_type="application/json", headers={"Idempotency-Key": key}
    )


def test_the_same_json_spaced_and_ordered_otherwise_is_a_replay(api, simple_workflow):
    slug = simple_workflow.slug
    first = raw_post(api, URL, f'{{"workflow": "{slug}", "input": {{"email": "a@b.co"}}}}', "k")
    assert first.status_code == 201
    for spelling in (
        f'{{"input":{{"email":"a@b.co"}},"workflow":"{slug}"}}',
        f'\n{{ "input" : {{ "email" : "a@b\\u002eco" }} ,\n  "workflow" : "{slug}" }}\n',
    ):
        replay = raw_post(api, URL, spelling, "k")
        assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
        assert replay.content == first.content
    other = raw_post(api, URL, f'{{"input":{{"email":"z@b.co"}},"workflow":"{slug}"}}', "k")
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Run.objects.count() == 1


def test_the_fingerprint_is_of_parsed_parameters():
    def fingerprint(method: str, path: str, body: bytes) -> str:
        return request_fingerprint(method=method, path=path, body=body)

    body = b'{"a": [1, {"c": 2, "d": 3}], "b": "\xc3\xa9"}'
    same = fingerprint("POST", "/x?a=1&b=2", body)
    assert fingerprint("post", "/x?b=2&a=1", b'{"b":"\\u00e9","a":[1,{"d":3,"c":2}]}') == same
    list_reordered = b'{"a": [{"c": 2, "d": 3}, 1], "b": "\xc3\xa9"}'
    assert fingerprint("POST", "/x?a=1&b=2", list_reordered) != same  # a list's order counts
    assert fingerprint("POST", "/x?a=1&b=3", body) != same
    assert fingerprint("PUT", "/x?a=1&b=2", body) != same
    # not JSON: compared as sent
    assert fingerprint("POST", "/x", b"a=1&b=2") != fingerprint("POST", "/x", b"b=2&a=1")
    assert fingerprint("POST", "/x", b"") == fingerprint("POST", "/x", b"  ")


def test_the_same_body_on_another_path_is_another_request(api, simple_workflow):
    runs = [start(api, simple_workflow, f"start-{n}").json()["id"] for n in range(2)]
    first = post(api, f"{URL}/{runs[0]}/cancel", {"reason": "x"}, **{"Idempotency-Key": "c"})
    assert first.status_code == 200
    other = post(api, f"{URL}/{runs[1]}/cancel", {"reason": "x"}, **{"Idempotency-Key": "c"})
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Run.objects.get(pk=runs[1]).status != RunStatus.CANCELLED


def test_a_request_naming_something_missing_releases_the_key(api, simple_workflow):
    missing = post(api, URL, {"workflow": "missing"}, **{"Idempotency-Key": "k"})
    assert missing.status_code == 404
    assert IdempotencyRecord.objects.get().status_code is None  # nothing stored
    corrected = start(api, simple_workflow, "k")
    assert corrected.status_code == 201 and "Idempotent-Replayed" not in corrected
    assert start(api, simple_workflow, "k").content == corrected.content  # now kept
    assert Run.objects.count() == 1


def test_an_input_that_fails_validation_releases_the_key(api, simple_workflow):
    invalid = post(
        api, URL, {"workflow": simple_workflow.slug, "input": {}}, **{"Idempotency-Key": "k"}
    )
    assert invalid.status_code == 422 and invalid.json()["code"] == "invalid_input"
    assert not Run.objects.exists()
    corrected = start(api, simple_workflow, "k")
    assert corrected.status_code == 201 and "Idempotent-Replayed" not in corrected
    assert Run.objects.count() == 1


def test_a_body_the_schema_refuses_does_not_take_the_key(api, simple_workflow):
    refused = post(api, URL, {"workflow": 7}, **{"Idempotency-Key": "k"})
    assert refused.status_code == 422 and refused.json()["code"] == "invalid_request"
    assert start(api, simple_workflow, "k").status_code == 201


def test_an_event_that_fails_validation_releases_the_key(api):
    EventType.objects.create(name="outreach.paused")
    event = {"entity_type": "account", "entity_key": "acme", "type": "no.such.type"}
    url = "/api/v1/knowledge/events"
    unknown = post(api, url, event, **{"Idempotency-Key": "e"})
    assert unknown.json()["code"] == "unknown_event_type"
    event["type"] = "outreach.paused"
    unexplained = post(api, url, event, **{"Idempotency-Key": "e"})
    assert unexplained.json()["code"] == "invalid_event"  # a reason is required
    corrected = post(api, url, {**event, "reason": "asked"}, **{"Idempotency-Key": "e"})
    assert corrected.status_code == 201 and Event.objects.count() == 1


def test_a_key_older_than_a_day_may_be_reused(api, simple_workflow):
    assert start(api, simple_workflow, "k").status_code == 201
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    reused = start(api, simple_workflow, "k", email="new@b.co")
    assert reused.status_code == 201 and "Idempotent-Replayed" not in reused
    assert Run.objects.count() == 2


def test_expired_records_are_purged(api, simple_workflow):
    start(api, simple_workflow, "old")
    start(api, simple_workflow, "new")
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=25)
    )
    assert purge_idempotency_keys() == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]


def test_the_periodic_sweep_purges_expired_records(api, simple_workflow):
    from runs import tasks

    start(api, simple_workflow, "old")
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
    tasks.sweep()
    assert not IdempotencyRecord.objects.exists()


def test_an_invalid_key_header_is_a_422(api, simple_workflow):
    response = start(api, simple_workflow, "x" * 256)
    assert response.status_code == 422 and "Idempotency-Key" in response.json()["fields"]


@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_first_requests_start_one_run(make_workflow):
    workflow = make_workflow(
        [{"key": "done", "kind": "end", "config": {}}], input_schema={"type": "object"}
    ).workflow
    _key, secret = create_apikey(name="race", scopes=["runs:write"])

    def request(_: int):
        response = post(
            client_for(secret), URL, {"workflow": workflow.slug}, **{"Idempotency-Key": "k"}
        )
        return response.status_code, response.content

    results = race(20, request)
    assert not [r for r in results if isinstance(r, Exception)], results
    statuses = sorted(status for status, _ in results)
    assert Run.objects.count() == 1
    assert set(statuses) <= {201, 409} and statuses.count(201) >= 1
    created = {content for status, content in results if status == 201}
    assert len(created) == 1  # the winner's answer, and replays of it byte for byte


def test_other_posts_take_a_key_too(api, make_workflow):
    EventType.objects.create(name="outreach.paused")
    event = {
        "entity_type": "account",
        "entity_key": "acme",
        "type": "outreach.paused",
        "reason": "asked",
    }
    first = post(api, "/api/v1/knowledge/events", event, **{"Idempotency-Key": "e1"})
    again = post(api, "/api/v1/knowledge/events", event, **{"Idempotency-Key": "e1"})
    assert first.status_code == again.status_code == 201 and first.content == again.content
    assert Event.objects.count() == 1

    approval = ApprovalRequest.objects.get(run_id=waiting_for_review(make_workflow)).pk
    url = f"/api/v1/approvals/{approval}/decision"
    decided = post(api, url, {"decision": "approve"}, **{"Idempotency-Key": "d1"})
    retried = post(api, url, {"decision": "approve"}, **{"Idempotency-Key": "d1"})
    assert decided.status_code == retried.status_code == 200  # not "already decided"
    assert post(api, url, {"decision": "approve"}).status_code == 409
