"""The demo loader: runs in every state, spread over the weeks, loaded once."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from django.core.management import call_command
from django.db.models import F

from approvals.models import ApprovalRequest
from demo.history import load_demo
from demo.models import VendorCall
from demo.sample_data.leads import lead_stream, week_mix
from knowledge.models import Event
from knowledge.services import database_now
from runs.models import Run, StepRun

SMALL = {"weeks": 2, "per_week": 40, "jobs": 1}


def test_the_demo_leaves_runs_in_every_state(db):
    report = load_demo(**SMALL)
    runs = Run.objects.filter(mode="live")
    assert report.started == runs.count()
    statuses = set(runs.values_list("status", flat=True))
    assert statuses == {"succeeded", "waiting", "failed", "cancelled", "stopped", "queued"}
    outcomes = set(runs.filter(status="succeeded").values_list("outcome", flat=True))
    assert {"nurture", "duplicate", "paused_account", "outreach_sent", "needs_company"} <= outcomes
    assert ApprovalRequest.objects.filter(status="pending").exists()
    assert runs.filter(status="waiting", wait_reason="approval").exists()
    failed = runs.filter(status="failed")
    assert failed.count() == 3 and not failed.filter(dead_lettered_at=None).exists()
    assert failed.filter(error__contains="enrichco answered 429").count() == 2
    assert runs.filter(status="cancelled").count() == 2
    # Each company is bought once: another contact there (or the same person
    # under another address, a contact of its own), and the corrected lead
    # of a cancelled one, are enriched from the step cache.
    enriched = StepRun.objects.filter(step_key="enrich", status="succeeded", run__mode="live")
    bought = VendorCall.objects.filter(vendor="enrichco", credits__gt=0)
    assert bought.count() == len(set(bought.values_list("subject", flat=True)))
    assert enriched.filter(cache_hit=True).count() == enriched.count() - bought.count() > 0
    corrected = Run.objects.get(idempotency_key="demo:corrected-contact")
    assert enriched.get(run=corrected).cache_hit
    stopped = runs.get(status="stopped")
    assert stopped.stop_reason == "budget" and "wall_s" in stopped.error
    # It stopped before sending: nothing went to that company.
    assert not VendorCall.objects.filter(
        vendor="mailco", subject__endswith="fabrikam-cloud.io"
    ).exists()


def test_the_demo_history_is_spread_over_the_weeks(db):
    load_demo(**SMALL)
    now = database_now()
    created = sorted(Run.objects.values_list("created_at", flat=True))
    assert created[0] < now - timedelta(days=12) and created[-1] > now - timedelta(days=1)
    weeks = {(now - at).days // 7 for at in created}
    assert weeks == {0, 1}
    assert not Run.objects.filter(finished_at__lt=F("created_at")).exists()
    assert not StepRun.objects.filter(started_at__lt=F("run__created_at")).exists()
    # A reviewed run finished after its review, hours later.
    reviewed = Run.objects.filter(outcome="outreach_sent", mode="live").first()
    assert reviewed.finished_at - reviewed.created_at > timedelta(minutes=20)


def test_the_paused_account_is_never_contacted(db):
    load_demo(**SMALL)
    paused = Event.objects.get(type__name="outreach.paused")
    assert paused.reason == "founder request" and paused.valid_until.year == 2027
    domain = paused.entity.key
    assert not VendorCall.objects.filter(vendor="mailco", subject__endswith=domain).exists()
    assert not VendorCall.objects.filter(vendor="enrichco", subject=domain).exists()


def test_no_legitimate_call_of_the_sample_workflows_is_refused(db):
    load_demo(**SMALL)
    sends = StepRun.objects.filter(step_key__in=["send", "refund"])
    assert sends.filter(status="succeeded").exclude(edge="refused").count() > 0
    assert not StepRun.objects.filter(error_type__startswith="refused").exists()
    # A refusal is a person's rejection (of a ticket that tried to instruct
    # the agent), never the gate turning down a legitimate call.
    codes = {step.output["code"] for step in StepRun.objects.filter(edge="refused")}
    assert codes <= {"approval_rejected"}
    # Every lead and ticket run read untrusted content, yet each send went
    # through its review and each refund up to the limit on its own.
    read = StepRun.objects.filter(step_key="ticket", status="succeeded").values("run_id")
    assert read.exists() and not Run.objects.filter(pk__in=read, tainted=False).exists()


def test_loading_twice_duplicates_nothing(db):
    load_demo(**SMALL)
    counts = (
        Run.objects.count(),
        StepRun.objects.count(),
        VendorCall.objects.count(),
        Event.objects.count(),
        ApprovalRequest.objects.count(),
    )
    again = load_demo(**SMALL)
    assert again.started == 0 and again.existing > 0
    assert counts == (
        Run.objects.count(),
        StepRun.objects.count(),
        VendorCall.objects.count(),
        Event.objects.count(),
        ApprovalRequest.objects.count(),
    )


def test_the_command_reports_what_it_loaded(db):
    out = StringIO()
    call_command("load_samples", "--weeks", "1", "--per-week", "20", stdout=out)
    text = out.getvalue()
    assert "run(s) started" in text and "answered by an existing run" in text
    assert "runs by status:" in text and "waiting for review" in text
    from approvals.models import SampleReview

    # Last week's sample is drawn (when the week holds finished runs), once.
    assert "weekly sample" in text
    assert SampleReview.objects.count() == text.split("weekly sample")[1].count(" runs)")
    out = StringIO()
    call_command("load_samples", "--no-demo", stdout=out)
    assert "workflow lead-qualification v1" in out.getvalue()


def test_the_stream_has_the_overlap_it_promises():
    records = lead_stream()
    assert len(records) == 2000
    companies = {r.company for r in records}
    assert len(companies) == 1176 and round(len(records) / len(companies), 2) == 1.70
    retries = [r for r in records if r.kind == "retry"]
    keys = {r.key for r in records if r.kind != "retry"}
    assert len(retries) == 4 * week_mix()["retry"] and all(r.key in keys for r in retries)
    assert lead_stream() == records  # deterministic
