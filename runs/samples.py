"""The sample workflows a new installation starts with.

They are ordinary workflows built from public step kinds and published
through the same validation as any operator's: no special case in the
engine knows them.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from policies.models import AgentRole
from policies.services import role_save
from runs import engine
from runs.models import Step, Workflow, WorkflowVersion

LEAD_SCORING_RULES = [
    {
        "criterion": "company_size",
        "add": 35,
        "when": {"path": "steps.normalize.employees", "op": ">=", "value": 200},
    },
    {
        "criterion": "company_size",
        "add": 20,
        "when": {
            "all": [
                {"path": "steps.normalize.employees", "op": ">=", "value": 50},
                {"path": "steps.normalize.employees", "op": "<", "value": 200},
            ]
        },
    },
    {
        "criterion": "seniority",
        "add": 30,
        "when": {
            "any": [
                {"path": "steps.normalize.title", "op": "contains", "value": "VP"},
                {"path": "steps.normalize.title", "op": "contains", "value": "Head"},
                {"path": "steps.normalize.title", "op": "contains", "value": "Director"},
                {"path": "steps.normalize.title", "op": "contains", "value": "Chief"},
            ]
        },
    },
    {
        "criterion": "market",
        "add": 25,
        "when": {
            "path": "steps.normalize.country",
            "op": "in",
            "value": ["US", "GB", "DE", "FR", "NL", "SE"],
        },
    },
    {
        "criterion": "reachable",
        "add": 10,
        "when": {"path": "steps.normalize.domain", "op": "!=", "value": ""},
    },
]

LEAD_QUALIFICATION: dict[str, Any] = {
    "name": "Inbound lead qualification",
    "slug": "lead-qualification",
    "description": "Normalise an inbound lead, score it against the ICP rubric, and route "
    "it: 70+ gets a drafted outreach email for review, 40-70 nurture, below 40 archive.",
    "entry_step": "normalize",
    "steps": [
        {
            "key": "normalize",
            "kind": "tool",
            "edges": {"next": "score"},
            "config": {
                "tool": "lead.normalize",
                "args": {
                    "company": {"$ref": "input.company"},
                    "email": "{{ input.email | default('') }}",
                    "website": "{{ input.website | default('') }}",
                    "employees": "{{ input.employees | default(0) }}",
                    "country": "{{ input.country | default('') }}",
                    "title": "{{ input.title | default('') }}",
                },
            },
        },
        {
            "key": "score",
            "kind": "llm",
            "edges": {"next": "route", "escape": "review"},
            "config": {
                "tier": "fast",
                "system": "You score B2B leads against our ideal customer profile.",
                "prompt": "Score this lead from 0 to 100 for fit. Lead: {{ steps.normalize }}. "
                "Reply as JSON with total, criteria and confidence.",
                "output_schema": {
                    "type": "object",
                    "required": ["total", "criteria", "confidence"],
                    "properties": {
                        "total": {"type": "number", "minimum": 0, "maximum": 100},
                        "criteria": {"type": "object"},
                        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                    },
                },
                "confidence_field": "confidence",
                "confidence_floor": 0.5,
                "scripted": {
                    "points": LEAD_SCORING_RULES,
                    "reply": {
                        "total": "{{ points.total }}",
                        "criteria": "{{ points.criteria }}",
                        "confidence": 0.9,
                    },
                },
            },
        },
        {
            "key": "route",
            "kind": "branch",
            "edges": {"outreach": "draft", "nurture": "nurture", "archive": "archive"},
            "config": {
                "rules": [
                    {
                        "when": {"path": "steps.score.total", "op": ">=", "value": 70},
                        "edge": "outreach",
                    },
                    {
                        "when": {"path": "steps.score.total", "op": ">=", "value": 40},
                        "edge": "nurture",
                    },
                ],
                "default": "archive",
            },
        },
        {
            "key": "draft",
            "kind": "llm",
            "edges": {"next": "review"},
            "config": {
                "tier": "balanced",
                "system": "You write short, specific first-touch emails. No hype.",
                "prompt": "Write a first email to {{ steps.normalize.company }} "
                "({{ steps.normalize.title or 'team' }}). Reply as JSON with subject and body.",
                "output_schema": {
                    "type": "object",
                    "required": ["subject", "body"],
                    "properties": {
                        "subject": {"type": "string", "minLength": 3},
                        "body": {"type": "string", "minLength": 20},
                    },
                },
                "scripted": {
                    "reply": {
                        "subject": "{{ steps.normalize.company }} and faster lead handling",
                        "body": "Hi {{ input.first_name | default('there') }},\n\nTeams like "
                        "{{ steps.normalize.company }} use us to qualify inbound leads the same day "
                        "without re-processing the ones they already paid for. Worth a 20-minute "
                        "call next week?\n\nBest,\nThe Bosun demo",
                    }
                },
            },
        },
        {
            "key": "review",
            "kind": "approval",
            "edges": {"approved": "approved", "rejected": "rejected"},
            "config": {
                "title": "Outreach to {{ steps.normalize.company }}",
                "draft": {"$ref": "steps.draft"},
                "reason_code": "outbound_email",
            },
        },
        {"key": "approved", "kind": "end", "config": {"outcome": "outreach_approved"}},
        {
            "key": "rejected",
            "kind": "end",
            "config": {"outcome": "outreach_rejected", "success": False},
        },
        {"key": "nurture", "kind": "end", "config": {"outcome": "nurture"}},
        {"key": "archive", "kind": "end", "config": {"outcome": "archived"}},
    ],
}

SAMPLE_WORKFLOWS = [LEAD_QUALIFICATION]


def install_workflow(spec: dict[str, Any]) -> WorkflowVersion:
    """Create or update the draft from `spec` and publish it if it changed.

    The workflow acts as a role of its own allowing exactly the tools its
    steps name (least privilege); `spec["role_tools"]` may widen it.
    """
    tools = sorted(
        {s["config"]["tool"] for s in spec["steps"] if s["kind"] == "tool"}
        | set(spec.get("role_tools", ()))
    )
    with transaction.atomic():
        role = AgentRole.objects.filter(name=spec["slug"]).first() or AgentRole(name=spec["slug"])
        if role.pk is None or sorted(role.allowed_tools) != tools:
            role.allowed_tools = tools
            role.description = f"Runs of {spec['name']}"
            role_save(role=role, by="samples")
        workflow, _ = Workflow.objects.update_or_create(
            slug=spec["slug"],
            defaults={
                "name": spec["name"],
                "description": spec.get("description", ""),
                "entry_step": spec["entry_step"],
                "role": role,
            },
        )
        workflow.steps.exclude(key__in=[s["key"] for s in spec["steps"]]).delete()
        for position, step in enumerate(spec["steps"]):
            Step.objects.update_or_create(
                workflow=workflow,
                key=step["key"],
                defaults={
                    "kind": step["kind"],
                    "config": step.get("config", {}),
                    "edges": step.get("edges", {}),
                    "position": position,
                    **{
                        k: v for k, v in step.items() if k not in ("key", "kind", "config", "edges")
                    },
                },
            )
    current = workflow.current_version
    try:
        return engine.publish_workflow(workflow=workflow)
    except engine.PublishError:
        if current is not None and engine.validate_workflow(workflow=workflow) == []:
            return current  # nothing changed since the last version
        raise


SAMPLE_LEADS = [
    {
        "company": "Acme Robotics",
        "email": "dana@acme.example",
        "website": "https://acme.example",
        "employees": 420,
        "country": "US",
        "title": "VP Operations",
        "first_name": "Dana",
    },
    {
        "company": "Globex",
        "email": "li@globex.example",
        "website": "globex.example",
        "employees": 120,
        "country": "DE",
        "title": "Head of Sales",
        "first_name": "Li",
    },
    {
        "company": "Initech",
        "email": "sam@initech.example",
        "employees": 60,
        "country": "NL",
        "title": "Engineer",
    },
    {
        "company": "Umbrella Health",
        "email": "ana@umbrella.example",
        "employees": 900,
        "country": "GB",
        "title": "Director of Growth",
        "first_name": "Ana",
    },
    {
        "company": "Tiny Shop",
        "email": "owner@tinyshop.example",
        "employees": 3,
        "country": "PT",
        "title": "Owner",
    },
    {
        "company": "Hooli",
        "email": "gavin@hooli.example",
        "website": "hooli.example",
        "employees": 5000,
        "country": "US",
        "title": "Chief Revenue Officer",
        "first_name": "Gavin",
    },
]
