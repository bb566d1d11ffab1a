"""Paid reads: never bought twice, across crashes, runs and workflows.

Counted at the vendor (`demo.models.VendorCall`): enrichco charges per
call and honours request keys, as enrichment APIs with request keys do.
"""

from __future__ import annotations

import pytest
from django.db.models import Sum

from demo import vendors
from demo.models import VendorCall
from policies.models import AnswerReuse
from runs import engine
from runs.engine import gate
from runs.models import StepRun, ToolAnswer, ToolCallRecord
from tests.clock import expire_answer, lapse_answer_claim, lapse_lease, let_wait_pass
from tests.conftest import chain, drive

pytestmark = pytest.mark.django_db
TOOL = "enrich.company"
ACME = "company:acme-robotics.io"
ENRICH = {
    "key": "enrich",
    "kind": "tool",
    "config": {"tool": TOOL, "args": {"domain": "{{ input.domain }}"}},
}
END = {"key": "done", "kind": "end", "config": {"outcome": "done"}}


class Killed(BaseException):
    """The worker process dies here."""


def _charged() -> tuple[int, int]:
    calls = VendorCall.objects.filter(vendor="enrichco")
    return calls.count(), calls.aggregate(total=Sum("credits"))["total"] or 0


def _kill_after_the_vendor_charged(
    monkeypatch, *, tool=vendors.EnrichCompany, close_runs: bool = True
) -> None:
    """The next call of `tool` reaches the vendor, is charged, and the
    worker dies before the answer is checkpointed (with or without the
    ledger's own close running on the way down)."""
    original = tool.run

    def dies(self, args, call):
        original(self, args, call)
        monkeypatch.setattr(tool, "run", original)
        raise Killed

    monkeypatch.setattr(tool, "run", dies)
    if not close_runs:
        real_close = gate._close

        def no_close(*args, **kwargs):
            monkeypatch.setattr(gate, "_close", real_close)
            raise Killed

        monkeypatch.setattr(gate, "_close", no_close)


def _start(version, domain="acme-robotics.io"):
    return engine.start_run(workflow=version.workflow, input={"domain": domain}).run


@pytest.mark.parametrize("close_runs", [True, False], ids=["closed-unknown", "left-started"])
def test_a_worker_killed_after_the_vendor_charged_does_not_pay_again(
    make_workflow, monkeypatch, close_runs
):
    version = make_workflow(chain(ENRICH, END))
    run = _start(version)
    _kill_after_the_vendor_charged(monkeypatch, close_runs=close_runs)
    with pytest.raises(Killed):
        drive(run.pk)
    assert _charged() == (1, 5)
    lapse_lease(run.pk)
    lapse_answer_claim(TOOL, ACME)
    run = drive(run.pk)
    assert run.outcome == "done"
    assert _charged() == (1, 5)  # asked again under the same request key: free
    assert ToolCallRecord.objects.get(run=run).calls == 2
    assert StepRun.objects.get(run=run, step_key="enrich").output["domain"] == "acme-robotics.io"


def test_a_paid_read_the_vendor_cannot_dedupe_is_reconciled_not_bought_again(
    make_workflow, monkeypatch
):
    monkeypatch.setattr(vendors.EnrichCompany, "vendor_dedups", False)
    version = make_workflow(chain(ENRICH, END))
    run = _start(version)
    _kill_after_the_vendor_charged(monkeypatch)
    with pytest.raises(Killed):
        drive(run.pk)
    lapse_lease(run.pk)
    lapse_answer_claim(TOOL, ACME)
    run = drive(run.pk)
    assert (run.status, run.wait_reason) == ("waiting", "needs_reconciliation")
    assert _charged() == (1, 5)


def test_a_company_is_bought_once_for_every_workflow_and_contact(make_workflow):
    first = make_workflow(chain(ENRICH, END))
    second = make_workflow(chain(ENRICH, END))
    runs = [drive(_start(version).pk) for version in (first, second, first)]
    assert [run.outcome for run in runs] == ["done"] * 3
    assert _charged() == (1, 5)
    outputs = [StepRun.objects.get(run=run, step_key="enrich").output for run in runs]
    assert outputs[0] == outputs[1] == outputs[2]
    assert ToolAnswer.objects.get(tool=TOOL, key=ACME).hits == 2
    assert drive(_start(first, "globex.com").pk).outcome == "done"
    assert _charged() == (2, 10)


def test_an_answer_is_bought_again_once_the_reuse_time_a_manager_set_is_over(make_workflow):
    AnswerReuse.objects.create(tool=TOOL, ttl_s=3600)
    version = make_workflow(chain(ENRICH, END))
    drive(_start(version).pk)
    drive(_start(version).pk)
    assert _charged() == (1, 5)
    expire_answer(TOOL, ACME)
    drive(_start(version).pk)
    assert _charged() == (2, 10)
    assert ToolAnswer.objects.get(tool=TOOL, key=ACME).generation == 2


def test_no_reuse_when_the_manager_sets_zero(make_workflow):
    AnswerReuse.objects.create(tool=TOOL, ttl_s=0)
    version = make_workflow(chain(ENRICH, END))
    drive(_start(version).pk)
    drive(_start(version).pk)
    assert _charged() == (2, 10)


def test_another_run_waits_for_a_purchase_in_flight_then_takes_it_over_for_free(
    make_workflow, monkeypatch
):
    version = make_workflow(chain(ENRICH, END))
    buyer = _start(version)
    _kill_after_the_vendor_charged(monkeypatch)
    with pytest.raises(Killed):
        drive(buyer.pk)
    other = drive(_start(make_workflow(chain(ENRICH, END))).pk)
    assert (other.status, other.wait_reason) == ("waiting", "answer:enrich.company")
    lapse_answer_claim(TOOL, ACME)
    let_wait_pass(other.pk)
    other = drive(other.pk)
    assert other.outcome == "done"
    assert _charged() == (1, 5)  # the same purchase, the same request key
    lapse_lease(buyer.pk)
    assert drive(buyer.pk).outcome == "done"  # answered from the shared answer
    assert _charged() == (1, 5)


def test_a_paid_idempotent_write_killed_after_the_charge_resumes_without_a_person(
    make_workflow, monkeypatch
):
    send = {
        "key": "send",
        "kind": "tool",
        "config": {
            "tool": "outreach.send",
            "args": {"to": "dana@acme-robotics.io", "subject": "Hello", "body": "Hi Dana"},
        },
    }
    version = make_workflow(chain(send, END), policy={"destinations": {"outreach.send": ["*"]}})
    run = engine.start_run(workflow=version.workflow, input={}).run
    _kill_after_the_vendor_charged(monkeypatch, tool=vendors.OutreachSend)
    with pytest.raises(Killed):
        drive(run.pk)
    lapse_lease(run.pk)
    run = drive(run.pk)
    assert run.outcome == "done"  # no reconciliation: mailco applies the key once
    sent = VendorCall.objects.filter(vendor="mailco")
    assert sent.count() == 1 and sent.get().credits == 1
