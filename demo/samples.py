"""The sample workflows a new installation starts with.

They are ordinary workflows built from public step kinds, tools, policies,
rubrics and event types, and published through the same validation as any
operator's: no special case in the engine knows them.

- `lead-qualification`: an inbound lead is checked against the entry
  schema and normalised (a free-mail or disposable address without a
  website names no company: it ends `needs_company` before anything is
  paid), held when the account asked not to be contacted
  (`outreach.paused`, checked before the dedup key is taken), deduplicated
  on the contact's address, its company enriched once (the enrichment step
  is cached by domain, so a second contact reuses it), scored against the
  `icp` rubric and routed: 70+ gets an outreach email drafted, reviewed by
  a person and sent (then `outreach.sent` is recorded), 40–70 goes to
  nurture, below 40 is archived. Each end says how long the contact's key
  is kept (a rejection or an archive 30 days, a send or nurture 90, a pause
  releases it).
- `support-refund`: a ticket and its invoice are read, the request is
  classified, and a refund is requested; the policy lets refunds up to 100
  through and puts larger ones in front of a reviewer.

Offline, the `llm` and `score` steps answer with the `scripted` provider
from the rules in their config (deterministic scores computed from the
lead's attributes); with `ANTHROPIC_API_KEY` set they ask Claude. Which
provider answers is `settings.BOSUN_DEFAULT_PROVIDER`: the steps name none.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from demo.sample_data.workflows import (
    ICP_RUBRIC,
    LEAD_QUALIFICATION,
    SAMPLE_EVENT_TYPES,
    SUPPORT_REFUND,
)
from knowledge.models import EventType
from policies.models import AgentRole, Policy, Rubric
from policies.rubrics import latest_version, save_rubric, sort_routes
from policies.services import save_policy, save_role
from runs import engine
from runs.models import Step, Workflow, WorkflowVersion

SAMPLE_WORKFLOWS = [LEAD_QUALIFICATION, SUPPORT_REFUND]


# Workflow fields a spec may set besides its steps.
_WORKFLOW_FIELDS = ("input_schema", "sensitive_fields", "untrusted_fields", "max_active_runs")


def install_samples() -> dict[str, WorkflowVersion]:
    """Install everything the samples need (event types, the ICP rubric,
    both workflows with their roles and policies). Idempotent: what is
    already there unchanged is left alone, no new version is made."""
    return {spec["slug"]: install_workflow(spec) for spec in SAMPLE_WORKFLOWS}


def install_event_types() -> None:
    """Create the sample event types; a type an operator already defined is
    kept as it is."""
    for spec in SAMPLE_EVENT_TYPES:
        EventType.objects.get_or_create(
            name=spec["name"],
            defaults={
                "description": spec["description"],
                "payload_schema": spec["payload_schema"],
            },
        )


def install_rubric(spec: dict[str, Any]) -> None:
    """Create the rubric on first install. A manager's later edits win: an
    existing rubric is never overwritten by the sample's."""
    if latest_version(spec["name"]) is not None:
        return
    rubric = Rubric.objects.filter(name=spec["name"]).first() or Rubric(name=spec["name"])
    rubric.description = spec["description"]
    rubric.criteria = spec["criteria"]
    rubric.routes = sort_routes(spec["routes"])
    save_rubric(rubric=rubric, by="samples", actor="system")


def install_workflow(spec: dict[str, Any]) -> WorkflowVersion:
    """Create or update the draft from `spec` and publish it if it changed.

    The workflow acts as a role of its own allowing exactly the tools its
    steps name (least privilege); `spec["role_tools"]` may widen it.
    `spec["policy"]` (Policy fields) binds a policy of the same name,
    created if missing (an operator's edits to it are kept). The event
    types and the rubric the samples name are installed first.
    """
    install_event_types()
    install_rubric(ICP_RUBRIC)
    tools = sorted(
        {s["config"]["tool"] for s in spec["steps"] if s["kind"] == "tool"}
        | set(spec.get("role_tools", ()))
    )
    with transaction.atomic():
        role = AgentRole.objects.filter(name=spec["slug"]).first() or AgentRole(name=spec["slug"])
        if role.pk is None or sorted(role.allowed_tools) != tools:
            role.allowed_tools = tools
            role.description = f"Runs of {spec['name']}"
            save_role(role=role, by="samples")
        policy = _install_policy(spec["slug"], spec.get("policy"))
        workflow, _ = Workflow.objects.update_or_create(
            slug=spec["slug"],
            defaults={
                "name": spec["name"],
                "description": spec.get("description", ""),
                "entry_step": spec["entry_step"],
                "role": role,
                "policy": policy,
                **{name: spec[name] for name in _WORKFLOW_FIELDS if name in spec},
            },
        )
        _install_steps(workflow, spec["steps"])
    current = workflow.current_version
    try:
        return engine.publish_workflow(workflow=workflow)
    except engine.PublishError:
        if current is not None and engine.validate_workflow(workflow=workflow) == []:
            return current  # nothing changed since the last version
        raise


def _install_steps(workflow: Workflow, steps: list[dict[str, Any]]) -> None:
    workflow.steps.exclude(key__in=[s["key"] for s in steps]).delete()
    for position, step in enumerate(steps):
        Step.objects.update_or_create(
            workflow=workflow,
            key=step["key"],
            defaults={
                "kind": step["kind"],
                "config": step.get("config", {}),
                "edges": step.get("edges", {}),
                "position": position,
                **{k: v for k, v in step.items() if k not in ("key", "kind", "config", "edges")},
            },
        )


def _install_policy(slug: str, fields: dict[str, Any] | None) -> Policy | None:
    """The workflow's policy, created on first install. An operator's later
    edits (budgets, autonomy rules) win: an existing policy is left as it is."""
    if fields is None:
        return None
    policy = Policy.objects.filter(name=slug).first()
    if policy is None:
        policy = Policy(name=slug, **fields)
        save_policy(policy=policy, by="samples")
    return policy


SAMPLE_LEADS = [
    {
        "company": "Acme Robotics",
        "email": "dana@acme-robotics.example",
        "website": "https://acme-robotics.example",
        "title": "VP Operations",
        "first_name": "Dana",
    },
    {
        "company": "Globex",
        "email": "li@globex.example",
        "website": "globex.example",
        "title": "Head of Sales",
        "first_name": "Li",
    },
    {"company": "Initech", "email": "sam@initech.example", "title": "Engineer"},
    {
        "company": "Umbrella Health",
        "email": "ana@umbrella.example",
        "title": "Director of Growth",
        "first_name": "Ana",
    },
    {"company": "Tiny Shop", "email": "owner@tinyshop.example", "title": "Owner"},
    {
        "company": "Hooli",
        "email": "gavin@hooli.example",
        "website": "hooli.example",
        "title": "Chief Revenue Officer",
        "first_name": "Gavin",
    },
]
