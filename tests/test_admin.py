"""Operators work in admin: publish, read runs, retry and cancel."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.test import RequestFactory
from django.urls import reverse

from runs import engine
from runs.models import Run, Step, Workflow
from tests.conftest import chain, drive
from tests.testapp.models import Switch

END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


def staff(role: str) -> User:
    user = User.objects.create_user(username=role, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def operator_client(client, db):
    client.force_login(staff("operator"))
    return client


def test_the_four_role_groups_exist_after_migrate(db):
    assert set(Group.objects.values_list("name", flat=True)) >= {
        "operator",
        "manager",
        "reviewer",
        "viewer",
    }
    assert staff("reviewer").has_perm("approvals.decide_approval")
    assert not staff("viewer").has_perm("approvals.decide_approval")


def test_publish_action_reports_each_problem_naming_the_step(operator_client, make_workflow):
    workflow = make_workflow(
        [
            {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "edges": {"next": "nowhere"}},
            END,
        ],
        publish=False,
    )
    response = operator_client.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "publish", "_selected_action": [workflow.pk]},
        follow=True,
    )
    text = response.content.decode()
    assert "not published: step &#x27;a&#x27; (tool): edge &#x27;next&#x27; leads to" in text
    assert workflow.versions.count() == 0

    Step.objects.filter(workflow=workflow, key="a").update(edges={"next": "done"})
    response = operator_client.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "publish", "_selected_action": [workflow.pk]},
        follow=True,
    )
    assert "Published" in response.content.decode() and workflow.versions.count() == 1


def test_a_viewer_cannot_publish(client, make_workflow):
    workflow = make_workflow(
        chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END), publish=False
    )
    client.force_login(staff("viewer"))
    client.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "publish", "_selected_action": [workflow.pk]},
    )
    assert Workflow.objects.get(pk=workflow.pk).versions.count() == 0


def test_run_pages_show_the_steps_and_retry_resumes_a_dead_run(operator_client, make_workflow):
    Switch.objects.create(name="down", on=True)
    version = make_workflow(
        chain(
            {"key": "a", "kind": "tool", "config": {"tool": "echo", "args": {"value": 1}}},
            {
                "key": "b",
                "kind": "tool",
                "config": {"tool": "test.fail_while", "args": {"switch": "down"}},
            },
            END,
        )
    )
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "failed"
    listing = operator_client.get(reverse("admin:runs_run_changelist"))
    assert listing.status_code == 200 and "failed" in listing.content.decode()
    detail = operator_client.get(reverse("admin:runs_run_change", args=[run.pk]))
    assert "switch down is on" in detail.content.decode()

    Switch.objects.filter(name="down").update(on=False)
    operator_client.post(
        reverse("admin:runs_run_changelist"),
        {"action": "retry_from_failed_step", "_selected_action": [run.pk]},
    )
    assert Run.objects.get(pk=run.pk).status == "queued"
    assert drive(run.pk).status == "succeeded"


def test_cancel_action_cancels_through_the_engine(operator_client, make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    run = engine.start_run(workflow=version.workflow, input={}).run
    operator_client.post(
        reverse("admin:runs_run_changelist"), {"action": "cancel", "_selected_action": [run.pk]}
    )
    run.refresh_from_db()
    assert run.status == "cancelled" and "cancelled by operator" in run.error


def test_versions_are_read_only_in_admin(operator_client, make_workflow):
    version = make_workflow(chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}}, END))
    page = operator_client.get(reverse("admin:runs_workflowversion_change", args=[version.pk]))
    assert page.status_code == 200
    operator_client.post(
        reverse("admin:runs_workflowversion_change", args=[version.pk]), {"number": 99}
    )
    version.refresh_from_db()
    assert version.number == 1


def test_pages_say_when_the_scripted_provider_answers(operator_client, settings):
    page = operator_client.get(reverse("admin:index")).content.decode()
    assert 'id="provider-banner"' in page and "scripted" in page
    settings.BOSUN_DEFAULT_PROVIDER = "anthropic"
    assert (
        'id="provider-banner"' not in operator_client.get(reverse("admin:index")).content.decode()
    )


def test_the_invalidate_cache_action_drops_a_workflows_cached_results(
    operator_client, make_workflow
):
    from runs.models import StepCacheEntry

    version = make_workflow(
        chain({"key": "a", "kind": "tool", "config": {"tool": "echo"}, "cache_ttl_s": 60}, END)
    )
    drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert StepCacheEntry.objects.count() == 1
    response = operator_client.post(
        reverse("admin:runs_workflow_changelist"),
        {"action": "invalidate_cache", "_selected_action": [version.workflow.pk]},
        follow=True,
    )
    assert "1 cached result(s) dropped" in response.content.decode()
    assert StepCacheEntry.objects.count() == 0


def test_one_steps_cache_can_be_dropped_from_its_admin_list(operator_client, make_workflow):
    from runs.models import StepCacheEntry

    version = make_workflow(
        chain(
            {"key": "a", "kind": "tool", "config": {"tool": "echo"}, "cache_ttl_s": 60},
            {
                "key": "b",
                "kind": "tool",
                "config": {"tool": "echo", "args": {"value": 2}},
                "cache_ttl_s": 60,
            },
            END,
        )
    )
    drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    entry = StepCacheEntry.objects.get(step_key="a")
    listing = operator_client.get(reverse("admin:runs_stepcacheentry_changelist") + "?step_key=a")
    assert listing.status_code == 200
    operator_client.post(
        reverse("admin:runs_stepcacheentry_changelist"),
        {"action": "delete_selected", "_selected_action": [entry.pk], "post": "yes"},
    )
    assert list(StepCacheEntry.objects.values_list("step_key", flat=True)) == ["b"]


def test_managers_read_scores_and_nobody_edits_them(client, make_user):
    from runs.admin import ScoreAdmin
    from runs.models import Score

    manager = make_user("manager")
    client.force_login(manager)
    assert client.get("/admin/runs/score/").status_code == 200
    assert client.get("/admin/runs/score/add/").status_code == 403
    model_admin = ScoreAdmin(Score, admin.site)
    request = RequestFactory().get("/")
    request.user = make_user(superuser=True)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)


def test_a_workflows_slug_is_set_when_it_is_added_and_shown_read_only_after(
    operator_client, make_workflow
):
    workflow = make_workflow([END], slug="kept-slug").workflow
    added = operator_client.get(reverse("admin:runs_workflow_add")).content.decode()
    changed = operator_client.get(
        reverse("admin:runs_workflow_change", args=[workflow.pk])
    ).content.decode()
    assert 'name="slug"' in added
    assert 'name="slug"' not in changed
    assert "kept-slug" in changed
