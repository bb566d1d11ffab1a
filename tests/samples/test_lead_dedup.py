"""The lead sample's dedup: guards before the key, one decision per contact,
how long each end keeps the key, company facts shared, free-mail leads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from approvals.models import ApprovalRequest
from demo.models import VendorCall
from knowledge import services as knowledge
from knowledge.models import DedupRecord, Entity
from runs import engine
from runs.models import Run, StepRun
from tests.clock import age_dedup_key
from tests.conftest import drive
from tests.samples.conftest import ARCHIVE, NURTURE, OUTREACH, run_of

LEADS = "lead-qualification"
SCOPE = "lead-contact"
DANA = "dana@acme-robotics.example"


def enrichments(domain: str | None = None) -> int:
    bought = VendorCall.objects.filter(vendor="enrichco", credits__gt=0)
    return (bought if domain is None else bought.filter(subject=domain)).count()


def steps_of(run: Run) -> list[str]:
    return list(run.step_runs.filter(status="succeeded").values_list("step_key", flat=True))


def score_of(run: Run) -> dict:
    return StepRun.objects.get(run=run, step_key="score").output


def reject(run: Run) -> Run:
    review = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=review.pk, approve=False, reason="too generic")
    return drive(run.pk)


def test_a_lead_that_arrives_after_its_accounts_pause_ended_is_processed(samples):
    account = knowledge.upsert_entity(type="account", key="acme-robotics.example")
    now = knowledge.database_now()
    pause = knowledge.record_event(
        entity=account,
        type="outreach.paused",
        payload={"until": "2027-07-01"},
        reason="founder request",
        actor_label="ana",
        valid_until=now + timedelta(days=200),
    )
    held = run_of(LEADS, OUTREACH)
    assert held.outcome == "paused_account"
    # The founder is back early: the pause ends.
    knowledge.supersede_event(
        event=pause,
        payload={},
        reason="founder is back",
        actor_label="ana",
        valid_from=now - timedelta(days=2),
        valid_until=now - timedelta(days=1),
    )
    later = run_of(LEADS, {**OUTREACH, "source": "partner"})
    assert (later.status, later.wait_reason) == ("waiting", "approval")  # not a duplicate
    assert StepRun.objects.get(run=later, step_key="dedup").edge == "next"
    assert enrichments() == 1


def test_a_rejected_contact_comes_back_after_thirty_days(samples):
    rejected = reject(run_of(LEADS, OUTREACH))
    assert rejected.outcome == "outreach_rejected"
    record = DedupRecord.objects.get(scope=SCOPE, key=DANA)
    assert record.expires_at - record.first_seen_at == timedelta(days=30)

    age_dedup_key(SCOPE, DANA, days=29)
    within = run_of(LEADS, {**OUTREACH, "source": "partner"})
    assert within.outcome == "duplicate"

    age_dedup_key(SCOPE, DANA, days=2)  # 31 days since it was first seen
    after = run_of(LEADS, {**OUTREACH, "source": "webinar"})
    assert (after.status, after.wait_reason) == ("waiting", "approval")
    gate = StepRun.objects.get(run=after, step_key="dedup").output
    assert gate["replaced"] == {"run": rejected.pk, "expired": True}


@pytest.mark.parametrize(
    ("record", "outcome", "days"), [(NURTURE, "nurture", 90), (ARCHIVE, "archive", 30)]
)
def test_each_end_keeps_the_contacts_key_its_own_time(samples, record, outcome, days):
    run = run_of(LEADS, record)
    assert run.outcome == outcome
    kept = DedupRecord.objects.get(scope=SCOPE, run=run)
    assert kept.expires_at - kept.first_seen_at == timedelta(days=days)


def test_a_sent_email_keeps_the_contacts_key_ninety_days(samples):
    run = run_of(LEADS, OUTREACH)
    review = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=review.pk, approve=True, actor_label="riley")
    assert drive(run.pk).outcome == "outreach_sent"
    kept = DedupRecord.objects.get(scope=SCOPE, run=run)
    assert kept.expires_at - kept.first_seen_at == timedelta(days=90)


def test_a_second_contact_is_scored_on_its_own_and_the_company_is_enriched_once(samples):
    engineer = run_of(LEADS, {**OUTREACH, "title": "Engineer"})
    vp = run_of(LEADS, {**OUTREACH, "email": "li@acme-robotics.example", "first_name": "Li"})
    assert engineer.outcome == "nurture" and score_of(engineer)["route"] == "nurture"
    assert (vp.status, vp.wait_reason) == ("waiting", "approval")
    assert score_of(vp)["route"] == "outreach"
    assert score_of(vp)["total"] > score_of(engineer)["total"]
    # The company's facts are shared: bought for the first contact, read
    # from the step cache (keyed by the domain) for the second.
    assert enrichments("acme-robotics.example") == 1
    assert StepRun.objects.get(run=vp, step_key="enrich").cache_hit
    assert ApprovalRequest.objects.get(run=vp).draft["to"] == "li@acme-robotics.example"


def test_two_free_mail_leads_of_different_companies_are_each_processed_none_as_gmail(samples):
    leads = [
        {"company": "Initech", "email": "sam.i@gmail.com", "title": "CEO"},
        {"company": "Hooli", "email": "gavin.h@gmail.com", "title": "Chief Revenue Officer"},
    ]
    runs = [run_of(LEADS, record) for record in leads]
    for run in runs:
        # Nothing names the company: it ends for a person to look up, before
        # anything is paid, and is nobody's duplicate.
        assert (run.status, run.outcome, run.success) == ("succeeded", "needs_company", False)
        normalized = StepRun.objects.get(run=run, step_key="normalize").output
        assert (normalized["domain"], normalized["domain_source"]) == ("", "none")
        assert normalized["mailbox"] == "free_mail"
        assert steps_of(run) == ["normalize", "company", "needs_company"]
    assert enrichments() == 0
    assert not VendorCall.objects.filter(subject="gmail.com").exists()
    assert not DedupRecord.objects.exists()
    assert not Entity.objects.filter(key="gmail.com").exists()


def lead_at_gmail(company: str, local: str, website: str) -> dict:
    return {
        "company": company,
        "email": f"{local}@gmail.com",
        "website": website,
        "title": "VP Sales",
    }


def test_gmail_contacts_with_company_websites_are_enriched_by_the_website(samples):
    acme = run_of(LEADS, lead_at_gmail("Acme Robotics", "dana", "https://acme-robotics.example"))
    globex = run_of(LEADS, lead_at_gmail("Globex", "li", "globex.example"))
    assert acme.outcome != "duplicate" and globex.outcome != "duplicate"
    for run, domain in [(acme, "acme-robotics.example"), (globex, "globex.example")]:
        normalized = StepRun.objects.get(run=run, step_key="normalize").output
        assert (normalized["domain"], normalized["domain_source"]) == (domain, "website")
        assert StepRun.objects.get(run=run, step_key="score").output["route"]
    assert enrichments("acme-robotics.example") == enrichments("globex.example") == 1
    assert not VendorCall.objects.filter(subject="gmail.com").exists()
    keys = set(DedupRecord.objects.values_list("key", flat=True))
    assert keys == {"dana@gmail.com", "li@gmail.com"}  # each contact its own key


def test_one_person_writing_from_another_address_is_one_contact(samples):
    first = run_of(LEADS, {**OUTREACH, "last_name": "Smith"})
    again = run_of(
        LEADS, {**OUTREACH, "last_name": "Smith", "email": "dana.smith@acme-robotics.example"}
    )
    colleague = run_of(
        LEADS,
        {**OUTREACH, "first_name": "Sam", "last_name": "Lee", "email": "sam@acme-robotics.example"},
    )
    assert first.wait_reason == "approval"
    assert (again.status, again.outcome) == ("succeeded", "duplicate")
    assert colleague.wait_reason == "approval"  # a colleague is decided on their own
    assert enrichments("acme-robotics.example") == 1
