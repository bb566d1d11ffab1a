"""Aliases: one account known by a name and several domains, resolved by
every write and read by key (services, the knowledge steps)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from knowledge import memory, services
from knowledge.models import Entity, EntityAlias, Event
from runs import engine
from runs.engine.errors import StepError
from runs.engine.registry import KINDS
from runs.models import StepRun
from tests.conftest import chain, drive
from tests.knowledge.conftest import END, context
from tests.knowledge.test_graph_steps import OUTREACH, WRITE
from tests.testapp.models import Execution


def pause(entity: Entity, **window) -> Event:
    return services.record_event(
        entity=entity,
        type="outreach.paused",
        payload={"until": "2025-07-01"},
        reason="the founder asked",
        actor_label="founder-call",
        valid_from=window.get("valid_from", datetime(2025, 5, 1, tzinfo=UTC)),
        valid_until=window.get("valid_until", datetime(2025, 7, 1, tzinfo=UTC)),
    )


@pytest.fixture
def bareco(db) -> Entity:
    return services.upsert_entity(type="account", key="bareco.com", name="Bareco")


def test_writing_by_an_alias_writes_the_entity_it_names(bareco):
    services.add_alias(entity=bareco, key="  Bareco ", actor_label="ops")
    alias = EntityAlias.objects.get()
    assert (alias.type, alias.key, alias.entity_id, alias.actor_label) == (
        "account",
        "bareco",
        bareco.pk,
        "ops",
    )
    written = services.upsert_entity(type="account", key="BARECO", attributes={"plan": "pro"})
    assert written.pk == bareco.pk
    assert Entity.objects.count() == 1
    assert memory.find_entity(type="account", key="bareco").pk == bareco.pk
    assert memory.find_entity(type="account", key="https://www.bareco.com/").pk == bareco.pk
    assert memory.find_entity(type="account", key="globex.com") is None


def test_an_alias_names_one_entity_and_adding_it_again_is_harmless(bareco):
    first = services.add_alias(entity=bareco, key="bareco")
    assert services.add_alias(entity=bareco, key="Bareco").pk == first.pk
    other = services.upsert_entity(type="account", key="globex.com")
    with pytest.raises(services.InvalidAlias, match="already an alias of account:bareco.com"):
        services.add_alias(entity=other, key="bareco")
    # The same key may be an alias in another type.
    person = services.upsert_entity(type="lead", key="bob")
    services.add_alias(entity=person, key="bareco")
    assert EntityAlias.objects.count() == 2


def test_aliases_stay_one_step_deep(bareco):
    with pytest.raises(services.InvalidAlias, match="own key"):
        services.add_alias(entity=bareco, key="https://bareco.com")
    with pytest.raises(services.InvalidAlias, match="not a usable"):
        services.add_alias(entity=bareco, key="mailto:")
    services.add_alias(entity=bareco, key="bareco")
    stale = Entity.objects.create(type="account", key="bareco")
    with pytest.raises(services.InvalidAlias, match="itself an alias of account:bareco.com"):
        services.add_alias(entity=stale, key="bareco-inc")
    other = services.upsert_entity(type="account", key="globex.com")
    with pytest.raises(services.InvalidAlias, match="has aliases of its own"):
        services.add_alias(entity=other, key="bareco.com")


def test_a_removed_alias_no_longer_names_the_entity(bareco):
    services.add_alias(entity=bareco, key="bareco")
    assert services.remove_alias(entity=bareco, key="Bareco") is True
    assert services.remove_alias(entity=bareco, key="bareco") is False
    assert services.upsert_entity(type="account", key="bareco").pk != bareco.pk


def outreach(workflow, account: str):
    run = drive(
        engine.start_run(
            workflow=workflow, input={"account": account, "at": "2025-06-15T09:00:00Z"}
        ).run.pk
    )
    return run.outcome, Execution.objects.filter(run_id=run.pk, step_key="outreach").count()


def test_a_check_step_finds_a_pause_through_an_alias_and_any_spelling_of_the_domain(
    make_workflow, paused_type, bareco
):
    workflow = make_workflow(OUTREACH).workflow
    pause(bareco)
    assert outreach(workflow, "Bareco") == ("sent", 1)  # no alias yet: a different account
    services.add_alias(entity=bareco, key="bareco")
    assert outreach(workflow, "Bareco") == ("paused", 0)
    assert outreach(workflow, "https://www.bareco.com/about") == ("paused", 0)
    assert outreach(workflow, "ceo@bareco.com") == ("paused", 0)
    check = StepRun.objects.filter(step_key="check").latest("id")
    assert check.output["entity"]["key"] == "bareco.com"


def test_a_pause_filed_under_a_name_guards_the_domain_once_the_name_is_an_alias(
    make_workflow, paused_type, bareco
):
    workflow = make_workflow(OUTREACH).workflow
    misfiled = pause(Entity.objects.create(type="account", key="bareco"))
    assert outreach(workflow, "bareco.com") == ("sent", 1)
    services.add_alias(entity=bareco, key="bareco")
    assert outreach(workflow, "bareco.com") == ("paused", 0)
    check = StepRun.objects.filter(step_key="check").latest("id")
    assert [e["id"] for e in check.output["events"]] == [misfiled.pk]
    history = memory.entity_history(entity=bareco)
    assert [e.id for e in history.events] == [misfiled.pk]


def test_a_write_step_writes_the_entity_an_alias_names(make_runs, paused_type, bareco):
    services.add_alias(entity=bareco, key="bareco")
    [run_id] = make_runs(1)
    kind = KINDS["knowledge_write"]
    config = kind.Config.model_validate(WRITE["config"])
    outcome = kind.execute(
        config,
        context(
            run_id,
            step_key="pause",
            account=" Bareco",
            name="Bareco",
            since="2025-05-01",
            until="2025-07-01",
        ),
    )
    assert Event.objects.get().entity_id == bareco.pk
    assert outcome.output["entity"]["key"] == "bareco.com"
    assert Entity.objects.count() == 1


@pytest.mark.parametrize("kind_name", ["knowledge_check", "knowledge_write"])
def test_a_key_that_does_not_normalise_fails_the_step_without_retries(
    make_runs, paused_type, kind_name
):
    [run_id] = make_runs(1)
    kind = KINDS[kind_name]
    step = OUTREACH[0] if kind_name == "knowledge_check" else WRITE
    config = kind.Config.model_validate(step["config"])
    ctx = context(run_id, step_key="s", account="mailto:", name="x", until="2025-07-01")
    with pytest.raises(StepError) as caught:
        kind.execute(config, ctx)
    assert (caught.value.retryable, caught.value.error_type) == (False, "invalid_key")
    assert not Entity.objects.exists()


def test_a_whole_run_keyed_by_domain_meets_a_pause_written_by_name(make_workflow, paused_type):
    """The lead workflow's shape: one run pauses `Bareco` by name (an alias
    of the domain), a later run checks the domain and is held."""
    bareco = services.upsert_entity(type="account", key="bareco.com")
    services.add_alias(entity=bareco, key="bareco")
    writer = make_workflow(chain(WRITE, END)).workflow
    drive(
        engine.start_run(
            workflow=writer,
            input={
                "account": "Bareco",
                "name": "Bareco",
                "since": "2025-05-01",
                "until": "2025-07-01",
            },
        ).run.pk
    )
    assert outreach(make_workflow(OUTREACH).workflow, "bareco.com") == ("paused", 0)
