"""The dedup gate: a key goes through once per scope and window."""

from __future__ import annotations

import pytest

from knowledge.models import DedupRecord
from runs import engine
from runs.engine.errors import StepError
from runs.engine.registry import KINDS
from runs.models import Run, StepRun
from tests.conftest import drive
from tests.knowledge.conftest import context
from tests.testapp.models import Execution

DAY = 86400
LEAD_FLOW = [
    {
        "key": "normalize",
        "kind": "tool",
        "config": {
            "tool": "lead.normalize",
            "args": {
                "company": "{{ input.company }}",
                "website": "{{ input.website }}",
                "email": "{{ input.email }}",
            },
        },
        "edges": {"next": "gate"},
    },
    {
        "key": "gate",
        "kind": "dedup",
        "config": {
            "key": "{{ steps.normalize.domain }}",
            "scope": "lead",
            "window_s": 30 * DAY,
            "at": "{{ input.at }}",
        },
        "edges": {"next": "enrich", "duplicate": "reuse"},
    },
    {"key": "enrich", "kind": "tool", "config": {"tool": "test.count"}, "edges": {"next": "done"}},
    {
        "key": "reuse",
        "kind": "end",
        "config": {"outcome": "duplicate", "output": "{{ steps.gate.steps.enrich }}"},
    },
    {"key": "done", "kind": "end", "config": {"outcome": "enriched"}},
]


def lead(workflow, at: str, *, website: str = "", email: str = "") -> Run:
    data = {"company": "Acme", "website": website, "email": email, "at": at}
    return drive(engine.start_run(workflow=workflow, input=data).run.pk)


def gate_output(run: Run) -> dict:
    return StepRun.objects.get(run=run, step_key="gate").output


def test_one_lead_from_two_sources_and_again_next_week_is_enriched_once_until_the_window_ends(
    make_workflow,
):
    workflow = make_workflow(LEAD_FLOW).workflow
    week0 = lead(workflow, "2025-03-03T09:00:00Z", website="https://www.Acme.com/pricing")
    form = lead(workflow, "2025-03-03T11:30:00Z", email="Jane@ACME.com")  # a second source
    week1 = lead(workflow, "2025-03-10T09:00:00Z", website="acme.com")
    week5 = lead(workflow, "2025-04-07T09:00:00Z", email="bob@acme.com")  # 35 days on
    week5_again = lead(workflow, "2025-04-08T09:00:00Z", website="acme.com")

    enriched = list(Execution.objects.filter(step_key="enrich").values_list("run_id", flat=True))
    assert sorted(enriched) == [week0.pk, week5.pk]
    assert [r.outcome for r in (week0, form, week1, week5, week5_again)] == [
        "enriched",
        "duplicate",
        "duplicate",
        "enriched",
        "duplicate",
    ]
    # The duplicates reuse the first run's enrichment instead of paying for it again.
    assert gate_output(form)["first_run"] == gate_output(week1)["first_run"] == week0.pk
    assert gate_output(form)["steps"]["enrich"] == {"executions": 1}
    assert gate_output(form)["first_status"] == "succeeded"
    assert gate_output(form)["first_outcome"] == "enriched"
    assert StepRun.objects.get(run=form, step_key="reuse").output == {"executions": 1}
    assert gate_output(week5)["replaced"] == {"run": week0.pk, "expired": True}
    assert gate_output(week5_again)["first_run"] == week5.pk
    record = DedupRecord.objects.get()
    assert (record.scope, record.key, record.run_id) == ("lead", "acme.com", week5.pk)


def gate_config(**extra):
    return KINDS["dedup"].Config.model_validate(
        {"key": "{{ input.domain }}", "scope": "lead", **extra}
    )


def test_a_gate_executed_again_after_a_crash_still_lets_its_own_run_through(make_runs):
    first, second = make_runs(2)
    kind, config = KINDS["dedup"], gate_config()
    assert kind.execute(config, context(first, step_key="gate", domain="acme.com")).edge == "next"
    again = kind.execute(config, context(first, step_key="gate", domain="acme.com"))
    assert again.edge == "next" and again.output["duplicate"] is False
    other = kind.execute(config, context(second, step_key="gate", domain="acme.com"))
    assert other.edge == "duplicate" and other.output["first_run"] == first


def test_a_key_held_by_a_failed_run_is_taken_over(make_runs):
    failed, retry = make_runs(2)
    kind, config = KINDS["dedup"], gate_config()
    kind.execute(config, context(failed, step_key="gate", domain="acme.com"))
    Run.objects.filter(pk=failed).update(status="failed")
    outcome = kind.execute(config, context(retry, step_key="gate", domain="acme.com"))
    assert outcome.edge == "next"
    assert outcome.output["replaced"] == {"run": failed, "expired": False}
    assert DedupRecord.objects.get().run_id == retry


def test_a_key_held_by_a_running_run_is_a_duplicate_even_without_outputs_yet(make_runs):
    first, second = make_runs(2)
    kind, config = KINDS["dedup"], gate_config(carry=["enrich"])
    kind.execute(config, context(first, step_key="gate", domain="acme.com"))
    outcome = kind.execute(config, context(second, step_key="gate", domain="acme.com"))
    assert outcome.edge == "duplicate"
    assert outcome.output["first_status"] == "queued" and outcome.output["steps"] == {}


def test_scopes_are_separate_gates(make_runs):
    first, second = make_runs(2)
    kind = KINDS["dedup"]
    assert (
        kind.execute(gate_config(), context(first, step_key="g", domain="acme.com")).edge == "next"
    )
    outcome = kind.execute(
        gate_config(scope="invoice"), context(second, step_key="g", domain="acme.com")
    )
    assert outcome.edge == "next"


def test_an_empty_dedup_key_fails_the_step_without_retries(make_runs):
    [run_id] = make_runs(1)
    with pytest.raises(StepError) as caught:
        KINDS["dedup"].execute(gate_config(), context(run_id, step_key="gate", domain=""))
    assert caught.value.retryable is False
    assert not DedupRecord.objects.exists()


def test_a_very_long_key_is_stored_as_its_hash(make_runs):
    first, second = make_runs(2)
    text = "the same inbound message " * 40
    kind, config = KINDS["dedup"], gate_config()
    assert kind.execute(config, context(first, step_key="gate", domain=text)).edge == "next"
    outcome = kind.execute(config, context(second, step_key="gate", domain=text))
    assert outcome.edge == "duplicate" and outcome.output["key"] == text.strip()
    assert DedupRecord.objects.get().key.startswith("sha256:")
