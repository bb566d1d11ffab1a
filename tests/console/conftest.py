"""Fixtures for console tests: logged-in clients by role, and runs waiting
for review (a drafted text, or a tool call the policy holds for approval)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from approvals.models import ApprovalRequest
from runs import engine
from runs.models import WorkflowVersion
from tests.conftest import drive

ROLES = ("operator", "manager", "reviewer", "viewer")
DRAFT_TEXT = "Hello Dana,\nthanks for your interest in Acme.\nBest, Sam\n"


@pytest.fixture
def client_for(make_user):
    """`client_for("reviewer")`: a Client logged in as a new user in that role
    group (None: a user in no group; "anonymous": nobody logged in); the
    user is `client.user`. `csrf=True` enforces CSRF checks as browsers see them."""

    def make(role: str | None, *, csrf: bool = False, username: str = "") -> Client:
        client = Client(enforce_csrf_checks=csrf)
        client.user = None
        if role != "anonymous":
            client.user = make_user(role, username=username)
            client.force_login(client.user)
        return client

    return make


def draft_review_steps(**approval_config: Any) -> list[dict[str, Any]]:
    """write (llm, priced) → review (approval of its text) → sent | dropped.
    The `sent` end step outputs the draft the review let through."""
    return [
        {
            "key": "write",
            "kind": "llm",
            "config": {
                "provider": "sequence",
                "prompt": "Write to {{ input.name }}",
                "output_schema": {"type": "object", "required": ["body"]},
                "scripted": {"replies": [{"text": json.dumps({"body": DRAFT_TEXT})}]},
            },
            "edges": {"next": "review"},
        },
        {
            "key": "review",
            "kind": "approval",
            "config": {
                "title": "Email to {{ input.name }}",
                "draft": "{{ steps.write.body }}",
                **approval_config,
            },
            "edges": {"approved": "sent", "rejected": "dropped"},
        },
        {
            "key": "sent",
            "kind": "end",
            "config": {"outcome": "sent", "output": "{{ steps.review.draft }}"},
        },
        {"key": "dropped", "kind": "end", "config": {"outcome": "dropped", "success": False}},
    ]


@pytest.fixture
def review_workflow(make_workflow):
    """`review_workflow(**approval_config)`: a published draft-review workflow."""

    def make(**approval_config: Any) -> WorkflowVersion:
        return make_workflow(draft_review_steps(**approval_config))

    return make


@pytest.fixture
def pending_approval(review_workflow):
    """`pending_approval(**approval_config)`: a run of the draft-review
    workflow driven until it waits; returns its ApprovalRequest."""

    def make(*, version: WorkflowVersion | None = None, **approval_config: Any) -> ApprovalRequest:
        version = version or review_workflow(**approval_config)
        run = engine.start_run(workflow=version.workflow, input={"name": "Dana"}).run
        assert drive(run.pk).wait_reason == "approval"
        return ApprovalRequest.objects.select_related("run").get(run=run)

    return make


@pytest.fixture
def pending_tool_call(make_workflow):
    """A run whose `test.send` call the policy holds for approval; returns
    the tool-call ApprovalRequest."""
    send = {"key": "send", "kind": "tool", "config": {"tool": "test.send", "args": {"to": "ops"}}}
    end = {"key": "done", "kind": "end", "config": {"outcome": "done"}}
    version = make_workflow(
        [{**send, "edges": {"next": "done"}}, end],
        policy={"autonomy": [{"tool": "test.send", "mode": "approve"}]},
    )
    run = engine.start_run(workflow=version.workflow, input={}).run
    assert drive(run.pk).wait_reason == "approval"
    return ApprovalRequest.objects.get(run=run)
