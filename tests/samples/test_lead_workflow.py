"""The lead qualification sample: every route, the dedup gate, paused
accounts, the enrichment cache, entry validation. (What each end does with
the contact's dedup key, free-mail leads and second contacts:
test_lead_dedup.py.)"""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from demo.models import VendorCall
from knowledge import services as knowledge
from knowledge.models import DedupRecord, Event
from runs import engine
from runs.models import Run, StepCacheEntry, StepRun
from tests.conftest import drive
from tests.samples.conftest import ARCHIVE, NURTURE, OUTREACH, lead, run_of

LEADS = "lead-qualification"


def enrichments() -> int:
    return VendorCall.objects.filter(vendor="enrichco", credits__gt=0).count()


def steps_of(run: Run) -> list[str]:
    return list(run.step_runs.filter(status="succeeded").values_list("step_key", flat=True))


def test_both_samples_publish_with_their_policies(samples):
    assert set(samples) == {"lead-qualification", "support-refund"}
    for version in samples.values():
        assert version.number == 1
        assert version.workflow.policy is not None and version.workflow.role is not None
    assert samples[LEADS].definition["steps"]["score"]["kind"] == "score"


def test_installing_again_publishes_nothing_new(samples):
    from demo.samples import install_samples

    again = install_samples()
    assert {slug: v.pk for slug, v in again.items()} == {s: v.pk for s, v in samples.items()}


def test_installing_again_keeps_an_operators_edits_to_policy_and_rubric(samples):
    from decimal import Decimal

    from demo.samples import install_samples
    from policies.models import Policy, Rubric
    from policies.rubrics import save_rubric
    from policies.services import save_policy

    policy = Policy.objects.get(name=LEADS)
    policy.max_cost_usd = Decimal("0.50")
    save_policy(policy=policy, by="olga")
    rubric = Rubric.objects.get(name="icp")
    rubric.routes = [{"min": 80, "route": "outreach"}, *rubric.routes[1:]]
    save_rubric(rubric=rubric, by="mia")
    install_samples()
    assert Policy.objects.get(name=LEADS).max_cost_usd == Decimal("0.50")
    assert Rubric.objects.get(name="icp").routes[0] == {"min": 80, "route": "outreach"}


def test_a_good_fit_is_drafted_reviewed_sent_and_recorded(samples):
    run = run_of(LEADS, OUTREACH)
    assert (run.status, run.wait_reason) == ("waiting", "approval")
    assert steps_of(run) == [
        "normalize",
        "company",
        "paused",
        "dedup",
        "enrich",
        "score",
        "draft",
    ]
    score = StepRun.objects.get(run=run, step_key="score").output
    assert score["route"] == "outreach" and score["total"] >= 70
    review = ApprovalRequest.objects.get(run=run)
    assert review.reason_code == "outbound_email"
    assert set(review.draft) == {"to", "subject", "body"}
    assert "Acme Robotics" in review.draft["subject"]
    assert review.draft["to"] == "dana@acme-robotics.example"
    assert (review.queue, review.on_timeout) == ("reviewer", "reject")

    engine.decide_approval(approval_id=review.pk, approve=True, actor_label="riley")
    run = drive(run.pk)

    assert (run.status, run.outcome, run.success) == ("succeeded", "outreach_sent", True)
    sent = VendorCall.objects.get(vendor="mailco")
    assert sent.request["to"] == "dana@acme-robotics.example"
    assert sent.request["subject"] == review.draft["subject"]
    event = Event.objects.get(type__name="outreach.sent", entity__key="acme-robotics.example")
    assert event.source_run_id == run.pk
    assert event.payload["message_id"] == sent.response["message_id"]


def test_an_edited_draft_is_what_goes_out(samples):
    run = run_of(LEADS, OUTREACH)
    review = ApprovalRequest.objects.get(run=run)
    edited = {**review.draft, "subject": "A question about your inbound leads"}
    engine.decide_approval(
        approval_id=review.pk, approve=True, actor_label="riley", edited_draft=edited
    )
    drive(run.pk)
    assert VendorCall.objects.get(vendor="mailco").request["subject"] == edited["subject"]


def test_a_rejected_draft_sends_nothing(samples):
    run = run_of(LEADS, OUTREACH)
    review = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=review.pk, approve=False, reason="too generic")
    run = drive(run.pk)
    assert (run.outcome, run.success) == ("outreach_rejected", False)
    assert not VendorCall.objects.filter(vendor="mailco").exists()
    assert not Event.objects.filter(type__name="outreach.sent").exists()


@pytest.mark.parametrize(("record", "outcome"), [(NURTURE, "nurture"), (ARCHIVE, "archive")])
def test_middling_and_poor_fits_end_without_outreach(samples, record, outcome):
    run = run_of(LEADS, record)
    assert (run.status, run.outcome) == ("succeeded", outcome)
    assert StepRun.objects.get(run=run, step_key="score").output["route"] == outcome
    assert enrichments() == 1
    assert not ApprovalRequest.objects.exists()
    assert not VendorCall.objects.filter(vendor="mailco").exists()


def test_a_paused_account_is_neither_enriched_nor_contacted(samples):
    account = knowledge.upsert_entity(type="account", key="acme-robotics.example")
    knowledge.record_event(
        entity=account,
        type="outreach.paused",
        payload={"until": "2027-07-01"},
        reason="founder request",
        actor_label="ana",
        valid_until=knowledge.database_now().replace(year=2027, month=7, day=1),
    )
    run = run_of(LEADS, OUTREACH)
    assert (run.status, run.outcome) == ("succeeded", "paused_account")
    check = StepRun.objects.get(run=run, step_key="paused").output
    assert check["found"] and check["events"][0]["reason"] == "founder request"
    assert enrichments() == 0
    assert not VendorCall.objects.filter(vendor="mailco").exists()
    assert not ApprovalRequest.objects.exists()
    assert "dedup" not in steps_of(run) and not DedupRecord.objects.exists()  # no key taken


def test_the_same_contact_from_another_source_takes_the_duplicate_edge(samples):
    first = run_of(LEADS, NURTURE)
    again = {
        **NURTURE,
        "company": "UMBRELLA",
        "website": "http://WWW.UMBRELLA.EXAMPLE/pricing",
        "email": "Dana@Umbrella.Example",
        "source": "linkedin_ads",
    }
    second = run_of(LEADS, again)
    assert (second.status, second.outcome) == ("succeeded", "duplicate")
    dedup = StepRun.objects.get(run=second, step_key="dedup")
    assert dedup.edge == "duplicate" and dedup.output["first_run"] == first.pk
    assert dedup.output["steps"]["score"]["route"] == "nurture"  # the first run's result, reused
    assert "enrich" not in steps_of(second)
    assert enrichments() == 1


def test_a_retried_submission_is_the_same_run(samples):
    first = engine.start_run(workflow=LEADS, input=ARCHIVE, idempotency_key="webform:42")
    again = engine.start_run(workflow=LEADS, input=ARCHIVE, idempotency_key="webform:42")
    assert not again.created and again.run.pk == first.run.pk
    assert Run.objects.count() == 1


def test_a_lead_whose_first_run_was_cancelled_is_not_enriched_again(samples):
    first = run_of(LEADS, OUTREACH)  # enriched, waiting for review
    engine.cancel_run(run_id=first.pk, reason="entered by mistake")
    second = run_of(LEADS, {**OUTREACH, "source": "partner"})
    # The dead run's dedup record is taken over; the enrichment comes from the cache.
    assert (second.status, second.wait_reason) == ("waiting", "approval")
    assert StepRun.objects.get(run=second, step_key="enrich").cache_hit
    assert StepCacheEntry.objects.filter(step_key="enrich", filled=True).count() == 1
    assert enrichments() == 1


def test_an_invalid_lead_is_refused_naming_the_field(samples):
    with pytest.raises(engine.InvalidInput) as refused:
        engine.start_run(workflow=LEADS, input=lead("Acme", "acme.example", "CEO", email="nope"))
    assert set(refused.value.fields) == {"email"}
    with pytest.raises(engine.InvalidInput) as refused:
        engine.start_run(workflow=LEADS, input={"email": "a@b.example"})
    assert set(refused.value.fields) == {"company"}


def test_a_website_that_is_no_domain_fails_the_run_without_paying(samples):
    run = run_of(LEADS, lead("Test", "example.net", "QA", website="http://localhost:8080/form"))
    assert run.status == "failed" and run.dead_lettered_at is not None
    assert "must be a bare domain" in run.error
    assert enrichments() == 0
