"""The sample vendors: credits, deterministic faults, idempotent writes."""

from __future__ import annotations

import itertools

import pytest
from django.conf import settings as django_settings

from demo import vendors
from demo.models import VendorCall
from runs.tools.base import ToolError, get_tool
from tests.conftest import race
from tests.tools import tool_call

pytestmark = pytest.mark.django_db


def call(name: str, key: str = "bosun-run-1-seq-1", *, attempt: int = 1, **args):
    tool = get_tool(name)
    return tool.run(tool.Args(**args), tool_call(key, attempt=attempt))


_keys = itertools.count(1)


def outcome(name: str, *, attempt: int = 1, **args) -> str:
    """Calls the tool once as a new request (its own request key)."""
    try:
        call(name, f"bosun-run-9-seq-{next(_keys)}", attempt=attempt, **args)
    except ToolError as exc:
        return f"error retry_after={exc.retry_after}"
    return "ok"


def paid_invoice() -> dict:
    return next(
        invoice
        for n in range(1000)
        if (invoice := vendors.invoice_record(f"INV-{n:05d}"))["status"] == "paid"
    )


def test_every_tool_is_registered_with_its_side_effect_and_limit_keys():
    expected = {
        "http.get_json": ("read", ()),
        "http.post_json": ("write_idempotent", ()),
        "webhook.post": ("write_idempotent", ()),
        "crm.upsert": ("write_idempotent", ()),
        "crm.get": ("read", ()),
        "email.send": ("write_unsafe", ("email:smtp",)),
        "enrich.company": ("read", ("vendor:enrichco",)),
        "outreach.send": ("write_idempotent", ("vendor:mailco",)),
        "ticket.get": ("read", ("vendor:helpdesk",)),
        "invoice.lookup": ("read", ("vendor:billing",)),
        "refund.create_request": ("write_idempotent", ("vendor:billing",)),
    }
    for name, (side_effect, keys) in expected.items():
        tool = get_tool(name)
        assert tool.name == name and (tool.side_effect, tool.limit_keys) == (side_effect, keys)


def test_enrich_answers_the_same_profile_for_a_domain_every_time():
    first = call("enrich.company", "k1", domain="Acme-Robotics.io")
    again = call("enrich.company", "k2", domain="www.acme-robotics.io")
    assert first == again and first.domain == "acme-robotics.io" and first.name == "Acme Robotics"
    assert first.employees > 0 and first.tech_stack and first.description
    assert call("enrich.company", "k3", domain="globex.com") != first


def test_enrich_charges_credits_on_every_call(settings):
    # The vendor books the credits of the price table, the engine's one source.
    settings.BOSUN_TOOL_PRICES = {
        **settings.BOSUN_TOOL_PRICES,
        "enrich.company": {"vendor": "enrichco", "credits": 7, "usd": 0},
    }
    call("enrich.company", "k1", domain="acme.io")
    call("enrich.company", "k2", domain="acme.io")
    assert vendors.vendor_usage("enrichco") == {"calls": 2, "credits": 14, "faults": 0}
    assert vendors.vendor_usage("mailco") == {"calls": 0, "credits": 0, "faults": 0}


def test_enrich_asked_again_under_the_same_request_key_charges_once(settings):
    settings.BOSUN_TOOL_PRICES = {
        **settings.BOSUN_TOOL_PRICES,
        "enrich.company": {"vendor": "enrichco", "credits": 7, "usd": 0},
    }
    first = call("enrich.company", "k1", domain="acme.io")
    assert call("enrich.company", "k1", domain="acme.io") == first
    assert vendors.vendor_usage("enrichco") == {"calls": 1, "credits": 7, "faults": 0}


def test_planned_429s_are_free_and_the_same_on_every_run(settings):
    settings.BOSUN_VENDOR_FAULTS = {"enrichco.429": 0.5}
    domains = [f"company-{n}.com" for n in range(40)]
    first = [outcome("enrich.company", domain=d) for d in domains]
    second = [outcome("enrich.company", domain=d) for d in domains]
    assert first == second
    failed = first.count(f"error retry_after={django_settings.BOSUN_VENDOR_RETRY_AFTER_S}")
    assert 5 < failed < 35 and failed + first.count("ok") == 40
    usage = vendors.vendor_usage("enrichco")
    assert usage == {"calls": 80, "credits": (80 - 2 * failed) * 5, "faults": 2 * failed}


def test_a_planned_fault_depends_on_the_attempt_so_a_retry_can_succeed(settings):
    settings.BOSUN_VENDOR_FAULTS = {"enrichco.500": 0.5}
    domains = ["a.com", "b.com", "c.com", "d.com", "e.com"]
    by_attempt = {
        domain: [outcome("enrich.company", domain=domain, attempt=n) for n in (1, 2, 3, 4)]
        for domain in domains
    }
    assert any(len(set(outcomes)) == 2 for outcomes in by_attempt.values())
    assert by_attempt == {
        domain: [outcome("enrich.company", domain=domain, attempt=n) for n in (1, 2, 3, 4)]
        for domain in domains
    }


def test_rates_of_zero_and_one_never_and_always_fail(settings):
    settings.BOSUN_VENDOR_FAULTS = {"enrichco.429": 0.0, "helpdesk.500": 1.0}
    assert outcome("enrich.company", domain="acme.io") == "ok"
    assert outcome("ticket.get", ticket_id="T-1") == "error retry_after=None"


def test_outreach_with_the_same_key_twice_sends_once():
    args = {"to": "ada@example.com", "subject": "Hi", "body": "Hello Ada"}
    first = call("outreach.send", "bosun-run-5-seq-2", **args)
    again = call("outreach.send", "bosun-run-5-seq-2", **args)
    assert again == first and first.status == "queued"
    assert VendorCall.objects.filter(vendor="mailco").count() == 1
    other = call("outreach.send", "bosun-run-6-seq-2", **args)
    assert other.message_id != first.message_id
    assert vendors.vendor_usage("mailco") == {"calls": 2, "credits": 2, "faults": 0}


def test_a_key_reused_with_other_arguments_is_refused():
    call("outreach.send", "k", to="ada@example.com", subject="Hi", body="one")
    with pytest.raises(ToolError, match="already used with other arguments") as refused:
        call("outreach.send", "k", to="ada@example.com", subject="Hi", body="two")
    assert refused.value.retryable is False
    assert VendorCall.objects.filter(vendor="mailco").count() == 1


def test_a_send_whose_answer_is_lost_is_unknown_and_its_retry_does_not_send_again(settings):
    args = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}
    settings.BOSUN_VENDOR_FAULTS = {"mailco.timeout": 1.0}
    with pytest.raises(ToolError) as lost:
        call("outreach.send", "bosun-run-8-seq-1", **args)
    assert lost.value.outcome_unknown is True and lost.value.retryable is True
    settings.BOSUN_VENDOR_FAULTS = {}
    retried = call("outreach.send", "bosun-run-8-seq-1", attempt=2, **args)
    assert retried.status == "queued"
    assert VendorCall.objects.filter(vendor="mailco").count() == 1


# Threads race on real connections: SQLite's in-memory test database
# answers "table is locked" instead of waiting, so PostgreSQL only.
@pytest.mark.postgres_only
@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_with_one_key_send_once():
    args = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}
    results = race(8, lambda i: call("outreach.send", "bosun-run-4-seq-1", **args))
    assert all(isinstance(r, vendors.OutreachSend.Result) for r in results), results
    assert len({r.message_id for r in results}) == 1
    assert VendorCall.objects.filter(vendor="mailco").count() == 1


def test_a_ticket_is_deterministic_and_names_an_invoice_billing_knows():
    ticket = call("ticket.get", ticket_id="T-1042")
    assert call("ticket.get", ticket_id="T-1042") == ticket
    invoice = call("invoice.lookup", invoice_id=ticket.invoice_id)
    assert invoice.invoice_id in ticket.body and "@example.com" in ticket.customer_email
    assert invoice.currency in ("EUR", "USD", "GBP") and invoice.amount > 0
    assert "ignore all previous instructions" not in ticket.body


def test_a_ticket_id_starting_with_inj_carries_a_prompt_injection():
    ticket = call("ticket.get", ticket_id="INJ-1")
    assert "ignore all previous instructions" in ticket.body


def test_a_refund_request_with_the_same_key_twice_is_filed_once():
    invoice = paid_invoice()
    args = {
        "invoice_id": invoice["invoice_id"],
        "amount": invoice["amount"],
        "currency": invoice["currency"],
        "reason": "charged twice",
    }
    first = call("refund.create_request", "bosun-run-2-seq-6", **args)
    again = call("refund.create_request", "bosun-run-2-seq-6", **args)
    assert again == first and first.status == "requested" and first.amount == invoice["amount"]
    assert VendorCall.objects.filter(vendor="billing", operation="refund").count() == 1


def test_billing_refuses_a_refund_it_cannot_honour():
    invoice = paid_invoice()
    base = {"invoice_id": invoice["invoice_id"], "currency": invoice["currency"], "reason": "x"}
    other_currency = "USD" if invoice["currency"] != "USD" else "EUR"
    unpaid = next(
        inv
        for n in range(1000)
        if (inv := vendors.invoice_record(f"INV-{n:05d}"))["status"] != "paid"
    )
    attempts = [
        {**base, "amount": invoice["amount"] + 1},
        {**base, "amount": 1.0, "currency": other_currency},
        {**base, "amount": 1.0, "invoice_id": unpaid["invoice_id"], "currency": unpaid["currency"]},
    ]
    for n, args in enumerate(attempts):
        with pytest.raises(ToolError, match="billing refused") as refused:
            call("refund.create_request", f"k{n}", **args)
        assert refused.value.retryable is False
    assert not VendorCall.objects.filter(vendor="billing", idempotency_key__isnull=False).exists()


def test_a_refund_amount_with_fractions_of_a_cent_is_refused_by_the_arguments():
    tool = get_tool("refund.create_request")
    with pytest.raises(ValueError, match="two decimals"):
        tool.Args(invoice_id="INV-00001", amount=10.005, currency="EUR", reason="x")


def test_a_refused_send_does_not_use_up_its_key(settings):
    args = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}
    settings.BOSUN_VENDOR_FAULTS = {"mailco.429": 1.0}
    with pytest.raises(ToolError) as busy:
        call("outreach.send", "bosun-run-9-seq-1", **args)
    assert busy.value.retryable is True and busy.value.outcome_unknown is False
    settings.BOSUN_VENDOR_FAULTS = {}
    call("outreach.send", "bosun-run-9-seq-1", attempt=2, **args)
    assert (
        VendorCall.objects.filter(vendor="mailco", idempotency_key="bosun-run-9-seq-1").count() == 1
    )
    assert vendors.vendor_usage("mailco") == {"calls": 2, "credits": 1, "faults": 1}


def test_a_malformed_fault_plan_fails_at_start_up():
    from tests.test_settings import load_settings

    for bad in ("enrichco.429=lots", "enrichco.404=0.1", "enrichco.429=1.5", "429=0.1"):
        result = load_settings(DEBUG="1", BOSUN_DEMO="1", BOSUN_VENDOR_FAULTS=bad)
        assert result.returncode != 0 and "BOSUN_VENDOR_FAULTS entries" in result.stderr, bad
    assert (
        load_settings(
            DEBUG="1", BOSUN_DEMO="1", BOSUN_VENDOR_FAULTS="enrichco.429=0.1, mailco.timeout=1"
        ).returncode
        == 0
    )
