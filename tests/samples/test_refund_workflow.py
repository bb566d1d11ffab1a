"""The support refund sample: automatic below the limit, reviewed above it."""

from __future__ import annotations

import pytest

from approvals.models import ApprovalRequest
from demo.models import VendorCall
from demo.vendors import invoice_record, ticket_record
from runs import engine
from runs.models import StepRun
from tests.conftest import drive
from tests.samples.conftest import run_of

REFUNDS = "support-refund"


def refunds() -> list[VendorCall]:
    return list(VendorCall.objects.filter(vendor="billing", operation="refund"))


def invoice_of(ticket_id: str) -> dict:
    return invoice_record(ticket_record(ticket_id)["invoice_id"])


def test_a_refund_below_the_limit_is_filed_without_review(samples):
    invoice = invoice_of("T-13")  # "Charged twice", a paid invoice of 19 GBP
    assert invoice["status"] == "paid" and invoice["amount"] <= 100
    run = run_of(REFUNDS, {"ticket_id": "T-13"})
    assert (run.status, run.outcome, run.success) == ("succeeded", "refunded", True)
    assert not ApprovalRequest.objects.exists()
    [refund] = refunds()
    assert refund.request["amount"] == invoice["amount"]
    assert refund.request["currency"] == invoice["currency"]


def test_a_refund_above_the_limit_waits_for_a_reviewer_and_is_escalated(samples):
    invoice = invoice_of("T-9")  # "Charged twice", a paid invoice of 480 USD
    assert invoice["status"] == "paid" and invoice["amount"] > 100
    run = run_of(REFUNDS, {"ticket_id": "T-9"})
    assert (run.status, run.wait_reason) == ("waiting", "approval")
    assert refunds() == []  # nothing filed before a person approves
    request = ApprovalRequest.objects.get(run=run)
    assert request.kind == "tool_call"
    assert request.reason_code == "refund_over_limit"
    assert request.draft["tool"] == "refund.create_request"
    assert request.draft["args"]["amount"] == invoice["amount"]

    engine.decide_approval(approval_id=request.pk, approve=True, actor_label="morgan")
    run = drive(run.pk)
    assert (run.status, run.outcome, run.success) == ("succeeded", "escalated", True)
    assert len(refunds()) == 1


def test_a_rejected_refund_is_not_filed(samples):
    run = run_of(REFUNDS, {"ticket_id": "T-8"})  # 480 EUR
    request = ApprovalRequest.objects.get(run=run)
    engine.decide_approval(approval_id=request.pk, approve=False, reason="chargeback already")
    run = drive(run.pk)
    assert (run.outcome, run.success) == ("refund_refused", False)
    assert refunds() == []


@pytest.mark.parametrize(
    ("ticket", "outcome"),
    [("T-1", "no_refund_due"), ("T-3", "invoice_not_paid")],
)
def test_tickets_that_owe_no_refund_file_none(samples, ticket, outcome):
    run = run_of(REFUNDS, {"ticket_id": ticket})
    assert (run.status, run.outcome) == ("succeeded", outcome)
    assert refunds() == []


def test_a_partial_refund_is_a_share_of_the_invoice(samples):
    invoice = invoice_of("T-26")  # "Unused seats" on a paid 249 EUR invoice
    run = run_of(REFUNDS, {"ticket_id": "T-26"})
    classify = StepRun.objects.get(run=run, step_key="classify").output
    assert classify["category"] == "partial_refund"
    assert classify["amount"] == round(invoice["amount"] * 0.3, 2) <= 100
    assert run.outcome == "refunded"


def test_a_ticket_that_instructs_the_agent_taints_the_run_and_needs_review(samples):
    run = run_of(REFUNDS, {"ticket_id": "INJ-1"})
    assert run.tainted and "ignore_instructions" in run.taint_signals
    assert (run.status, run.wait_reason) == ("waiting", "approval")
    request = ApprovalRequest.objects.get(run=run)
    assert (request.kind, request.status) == ("tool_call", "pending")
    assert refunds() == []
