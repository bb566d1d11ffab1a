"""Memory queries: active events, history (episodic), facts (semantic), procedure."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge import memory, services
from knowledge.models import Entity
from policies.models import AgentRole, AgentRoleVersion, Policy, PolicyVersion
from tests.knowledge.conftest import END


def at(month: int, day: int = 1) -> datetime:
    return datetime(2025, month, day, tzinfo=UTC)


@pytest.fixture
def acme(db) -> Entity:
    return services.upsert_entity(
        type="account", key="acme", attributes={"plan": "free", "country": "DE"}
    )


def profile(entity, payload, **extra):
    return services.record_event(
        entity=entity, type="account.profile", payload=payload, actor_label="ops", **extra
    )


def test_a_superseding_event_changes_current_facts_while_history_keeps_both(acme, profile_type):
    signed = profile(acme, {"plan": "pro", "seats": 10}, reason="signed the pro contract")
    facts = memory.current_facts(entity=acme)
    assert {name: fact.value for name, fact in facts.items()} == {
        "plan": "pro",
        "seats": 10,
        "country": "DE",
    }
    assert facts["seats"].event_id == signed.pk and facts["country"].event_id is None

    fix = services.supersede_event(
        event=signed,
        payload={"plan": "pro", "seats": 25},
        reason="the contract says 25 seats, not 10",
        actor_label="account-manager",
    )
    facts = memory.current_facts(entity=acme)
    assert facts["seats"].value == 25
    assert (facts["seats"].event_id, facts["seats"].actor) == (fix.pk, "account-manager")
    assert facts["seats"].reason == "the contract says 25 seats, not 10"

    history = memory.entity_history(entity=acme)
    assert [(e.id, e.superseded, e.supersedes_id) for e in history.events] == [
        (fix.pk, False, signed.pk),
        (signed.pk, True, None),
    ]
    assert history.events[1].superseded_by_id == fix.pk


def test_the_latest_active_fact_wins_and_an_expired_one_no_longer_counts(acme, profile_type):
    profile(acme, {"seats": 10}, reason="a", valid_from=at(1), occurred_at=at(1))
    profile(acme, {"seats": 12}, reason="b", valid_from=at(2), occurred_at=at(2), valid_until=at(3))
    assert memory.current_facts(entity=acme, at=at(2, 15))["seats"].value == 12
    assert memory.current_facts(entity=acme, at=at(3))["seats"].value == 10
    assert memory.current_facts(entity=acme, at=at(1))["seats"].value == 10
    assert memory.current_facts(entity=acme, at=datetime(2024, 12, 1, tzinfo=UTC)).keys() == {
        "plan",
        "country",
    }


def test_active_events_hold_from_valid_from_until_just_before_valid_until(acme, paused_type):
    pause = services.record_event(
        entity=acme,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="founder asked",
        actor_label="ops",
        valid_from=at(5),
        valid_until=at(7),
    )
    assert memory.active_events(entity=acme, type="outreach.paused", at=at(4, 30)) == []
    assert memory.active_events(entity=acme, type="outreach.paused", at=at(5)) == [pause]
    assert memory.active_events(entity=acme, type="outreach.paused", at=at(7)) == []
    assert memory.active_events(entity=acme, type="account.profile", at=at(6)) == []
    # Pause facts are not facts: only types that set facts feed current_facts.
    assert set(memory.current_facts(entity=acme, at=at(6))) == {"plan", "country"}


def test_procedural_memory_lists_the_prompts_policy_and_role_in_force(make_workflow):
    policy = Policy.objects.create(name="outbound", max_steps=20)
    PolicyVersion.objects.create(policy=policy, number=1, snapshot=policy.snapshot())
    role = AgentRole.objects.create(name="sdr", allowed_tools=["echo"])
    AgentRoleVersion.objects.create(role=role, number=1, snapshot=role.snapshot())
    draft = {
        "key": "draft",
        "kind": "llm",
        "config": {"system": "You write short emails.", "prompt": "Write to {{ input.name }}."},
        "edges": {"next": "done"},
    }
    version = make_workflow([draft, END])
    workflow = version.workflow
    workflow.policy, workflow.role = policy, role
    workflow.save()

    procedure = memory.procedural(workflow=workflow)
    assert procedure.version == 1
    assert procedure.prompts == [
        memory.Prompt(
            step_key="draft", system="You write short emails.", prompt="Write to {{ input.name }}."
        )
    ]
    assert procedure.policy == memory.InForce(
        name="outbound", version=1, snapshot=policy.snapshot()
    )
    assert procedure.role.name == "sdr" and procedure.role.snapshot["allowed_tools"] == ["echo"]


def test_procedural_memory_names_the_rubric_a_score_step_uses(make_workflow):
    from policies.models import Rubric
    from policies.rubrics import save_rubric

    rubric = Rubric(
        name="icp",
        criteria=[{"key": "fit", "description": "Fits our customers", "weight": 1}],
        routes=[{"min": 50, "route": "good"}, {"min": 0, "route": "poor"}],
    )
    save_rubric(rubric=rubric, by="manager")
    rubric.routes = [{"min": 60, "route": "good"}, {"min": 0, "route": "poor"}]
    save_rubric(rubric=rubric, by="manager")
    score = {
        "key": "score",
        "kind": "score",
        "config": {
            "provider": "scripted",
            "prompt": "Score {{ input.name }}.",
            "rubric": "icp",
            "scripted": {"points": [], "reply": {"criteria": {"fit": 50}}},
        },
        "edges": {"good": "done", "poor": "done"},
    }
    procedure = memory.procedural(workflow=make_workflow([score, END]).workflow)
    assert [p.step_key for p in procedure.prompts] == ["score"]
    assert [(r.name, r.version) for r in procedure.rubrics] == [("icp", 2)]
    assert procedure.rubrics[0].snapshot["routes"][0] == {"min": 60, "route": "good"}
