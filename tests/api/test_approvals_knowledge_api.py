"""The approvals and knowledge routers, and the metrics endpoint."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from approvals.models import ApprovalRequest, ApprovalStatus
from knowledge.models import Entity, Event, EventType
from runs.models import Run, RunStatus
from tests.api.conftest import post
from tests.conftest import drive, waiting_for_review


@pytest.fixture
def pending(make_workflow) -> list[int]:
    """Ids of two pending approval requests, oldest first."""
    runs = [waiting_for_review(make_workflow) for _ in range(2)]
    return [ApprovalRequest.objects.get(run_id=run_id).pk for run_id in runs]


def decide(api, approval_id: int, **body):
    return post(api, f"/api/v1/approvals/{approval_id}/decision", body)


def test_the_queue_lists_pending_requests_oldest_first(api, pending):
    page = api.get("/api/v1/approvals").json()
    assert [a["id"] for a in page["items"]] == pending and page["count"] == 2
    decide(api, pending[0], decision="approve")
    assert [a["id"] for a in api.get("/api/v1/approvals").json()["items"]] == pending[1:]


def test_approve_wakes_the_run(api, pending):
    response = decide(api, pending[0], decision="approve")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "approved" and body["decided_by"].startswith("key:bk_")
    run = Run.objects.get(pk=body["run_id"])
    assert run.status == RunStatus.QUEUED
    assert drive(run.pk).status == RunStatus.SUCCEEDED


def test_edit_approves_with_the_edited_draft(api, pending):
    response = decide(api, pending[0], decision="edit", edited_draft="a better draft")
    assert response.status_code == 200
    request = ApprovalRequest.objects.get(pk=pending[0])
    assert request.status == ApprovalStatus.APPROVED and request.edited_draft == "a better draft"


def test_reject_needs_a_reason_and_edit_needs_a_draft(api, pending):
    response = decide(api, pending[0], decision="reject")
    assert response.status_code == 422 and set(response.json()["fields"]) == {"reason"}
    response = decide(api, pending[0], decision="edit")
    assert response.status_code == 422 and set(response.json()["fields"]) == {"edited_draft"}
    response = decide(api, pending[0], decision="approve", edited_draft={"x": 1})
    assert response.status_code == 422 and set(response.json()["fields"]) == {"edited_draft"}
    response = decide(api, pending[0], decision="maybe")
    assert response.status_code == 422 and "decision" in response.json()["fields"]
    assert ApprovalRequest.objects.get(pk=pending[0]).status == ApprovalStatus.PENDING

    rejected = decide(api, pending[0], decision="reject", reason="off brand")
    assert rejected.status_code == 200 and rejected.json()["decision_reason"] == "off brand"


def test_a_second_decision_is_a_409(api, pending):
    assert decide(api, pending[0], decision="approve").status_code == 200
    again = decide(api, pending[0], decision="reject", reason="too late")
    assert again.status_code == 409 and again.json()["code"] == "already_decided"
    assert decide(api, 999999, decision="approve").status_code == 404


@pytest.fixture
def paused_type(db) -> EventType:
    return EventType.objects.create(
        name="outreach.paused",
        payload_schema={
            "type": "object",
            "required": ["until"],
            "properties": {"until": {"type": "string", "format": "date"}},
        },
    )


def pause(api, **overrides):
    body = {
        "entity_type": "account",
        "entity_key": "acme",
        "entity_name": "Acme",
        "type": "outreach.paused",
        "payload": {"until": "2025-07-01"},
        "reason": "the founder asked",
        **overrides,
    }
    return post(api, "/api/v1/knowledge/events", body)


def test_it_records_an_event_with_the_key_as_actor(api, paused_type):
    response = pause(api)
    assert response.status_code == 201, response.content
    event = response.json()
    assert event["type"] == "outreach.paused" and event["entity_key"] == "acme"
    assert event["actor"].startswith("key:bk_") and event["superseded_by_id"] is None
    assert Entity.objects.get().name == "Acme"


def test_an_invalid_event_is_a_422_naming_the_field_and_writes_nothing(api, paused_type):
    response = pause(api, payload={"until": "soon"})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_payload"
    assert list(response.json()["fields"]) == ["payload.until"]
    response = pause(api, reason=" ")
    assert response.status_code == 422 and list(response.json()["fields"]) == ["reason"]
    response = pause(api, type="no.such")
    assert response.status_code == 422 and response.json()["code"] == "unknown_event_type"
    assert not Event.objects.exists() and not Entity.objects.exists()


def test_an_event_is_corrected_once(api, paused_type):
    event_id = pause(api).json()["id"]
    url = f"/api/v1/knowledge/events/{event_id}/supersede"
    fixed = post(api, url, {"payload": {"until": "2025-08-01"}, "reason": "typo"})
    assert fixed.status_code == 201 and fixed.json()["supersedes_id"] == event_id
    again = post(api, url, {"payload": {"until": "2025-09-01"}, "reason": "again"})
    assert again.status_code == 409 and again.json()["code"] == "already_superseded"
    active = api.get("/api/v1/knowledge/events", {"active": "true"}).json()["items"]
    assert [e["id"] for e in active] == [fixed.json()["id"]]


def test_it_writes_and_lists_entities(api):
    response = post(
        api,
        "/api/v1/knowledge/entities",
        {"type": "account", "key": "acme", "attributes": {"plan": "pro"}},
    )
    assert response.status_code == 200 and response.json()["attributes"] == {"plan": "pro"}
    post(
        api,
        "/api/v1/knowledge/entities",
        {"type": "account", "key": "acme", "attributes": {"seats": 3}},
    )
    post(api, "/api/v1/knowledge/entities", {"type": "person", "key": "ana"})
    page = api.get("/api/v1/knowledge/entities", {"type": "account"}).json()
    assert page["count"] == 1 and page["items"][0]["attributes"] == {"plan": "pro", "seats": 3}


def test_metrics_per_workflow_version(api, simple_workflow):
    for n in range(3):
        run_id = post(
            api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": f"{n}@x.io"}}
        ).json()["id"]
        drive(run_id)
    response = api.get("/api/v1/metrics", {"workflow": simple_workflow.slug})
    assert response.status_code == 200
    [row] = response.json()["versions"]
    assert row["workflow"] == simple_workflow.slug and row["version"] == 1
    assert row["runs"] == 3 and row["succeeded"] == 3 and row["success_rate"] == 1.0
    assert set(row) >= {"cost_per_success", "latency_p95_ms", "cache_hit_rate", "dedup_saved_usd"}
    until = timezone.now() - timedelta(days=1)
    assert api.get("/api/v1/metrics", {"until": until.isoformat()}).json()["versions"] == []
    backwards = api.get(
        "/api/v1/metrics", {"since": timezone.now().isoformat(), "until": until.isoformat()}
    )
    assert backwards.status_code == 422 and "since" in backwards.json()["fields"]
    assert api.get("/api/v1/metrics", {"version": 1}).status_code == 422
