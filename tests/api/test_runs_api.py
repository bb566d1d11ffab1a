"""The runs API: start, list, read, cancel, retry; the error shape."""

from __future__ import annotations

from decimal import Decimal

import pytest

from approvals.models import ApprovalRequest
from policies.models import AuditEntry
from runs.models import Run, RunStatus, StepRun
from tests.api.conftest import client_for, post
from tests.conftest import chain, drive, waiting_for_review


def test_it_starts_a_run_and_reads_it_back(
    api, simple_workflow, rung, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        body = {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
        response = post(api, "/api/v1/runs", body)
    assert response.status_code == 201, response.content
    run = response.json()
    assert run["workflow"] == simple_workflow.slug and run["status"] == "queued"
    assert rung == [run["id"]]  # queued for a worker, not executed in the request
    drive(run["id"])

    detail = api.get(f"/api/v1/runs/{run['id']}").json()
    assert detail["status"] == "succeeded" and detail["outcome"] == "done"
    assert [s["step_key"] for s in detail["steps"]] == ["done"]
    assert detail["input"] == {"email": "[EMAIL]"}  # an API key sees redacted records


def test_it_lists_runs_with_filters_and_pages(api, simple_workflow, make_workflow):
    other = make_workflow([{"key": "done", "kind": "end", "config": {"outcome": "x"}}]).workflow
    for n in range(3):
        post(
            api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": f"{n}@x.io"}}
        )
    post(api, "/api/v1/runs", {"workflow": other.slug})
    first = Run.objects.filter(workflow=simple_workflow).order_by("id").first()
    drive(first.pk)

    page = api.get("/api/v1/runs", {"workflow": simple_workflow.slug, "limit": 2}).json()
    assert page["count"] == 3 and len(page["items"]) == 2
    assert page["items"][0]["id"] > page["items"][1]["id"]  # newest first
    assert api.get("/api/v1/runs", {"status": "succeeded"}).json()["count"] == 1
    assert api.get("/api/v1/runs", {"outcome": "done"}).json()["items"][0]["id"] == first.pk
    assert (
        api.get("/api/v1/runs", {"workflow": simple_workflow.slug, "version": 2}).json()["count"]
        == 0
    )
    later = api.get("/api/v1/runs", {"created_after": "2999-01-01T00:00:00Z"}).json()
    assert later["count"] == 0
    bad = api.get("/api/v1/runs", {"status": "sleeping"})
    assert bad.status_code == 422 and "status" in bad.json()["fields"]


def test_an_invalid_body_is_a_422_naming_the_field(api, simple_workflow):
    response = post(api, "/api/v1/runs", {"input": {}})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "invalid_request" and "workflow" in body["fields"]

    response = post(api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"name": "x"}})
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_input"
    assert "input.email" in response.json()["fields"]
    assert Run.objects.count() == 0


def test_nul_bytes_are_refused_not_stored(api, simple_workflow):
    response = post(
        api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": "a\x00"}}
    )
    assert response.status_code == 422 and "input" in response.json()["fields"]
    response = api.get("/api/v1/runs", {"outcome": "x\x00y"})
    assert response.status_code == 422 and response.json()["fields"]


def test_a_body_that_is_not_json_is_a_400(api):
    response = api.post("/api/v1/runs", data="{nope", content_type="application/json")
    assert response.status_code == 400 and response.json()["code"] == "bad_request"
    response = api.post("/api/v1/runs", data='{"workflow": NaN}', content_type="application/json")
    assert response.status_code == 400


def test_an_unknown_run_or_workflow_is_a_404_in_the_error_shape(api):
    response = api.get("/api/v1/runs/999999")
    assert response.status_code == 404
    assert response.json() == {"error": "no run 999999", "code": "not_found"}
    response = post(api, "/api/v1/runs", {"workflow": "nope"})
    assert response.status_code == 404 and response.json()["code"] == "not_found"


def test_an_unknown_path_and_a_wrong_method_answer_in_the_error_shape(api, client):
    for response in (api.get("/api/v1/no-such-thing"), client.post("/api/v1/nothing/here")):
        assert response.status_code == 404
        assert response.json() == {"error": "no such endpoint", "code": "not_found"}
    wrong = api.get("/api/v1/runs/1/cancel")
    assert wrong.status_code == 405 and wrong["Allow"] == "POST"
    assert wrong.json() == {"error": "GET is not allowed here", "code": "method_not_allowed"}


def test_a_full_queue_is_a_429_with_retry_after(api, make_workflow, settings):
    settings.BOSUN_QUEUE_FULL_RETRY_AFTER_S = 7.5
    workflow = make_workflow(
        [{"key": "done", "kind": "end", "config": {}}], max_active_runs=1
    ).workflow
    assert post(api, "/api/v1/runs", {"workflow": workflow.slug}).status_code == 201
    response = post(api, "/api/v1/runs", {"workflow": workflow.slug})
    assert response.status_code == 429
    assert response["Retry-After"] == "8"
    assert response.json()["code"] == "queue_full"


def test_it_cancels_a_run_once(api, simple_workflow):
    run_id = post(
        api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
    ).json()["id"]
    response = post(api, f"/api/v1/runs/{run_id}/cancel", {"reason": "wrong lead"})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    again = post(api, f"/api/v1/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["code"] == "invalid_state"


def test_a_cancel_without_a_body_works(api, simple_workflow):
    run_id = post(
        api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
    ).json()["id"]
    assert api.generic("POST", f"/api/v1/runs/{run_id}/cancel").status_code == 200  # empty body


def test_it_retries_a_failed_run_from_its_failed_step(api, failed_run):
    response = post(api, f"/api/v1/runs/{failed_run}/retry")
    assert response.status_code == 200 and response.json()["status"] == "queued"
    assert Run.objects.get(pk=failed_run).status == RunStatus.QUEUED
    again = post(api, f"/api/v1/runs/{failed_run}/retry")
    assert again.status_code == 409


def test_a_running_run_cannot_be_retried(api, simple_workflow):
    run_id = post(
        api, "/api/v1/runs", {"workflow": simple_workflow.slug, "input": {"email": "a@b.co"}}
    ).json()["id"]
    assert post(api, f"/api/v1/runs/{run_id}/retry").status_code == 409
    assert not StepRun.objects.filter(run_id=run_id).exists()


def test_no_key_is_a_401_and_a_browser_session_is_not_enough(client, make_user, simple_workflow):
    response = client.get("/api/v1/runs")
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    client.force_login(make_user("operator"))
    assert client.get("/api/v1/runs").status_code == 401
    assert client_for("bk_notakey_x").get("/api/v1/runs").status_code == 401


@pytest.mark.django_db
def test_the_schema_and_docs_are_served_locally(client):
    schema = client.get("/api/v1/openapi.json")
    assert schema.status_code == 200 and "/api/v1/runs" in schema.json()["paths"]
    docs = client.get("/api/v1/docs")
    assert docs.status_code == 200 and b"cdn" not in docs.content.lower()
    assert client.get("/api/v1/docs/assets/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/v1/docs/assets/settings.py").status_code == 404


def test_a_decision_through_the_api_is_audited_as_the_key(api, make_workflow):
    run_id = waiting_for_review(make_workflow)
    approval = ApprovalRequest.objects.get(run_id=run_id)
    response = post(api, f"/api/v1/approvals/{approval.pk}/decision", {"decision": "approve"})
    assert response.status_code == 200 and response.json()["status"] == "approved"
    entry = AuditEntry.objects.get(action="approval.approved")
    assert entry.actor.startswith("key:bk_")


def test_cancels_and_retries_through_the_api_are_audited_as_the_key(api, failed_run):
    assert post(api, f"/api/v1/runs/{failed_run}/retry").status_code == 200
    assert post(api, f"/api/v1/runs/{failed_run}/cancel", {"reason": "enough"}).status_code == 200
    entries = AuditEntry.objects.filter(target_id=str(failed_run), action__startswith="run.")
    assert [(e.action, e.actor[:7]) for e in entries] == [
        ("run.retried", "key:bk_"),
        ("run.cancelled", "key:bk_"),
    ]


def test_a_run_reads_back_its_model_and_vendor_spend_and_credits(api, make_workflow):
    enrich = {"key": "enrich", "kind": "tool", "config": {"tool": "enrich.company"}}
    enrich["config"]["args"] = {"domain": "acme.io"}
    version = make_workflow(chain(enrich, {"key": "done", "kind": "end"}))
    run = post(api, "/api/v1/runs", {"workflow": version.workflow.slug}).json()
    drive(run["id"])
    detail = api.get(f"/api/v1/runs/{run['id']}").json()
    assert detail["credits"] == {"enrichco": 5}
    money = [Decimal(detail[name]) for name in ("cost_usd", "model_usd", "vendor_usd")]
    assert money == [Decimal("0.10"), 0, Decimal("0.10")]
    [step] = [s for s in detail["steps"] if s["step_key"] == "enrich"]
    assert (step["vendor"], step["credits"], step["credits_saved"]) == ("enrichco", 5, 0)
    versions = api.get("/api/v1/metrics", {"workflow": version.workflow.slug}).json()["versions"]
    assert versions[0]["credits"] == {"enrichco": 5}
    assert Decimal(versions[0]["vendor_per_success"]) == Decimal("0.10")
