"""Telling reviewers, and the SLA: breach, escalation and timeouts."""

from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.core.mail.backends.base import BaseEmailBackend
from django.core.management import call_command
from django.utils import timezone

from approvals import sla
from approvals.models import ApprovalRequest, ApprovalStatus
from policies.models import AuditEntry
from runs import engine
from runs.models import StepRun
from tests.conftest import drive
from tests.console.conftest import DRAFT_TEXT, draft_review_steps

pytestmark = pytest.mark.django_db
INLINE = "approvals.tasks.tell_reviewers"


class BrokenMailServer(BaseEmailBackend):
    def send_messages(self, messages):
        raise ConnectionRefusedError("mail server down")


@pytest.fixture
def notify_inline(settings):
    """Tell reviewers in the process that created the request (the queue's
    worker does it in production)."""
    settings.BOSUN_REVIEW_NOTIFIER = INLINE
    settings.BOSUN_BASE_URL = "https://bosun.example"
    return settings


@pytest.fixture
def chat():
    """A local chat webhook that keeps what it is sent."""
    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def arrive(pending_approval, capture, **config) -> ApprovalRequest:
    """A request created with its on-commit announcement executed."""
    with capture(execute=True):
        approval = pending_approval(**config)
    return ApprovalRequest.objects.get(pk=approval.pk)


def past(**delta) -> timezone.datetime:
    return timezone.now() - timedelta(**delta)


# --- arrival ---------------------------------------------------------------------


def test_the_queue_group_is_emailed_once_with_a_link_to_the_item(
    notify_inline, pending_approval, make_user, django_capture_on_commit_callbacks
):
    reviewers = [make_user("reviewer"), make_user("reviewer")]
    silent = make_user("reviewer")
    silent.email = ""
    silent.save()
    make_user("viewer")  # not in the queue's group
    approval = arrive(pending_approval, django_capture_on_commit_callbacks)

    assert approval.notified_at is not None
    assert sorted(m.to[0] for m in mail.outbox) == sorted(u.email for u in reviewers)
    message = mail.outbox[0]
    assert message.subject == "[Bosun] Review needed: Email to Dana"
    assert f"https://bosun.example/console/review/{approval.pk}/" in message.body
    assert DRAFT_TEXT not in message.body  # the draft stays in the console
    # A task delivered again, the sweep, a second notifier: nothing more.
    assert sla.notify_request(approval_id=approval.pk) is False
    assert sla.sweep_slas().notified == []
    assert len(mail.outbox) == 2


def test_a_request_for_another_queue_tells_that_group(
    notify_inline, pending_approval, make_user, django_capture_on_commit_callbacks
):
    make_user("reviewer")
    manager = make_user("manager")
    arrive(pending_approval, django_capture_on_commit_callbacks, queue="manager")
    assert [m.to for m in mail.outbox] == [[manager.email]]


def test_the_production_notifier_queues_the_telling(
    settings, pending_approval, make_user, django_capture_on_commit_callbacks, monkeypatch
):
    from django_q.conf import Conf

    monkeypatch.setattr(Conf, "SYNC", True)  # the queue runs the task in this process
    assert settings.BOSUN_REVIEW_NOTIFIER == "approvals.tasks.notify"
    reviewer = make_user("reviewer")
    approval = arrive(pending_approval, django_capture_on_commit_callbacks)
    assert approval.notified_at is not None
    assert [m.to for m in mail.outbox] == [[reviewer.email]]


def test_the_chat_webhook_gets_the_item_and_its_link(
    notify_inline, chat, pending_approval, make_user, django_capture_on_commit_callbacks
):
    url, received = chat
    notify_inline.BOSUN_REVIEW_WEBHOOK_URL = url
    make_user("reviewer")
    approval = arrive(pending_approval, django_capture_on_commit_callbacks, sla_s=600)
    (message,) = received
    link = f"https://bosun.example/console/review/{approval.pk}/"
    assert message["event"] == "approval.created" and message["url"] == link
    assert message["approval_id"] == approval.pk and message["run_id"] == approval.run_id
    assert message["queue"] == "reviewer" and message["due_at"] is not None
    assert link in message["text"] and "Email to Dana" in message["text"]
    assert len(mail.outbox) == 1


def test_a_failing_mail_server_or_webhook_is_logged_and_the_run_waits_as_usual(
    notify_inline, pending_approval, make_user, django_capture_on_commit_callbacks, caplog
):
    notify_inline.EMAIL_BACKEND = f"{__name__}.BrokenMailServer"
    notify_inline.BOSUN_REVIEW_WEBHOOK_URL = "http://127.0.0.1:9/nobody-listens"
    notify_inline.BOSUN_REVIEW_NOTIFY_TIMEOUT_S = 1.0
    make_user("reviewer")
    with caplog.at_level(logging.ERROR, logger="bosun.notify"):
        approval = arrive(pending_approval, django_capture_on_commit_callbacks)
    assert approval.run.status == "waiting" and approval.status == ApprovalStatus.PENDING
    assert approval.notified_at is not None  # tried once; not retried in a loop
    messages = [r.getMessage() for r in caplog.records]
    assert "emailing group 'reviewer' failed" in messages
    assert "posting to the webhook http://127.0.0.1:9/nobody-listens failed" in messages


def test_a_notifier_that_raises_does_not_fail_the_step(
    settings, pending_approval, django_capture_on_commit_callbacks, caplog
):
    settings.BOSUN_REVIEW_NOTIFIER = "approvals.no_such_module.notify"
    with caplog.at_level(logging.ERROR, logger="bosun.engine"):
        approval = arrive(pending_approval, django_capture_on_commit_callbacks)
    assert approval.run.wait_reason == "approval" and approval.notified_at is None
    assert f"approval {approval.pk}: notifier failed" in caplog.text
    # The SLA sweep tells whoever the announcement missed.
    assert sla.sweep_slas().notified == [approval.pk]


def test_the_sweep_tells_about_tool_calls_held_for_approval(
    notify_inline, pending_tool_call, make_user
):
    reviewer = make_user("reviewer")
    assert sla.sweep_slas().notified == [pending_tool_call.pk]
    assert [m.to for m in mail.outbox] == [[reviewer.email]]
    assert "Call test.send" in mail.outbox[0].subject
    assert sla.sweep_slas().notified == []


# --- service level ------------------------------------------------------------------


def test_the_step_copies_its_service_level_onto_the_request(pending_approval):
    before = timezone.now()
    approval = pending_approval(queue="manager", sla_s=3600, escalate_to="operator", timeout_s=7200)
    assert (approval.queue, approval.escalate_to, approval.on_timeout) == (
        "manager",
        "operator",
        "reject",  # a timeout with no decision named rejects
    )
    assert timedelta(seconds=3590) < approval.due_at - before < timedelta(seconds=3610)
    assert approval.timeout_after - approval.due_at == timedelta(seconds=3600)
    plain = pending_approval()
    assert (plain.queue, plain.due_at, plain.on_timeout, plain.timeout_after) == (
        "reviewer",
        None,
        "",
        None,
    )


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"on_timeout": "approve"}, "on_timeout needs timeout_s"),
        ({"escalate_to": "manager"}, "escalate_to needs sla_s"),
        ({"on_timeout": "maybe", "timeout_s": 5}, "on_timeout"),
        ({"sla_s": 0}, "sla_s"),
        ({"queue": "nobody-here"}, "no role group named 'nobody-here'"),
        ({"sla_s": 60, "escalate_to": "bosses"}, "no role group named 'bosses'"),
    ],
)
def test_publish_refuses_an_incomplete_service_level(make_workflow, config, problem):
    with pytest.raises(engine.PublishError, match=problem):
        make_workflow(draft_review_steps(**config))


def test_an_overdue_request_is_breached_and_escalated_once(
    notify_inline, pending_approval, make_user, chat
):
    url, received = chat
    notify_inline.BOSUN_REVIEW_WEBHOOK_URL = url
    manager = make_user("manager")
    approval = pending_approval(sla_s=600, escalate_to="manager")
    ApprovalRequest.objects.filter(pk=approval.pk).update(notified_at=past(minutes=20))
    assert sla.sweep_slas().breached == []  # not due yet
    ApprovalRequest.objects.filter(pk=approval.pk).update(due_at=past(seconds=1))

    assert sla.sweep_slas().breached == [approval.pk]
    approval.refresh_from_db()
    breached_at = approval.breached_at
    assert breached_at is not None and approval.status == ApprovalStatus.PENDING
    assert [m.to for m in mail.outbox] == [[manager.email]]
    assert mail.outbox[0].subject == "[Bosun] Overdue: Email to Dana"
    assert f"/console/review/{approval.pk}/" in mail.outbox[0].body
    assert [m["event"] for m in received] == ["approval.overdue"]

    assert sla.sweep_slas().breached == []
    approval.refresh_from_db()
    assert approval.breached_at == breached_at and len(mail.outbox) == 1 and len(received) == 1


def test_a_breach_without_an_escalation_group_is_only_marked(pending_approval, make_user):
    make_user("reviewer")
    approval = pending_approval(sla_s=600)
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        notified_at=past(minutes=20), due_at=past(seconds=1)
    )
    assert sla.sweep_slas().breached == [approval.pk]
    assert mail.outbox == []


def test_a_timeout_rejects_by_default_and_the_run_takes_the_rejected_edge(pending_approval):
    approval = pending_approval(timeout_s=3600)
    assert engine.decide_timed_out_approvals() == []
    ApprovalRequest.objects.filter(pk=approval.pk).update(timeout_after=past(seconds=1))

    assert engine.decide_timed_out_approvals() == [approval.pk]
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by_label, approval.decision_reason) == (
        "rejected",
        "policy",
        "sla timeout",
    )
    entry = AuditEntry.objects.get(target_type="approvals.approvalrequest", target_id=approval.pk)
    assert (entry.action, entry.actor) == ("approval.rejected", "policy")
    run = drive(approval.run_id)
    assert (run.status, run.outcome, run.success) == ("succeeded", "dropped", False)
    assert engine.decide_timed_out_approvals() == []


def test_a_timeout_approves_where_the_step_says_so(pending_approval):
    approval = pending_approval(timeout_s=60, on_timeout="approve")
    ApprovalRequest.objects.filter(pk=approval.pk).update(timeout_after=past(seconds=1))
    assert engine.decide_timed_out_approvals() == [approval.pk]
    run = drive(approval.run_id)
    assert (run.status, run.outcome) == ("succeeded", "sent")
    assert StepRun.objects.get(run=run, step_key="sent").output == DRAFT_TEXT
    assert AuditEntry.objects.get(action="approval.approved").actor == "policy"


def test_a_person_who_decided_first_wins_over_the_timeout(pending_approval):
    approval = pending_approval(timeout_s=60)
    engine.decide_approval(approval_id=approval.pk, approve=True, actor_label="ana")
    ApprovalRequest.objects.filter(pk=approval.pk).update(timeout_after=past(seconds=1))
    assert engine.decide_timed_out_approvals() == []
    assert ApprovalRequest.objects.get(pk=approval.pk).decided_by_label == "ana"


def test_the_periodic_sweeps_run_the_sla_sweep(pending_approval):
    from runs import tasks

    first = pending_approval(timeout_s=60)
    second = pending_approval()  # a step with no timeout
    ApprovalRequest.objects.filter(pk__in=[first.pk, second.pk]).update(
        timeout_after=past(seconds=1)
    )
    tasks.sweep()  # the django-q2 schedule's task
    assert ApprovalRequest.objects.get(pk=first.pk).status == ApprovalStatus.REJECTED
    # Without `on_timeout` a request waits for a person, however late.
    assert ApprovalRequest.objects.get(pk=second.pk).status == ApprovalStatus.PENDING

    third = pending_approval(version=first.run.version)
    ApprovalRequest.objects.filter(pk=third.pk).update(
        on_timeout="approve", timeout_after=past(seconds=1)
    )
    call_command("sweeper", "--once")  # the sweeper process
    assert ApprovalRequest.objects.get(pk=third.pk).status == ApprovalStatus.APPROVED
