"""Tool prices: every step records its vendor spend, runs total it, budgets
cap it before the vendor is called, and answers that were not bought again
record what they spared."""

from __future__ import annotations

from decimal import Decimal

import pytest

from demo.models import VendorCall
from demo.vendors import vendor_usage
from policies.models import Policy
from policies.services import rules_for, save_policy
from runs import engine
from runs.engine import store
from runs.engine.errors import LeaseLost
from runs.models import StepRun
from tests.clock import lapse_lease
from tests.conftest import chain, drive
from tests.testapp.models import Execution

pytestmark = pytest.mark.django_db

END = {"key": "done", "kind": "end", "config": {"outcome": "enriched"}}
# The demo's table: 5 enrichco credits a call, $0.02 a credit.
CALL_USD = Decimal("0.10")


def _enrich(key: str, domain: str, **step) -> dict:
    return {
        "key": key,
        "kind": "tool",
        "config": {"tool": "enrich.company", "args": {"domain": domain}},
        **step,
    }


def _three_enrichments(make_workflow, **policy):
    steps = chain(
        _enrich("one", "acme.io"),
        _enrich("two", "globex.com"),
        _enrich("three", "initech.com"),
        END,
    )
    return make_workflow(steps, policy={"max_steps": 50, **policy})


def test_a_paid_call_is_recorded_on_its_step_and_totalled_on_the_run(make_workflow):
    version = make_workflow(chain(_enrich("enrich", "acme.io"), END))
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "succeeded"
    step = StepRun.objects.get(run=run, step_key="enrich")
    assert (step.vendor, step.credits, step.vendor_usd) == ("enrichco", 5, CALL_USD)
    assert (step.model_usd, step.cost_usd) == (0, CALL_USD)
    assert run.credits == {"enrichco": 5} == {"enrichco": vendor_usage("enrichco")["credits"]}
    assert (run.vendor_usd, run.model_usd, run.cost_usd) == (CALL_USD, 0, CALL_USD)


def test_run_totals_add_up_over_several_calls_in_the_checkpoint(make_workflow):
    version = _three_enrichments(make_workflow)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.credits == {"enrichco": 15} and run.vendor_usd == 3 * CALL_USD
    assert run.cost_usd == sum(s.cost_usd for s in run.step_runs.all())


def test_a_credit_cap_stops_the_run_before_the_call_that_would_exceed_it(make_workflow):
    version = _three_enrichments(make_workflow, max_credits={"enrichco": 12})
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert "credits" in run.error and "three" in run.error
    # Two calls fit in 12 credits; the third (5 more) never reached the vendor.
    assert VendorCall.objects.filter(vendor="enrichco").count() == 2
    assert run.credits == {"enrichco": 10}
    last = StepRun.objects.filter(run=run).order_by("-seq").first()
    assert (last.step_key, last.error_type, last.credits) == ("three", "budget", 0)
    assert engine.advance_run(run.pk) is engine.Advance.NOT_CLAIMED
    assert VendorCall.objects.filter(vendor="enrichco").count() == 2


def test_a_usd_cap_counts_vendor_spend_and_stops_before_the_call_over_it(make_workflow):
    version = _three_enrichments(make_workflow, max_cost_usd=Decimal("0.25"))
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert "cost_usd" in run.error
    assert VendorCall.objects.filter(vendor="enrichco").count() == 2
    # A price known before the call keeps spend within the cap itself.
    assert run.cost_usd == run.vendor_usd == 2 * CALL_USD <= Decimal("0.25")


def test_a_credit_cap_for_another_vendor_does_not_stop_the_run(make_workflow):
    version = _three_enrichments(make_workflow, max_credits={"mailco": 0})
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert run.status == "succeeded" and run.credits == {"enrichco": 15}


def test_a_cost_reported_in_the_answer_is_what_the_step_records(make_workflow):
    steps = chain(
        {
            "key": "rows",
            "kind": "tool",
            "config": {"tool": "test.metered", "args": {"limit": 40, "found": 7}},
        },
        END,
    )
    version = make_workflow(steps)
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    step = StepRun.objects.get(run=run, step_key="rows")
    assert (step.vendor, step.credits, step.vendor_usd) == ("meterco", 7, Decimal("0.07"))
    assert run.credits == {"meterco": 7}


def test_a_credit_cap_is_checked_with_the_price_known_before_the_call(make_workflow):
    # The call may cost up to 40 credits: over a cap of 30, it is not made,
    # even though the vendor would have found only 7 rows.
    steps = chain(
        {
            "key": "rows",
            "kind": "tool",
            "config": {"tool": "test.metered", "args": {"limit": 40, "found": 7}},
        },
        END,
    )
    version = make_workflow(steps, policy={"max_credits": {"meterco": 30}})
    run = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert Execution.objects.filter(run_id=run.pk).count() == 0


def test_a_cache_hit_costs_nothing_and_records_the_credits_it_saved(make_workflow):
    version = make_workflow(chain(_enrich("enrich", "acme.io", cache_ttl_s=3600), END))
    first = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    second = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    hit = StepRun.objects.get(run=second, step_key="enrich")
    assert hit.cache_hit and (hit.credits, hit.vendor_usd, hit.cost_usd) == (0, 0, 0)
    assert (hit.vendor, hit.credits_saved, hit.vendor_saved_usd) == ("enrichco", 5, CALL_USD)
    assert hit.cost_saved_usd == CALL_USD
    assert (second.credits, second.cost_usd) == ({}, 0) and first.credits == {"enrichco": 5}
    assert vendor_usage("enrichco")["credits"] == 5


def test_a_cache_hit_is_not_refused_by_a_spent_credit_cap(make_workflow):
    version = make_workflow(
        chain(_enrich("enrich", "acme.io", cache_ttl_s=3600), END),
        policy={"max_credits": {"enrichco": 5}},
    )
    drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    again = drive(engine.start_run(workflow=version.workflow, input={}).run.pk)
    assert again.status == "succeeded" and VendorCall.objects.count() == 1


def test_a_call_bought_before_a_crash_is_charged_once_and_not_bought_again(
    make_workflow, monkeypatch
):
    version = make_workflow(chain(_enrich("enrich", "acme.io"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    real = store.checkpoint
    lost = []

    def lose_the_first_step_record(state, update, record):
        if record is not None and record["step_key"] == "enrich" and not lost:
            lost.append(record)
            raise LeaseLost(state.run_id)  # the worker is gone before its checkpoint
        return real(state, update, record)

    monkeypatch.setattr(store, "checkpoint", lose_the_first_step_record)
    assert engine.advance_run(run_id) is engine.Advance.LEASE_LOST
    assert lost and lost[0]["credits"] == 5  # bought, never booked
    lapse_lease(run_id)
    run = drive(run_id)
    assert run.status == "succeeded"
    assert VendorCall.objects.filter(vendor="enrichco").count() == 1
    step = StepRun.objects.get(run=run, step_key="enrich")
    # The ledger's answer books the charge the dead attempt never did, once,
    # and records the purchase it did not repeat.
    assert (step.credits, step.credits_saved, step.vendor_usd) == (5, 5, CALL_USD)
    assert run.credits == {"enrichco": 5} and run.cost_usd == CALL_USD
    assert run.tool_calls == 0  # the ledger answered: no new call


def test_a_retried_step_answered_from_the_ledger_is_not_charged_twice(make_workflow, monkeypatch):
    version = make_workflow(chain(_enrich("enrich", "acme.io"), END))
    run_id = engine.start_run(workflow=version.workflow, input={}).run.pk
    real = store.checkpoint

    def fail_after_booking(state, update, record):
        # The first attempt is checkpointed as a failure that still books
        # what it paid (as the worker does when a step fails after a call),
        # and is retried.
        if record is not None and record["step_key"] == "enrich" and record["attempt"] == 1:
            record.update(status="failed", error="failed after the call", error_type="transient")
            update = (
                store.Update()
                .add("vendor_usd", str(record["vendor_usd"]))
                .add("cost_usd", str(record["cost_usd"]))
                .add_credits(record["vendor"], record["credits"])
                .value("status", "waiting")
                .value("wait_reason", "retry")
                .set("attempt", "attempt + 1")
                .release()
                .after("not_before", 0)
                .after("ring_at", 0)
            )
        return real(state, update, record)

    monkeypatch.setattr(store, "checkpoint", fail_after_booking)
    run = drive(run_id)
    assert run.status == "succeeded"
    attempts = list(StepRun.objects.filter(run=run, step_key="enrich").order_by("attempt"))
    assert [(s.status, s.credits, s.credits_saved) for s in attempts] == [
        ("failed", 5, 0),
        ("succeeded", 0, 5),
    ]
    assert run.credits == {"enrichco": 5} and run.vendor_usd == CALL_USD
    assert VendorCall.objects.filter(vendor="enrichco").count() == 1


def test_credit_caps_are_versioned_with_the_policy(db):
    policy = Policy(name="caps", max_credits={"enrichco": 50})
    first = save_policy(policy=policy, by="test")
    policy.max_credits = {"enrichco": 20, "mailco": 3}
    second = save_policy(policy=policy, by="test")
    assert rules_for(None, first.pk).budget.max_credits == {"enrichco": 50}
    assert rules_for(None, second.pk).budget.max_credits == {"enrichco": 20, "mailco": 3}


@pytest.mark.parametrize(
    ("caps", "problem"),
    [
        ({"enrichc0": 5}, "no vendor of that name"),
        ({"enrichco": -1}, "a whole number"),
        ({"enrichco": "5"}, "a whole number"),
        (["enrichco"], "must be an object"),
    ],
)
def test_a_credit_cap_naming_no_priced_vendor_is_refused(db, caps, problem):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match=problem):
        save_policy(policy=Policy(name="caps", max_credits=caps), by="test")


def test_a_policy_version_saved_before_credit_caps_caps_no_credits(db):
    from policies.models import PolicyVersion

    version = save_policy(policy=Policy(name="old"), by="test")
    snapshot = {k: v for k, v in version.snapshot.items() if k != "max_credits"}
    PolicyVersion.objects.filter(pk=version.pk).update(snapshot=snapshot)
    rules_for.cache_clear()
    assert rules_for(None, version.pk).budget.max_credits == {}
