"""Workflow pages: the list, a workflow's versions and runs, a run started
from a form generated from the input schema (or prefilled from a recorded
run), and Publish; with and without htmx, and refused without permission."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from approvals.models import ApprovalRequest
from runs import engine
from runs.models import Run, Step, ToolCallRecord, Workflow, WorkflowVersion
from tests.conftest import drive
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}
SCHEMA = {
    "type": "object",
    "required": ["domain", "seats"],
    "properties": {
        "domain": {"type": "string", "title": "Domain", "description": "The account's domain"},
        "seats": {"type": "integer", "minimum": 1},
        "score": {"type": "number"},
        "vip": {"type": "boolean"},
        "tier": {"enum": ["gold", "silver"]},
        "contact": {"type": "object"},
    },
}
END = [{"key": "done", "kind": "end", "config": {"outcome": "done", "success": True}}]


@pytest.fixture
def workflow(make_workflow) -> Workflow:
    version = make_workflow(END, slug="leads", input_schema=SCHEMA, sensitive_fields=["contact"])
    return version.workflow


def page_url(workflow: Workflow) -> str:
    return reverse("console-workflow-detail", args=[workflow.slug])


def start_url(workflow: Workflow) -> str:
    return reverse("console-workflow-start", args=[workflow.slug])


def test_the_workflow_list_links_each_workflow_with_its_latest_version(client_for, workflow):
    page = client_for("viewer").get(reverse("console-workflow-list"))
    assert page.status_code == 200
    body = page.content.decode()
    assert 'href="/console/workflows/leads/"' in body and "v1" in body


def test_the_form_has_a_field_per_property_of_the_schema_with_required_marks(client_for, workflow):
    page = client_for("operator").get(page_url(workflow))
    assert page.status_code == 200
    form = page.context["form"]
    # Required first as listed, then the rest by name (jsonb keeps no key order).
    assert list(form.fields) == ["domain", "seats", "contact", "score", "tier", "vip"]
    assert form.fields["domain"].required and form.fields["seats"].required
    assert not form.fields["score"].required
    body = page.content.decode()
    assert 'name="seats"' in body and 'type="number"' in body
    assert 'type="checkbox"' in body and '<select name="tier"' in body
    assert '<textarea name="contact"' in body  # a nested object: JSON
    assert body.count('title="required"') == 2
    assert "The account&#x27;s domain" in body


def test_starting_a_run_calls_the_engine_and_goes_to_the_run_page(client_for, workflow):
    client = client_for("operator")
    answer = client.post(
        start_url(workflow),
        {
            "token": "a" * 32,
            "domain": "acme.com",
            "seats": "12",
            "score": "",
            "tier": '"gold"',
            "contact": '{"name": "Dana"}',
        },
    )
    run = Run.objects.get()
    assert answer.status_code == 302 and answer["Location"] == f"/console/runs/{run.pk}/"
    assert run.input == {
        "domain": "acme.com",
        "seats": 12,
        "tier": "gold",
        "contact": {"name": "Dana"},
    }
    assert run.version == workflow.current_version and run.status == "queued"


def test_an_htmx_start_redirects_the_whole_page_to_the_run(client_for, workflow):
    answer = client_for("operator").post(
        start_url(workflow), {"domain": "acme.com", "seats": "1"}, **HX
    )
    run = Run.objects.get()
    assert answer.status_code == 200 and answer["HX-Redirect"] == f"/console/runs/{run.pk}/"


def test_a_form_posted_twice_starts_one_run(client_for, workflow):
    client = client_for("operator")
    data = {"token": "b" * 32, "domain": "acme.com", "seats": "1"}
    first = client.post(start_url(workflow), data)
    second = client.post(start_url(workflow), data)
    assert Run.objects.count() == 1 and first["Location"] == second["Location"]


def test_invalid_input_keeps_every_value_and_shows_the_field_error(client_for, workflow):
    client = client_for("operator")
    data = {"domain": "acme.com", "seats": "0", "score": "2.5", "contact": '{"name": "Dana"}'}
    page = client.post(start_url(workflow), data)
    assert page.status_code == 400 and not Run.objects.exists()
    body = page.content.decode()
    assert 'id="error-seats"' in body
    assert 'value="acme.com"' in body and 'value="2.5"' in body and "Dana" in body
    partial = client.post(start_url(workflow), data, **HX)
    text = partial.content.decode()
    assert partial.status_code == 200 and "<html" not in text
    assert text.lstrip().startswith('<form id="run-form"') and 'id="error-seats"' in text
    assert 'value="acme.com"' in text


def test_the_engines_schema_errors_land_on_their_fields(client_for, make_workflow):
    # The form cannot check a pattern; the engine's schema check does.
    schema = {
        "type": "object",
        "required": ["domain"],
        "properties": {"domain": {"type": "string", "pattern": "^[a-z.]+$"}},
    }
    workflow = make_workflow(END, slug="strict", input_schema=schema).workflow
    page = client_for("operator").post(start_url(workflow), {"domain": "Not A Domain"})
    assert page.status_code == 400 and not Run.objects.exists()
    assert "does not match" in page.context["form"].errors["domain"][0]
    assert 'value="Not A Domain"' in page.content.decode()


def test_a_workflow_without_properties_takes_its_input_as_json(client_for, make_workflow):
    workflow = make_workflow(END, slug="free").workflow
    client = client_for("operator")
    page = client.get(page_url(workflow))
    assert '<textarea name="input"' in page.content.decode()
    bad = client.post(start_url(workflow), {"input": "[1, 2"})
    assert bad.status_code == 400 and "[1, 2" in bad.content.decode()
    client.post(start_url(workflow), {"input": '{"n": 3}'})
    assert Run.objects.get().input == {"n": 3}


def test_the_form_is_prefilled_from_a_recorded_run(client_for, workflow, make_user):
    recorded = engine.start_run(
        workflow=workflow,
        input={"domain": "acme.com", "seats": 3, "tier": "silver", "contact": {"name": "Dana"}},
    ).run
    page = client_for("operator").get(page_url(workflow), {"from_run": recorded.pk})
    body = page.content.decode()
    assert 'value="acme.com"' in body and 'value="3"' in body
    assert '<option value="&quot;silver&quot;" selected>' in body
    assert "Dana" in body
    # Someone who may not see personal data gets the sensitive fields empty.
    limited = make_user(None)
    limited.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_workflow", "add_run"])
    )
    client = Client()
    client.force_login(limited)
    body = client.get(page_url(workflow), {"from_run": recorded.pk}).content.decode()
    assert 'value="acme.com"' in body and "Dana" not in body


def test_starting_needs_the_permission_to_add_runs(client_for, workflow):
    for role in ("viewer", "manager"):
        client = client_for(role)
        page = client.get(page_url(workflow))
        assert page.status_code == 200 and 'id="run-form"' not in page.content.decode()
        data = {"domain": "acme.com", "seats": "1"}
        assert client.post(start_url(workflow), data).status_code == 403
        assert client.post(start_url(workflow), data, **HX).status_code == 403
    assert not Run.objects.exists()
    assert client_for("reviewer").get(page_url(workflow)).status_code == 403


def test_the_page_shows_versions_and_recent_runs(client_for, workflow):
    run = engine.start_run(workflow=workflow, input={"domain": "acme.com", "seats": 1}).run
    body = client_for("viewer").get(page_url(workflow)).content.decode()
    assert 'id="version-table"' in body and "v1" in body
    assert f'href="/console/runs/{run.pk}/"' in body


# --- publish ---------------------------------------------------------------------


def test_publish_freezes_the_draft_as_the_next_version(client_for, workflow):
    Step.objects.filter(workflow=workflow).update(config={"outcome": "finished", "success": True})
    client = client_for("operator")
    before = client.get(page_url(workflow)).content.decode()
    assert "changed since the latest version" in before
    answer = client.post(reverse("console-workflow-publish", args=[workflow.slug]))
    assert answer.status_code == 302 and answer["Location"] == page_url(workflow)
    version = WorkflowVersion.objects.filter(workflow=workflow).order_by("-number").first()
    assert version.number == 2 and version.published_by == client.user
    after = client.get(page_url(workflow)).content.decode()
    assert "Published leads v2." in after


def test_a_refused_publish_shows_every_problem(client_for, workflow):
    Step.objects.filter(workflow=workflow).update(edges={"next": "nowhere"})
    client = client_for("operator")
    answer = client.post(reverse("console-workflow-publish", args=[workflow.slug]), **HX)
    assert answer.status_code == 200 and answer["HX-Redirect"] == page_url(workflow)
    body = client.get(page_url(workflow)).content.decode()
    assert "leads not published" in body and "is not an outcome of a end step" in body
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1


def test_publish_needs_the_publish_permission(client_for, workflow):
    for role in ("viewer", "manager"):
        client = client_for(role)
        assert 'id="publish"' not in client.get(page_url(workflow)).content.decode()
        url = reverse("console-workflow-publish", args=[workflow.slug])
        assert client.post(url).status_code == 403
        assert client.post(url, **HX).status_code == 403
    assert WorkflowVersion.objects.filter(workflow=workflow).count() == 1


def test_the_run_page_offers_to_run_again_with_its_input(client_for, workflow):
    run = engine.start_run(workflow=workflow, input={"domain": "acme.com", "seats": 1}).run
    url = reverse("console-run-detail", args=[run.pk])
    again = f'href="/console/workflows/leads/?from_run={run.pk}"'
    assert again in client_for("operator").get(url).content.decode()
    assert again not in client_for("viewer").get(url).content.decode()


def test_the_workflow_page_costs_a_fixed_number_of_queries(
    client_for, workflow, django_assert_num_queries
):
    client = client_for("operator")
    engine.start_run(workflow=workflow, input={"domain": "acme.com", "seats": 1})
    client.get(page_url(workflow))
    with django_assert_num_queries(10) as few:
        client.get(page_url(workflow))
    for seats in range(2, 12):
        engine.start_run(workflow=workflow, input={"domain": "acme.com", "seats": seats})
    with django_assert_num_queries(len(few)):
        client.get(page_url(workflow))


SEND = [
    {
        "key": "send",
        "kind": "tool",
        "config": {"tool": "test.send", "args": {"to": "ops"}},
        "edges": {"next": "done"},
    },
    *END,
]


@pytest.fixture
def sender(make_workflow) -> Workflow:
    policy = {"autonomy": [{"tool": "test.send", "mode": "approve"}]}
    return make_workflow(SEND, slug="sender", policy=policy).workflow


def dry_run(client, workflow: Workflow) -> Run:
    answer = client.post(start_url(workflow), {"token": "d" * 32, "mode": "dry_run", "input": "{}"})
    assert answer.status_code == 302, answer.context["form"].errors
    run = Run.objects.get()
    assert answer["Location"] == reverse("console-run-detail", args=[run.pk])
    return drive(run.pk)


def test_a_dry_run_stubs_the_write_and_asks_nobody(client_for, sender):
    """The policy holds test.send for approval; the dry run records what it
    would have sent, reaches no tool and asks no person."""
    client = client_for("operator")
    run = dry_run(client, sender)
    assert (run.mode, run.status, run.version.number) == ("dry_run", "succeeded", 1)
    [call] = ToolCallRecord.objects.filter(run=run)
    assert (call.tool, call.status, call.calls, call.args) == (
        "test.send",
        "stubbed",
        0,
        {"to": "ops"},
    )
    assert not Execution.objects.exists()
    assert not ApprovalRequest.objects.exists()
    page = client.get(reverse("console-run-detail", args=[run.pk])).content.decode()
    assert "Dry run" in page


def test_a_dry_run_runs_the_draft_when_it_changed_and_publishes_nothing(client_for, sender):
    Step.objects.filter(workflow=sender, key="send").update(
        config={"tool": "test.send", "args": {"to": "sales"}}
    )
    client = client_for("operator")
    assert "Dry run the draft" in client.get(page_url(sender)).content.decode()
    run = dry_run(client, sender)
    assert run.version.candidate and run.status == "succeeded"
    assert ToolCallRecord.objects.get(run=run).args == {"to": "sales"}
    assert sender.current_version.number == 1  # nothing went live
    assert not Execution.objects.exists()
