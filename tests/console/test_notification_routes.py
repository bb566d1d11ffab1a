"""Notification routes: SLA escalations, dead letters and breaker alerts told
by email and to a Slack-compatible webhook, once per event and route."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import transaction
from django.test import Client
from django.utils import timezone

from approvals import sla
from approvals.models import ApprovalRequest
from policies import alerts
from policies.models import AuditEntry, NotificationDelivery, NotificationKind, NotificationRoute
from policies.notifications import notify_dead_letters, notify_event, sla_escalation
from runs import tasks
from runs.models import Run
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = pytest.mark.django_db

two_step_version = fx.two_step_version


@pytest.fixture
def hook():
    """A local chat webhook that keeps what it is sent (status 200), or
    answers 500 when `hook.fail` is set."""
    received: list[dict] = []
    state = {"fail": False}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(500 if state["fail"] else 200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield type(
        "Hook",
        (),
        {
            "url": f"http://127.0.0.1:{server.server_port}/hook",
            "received": received,
            "state": state,
        },
    )
    server.shutdown()
    server.server_close()


def route(kind: str, *, url: str = "", emails: str = "oncall@example.com", **fields):
    return NotificationRoute.objects.create(
        name=f"{kind} route", kind=kind, emails=emails, webhook_url=url, **fields
    )


def overdue(pending_approval) -> ApprovalRequest:
    approval = pending_approval(sla_s=600)
    past = timezone.now() - timedelta(minutes=20)
    ApprovalRequest.objects.filter(pk=approval.pk).update(
        notified_at=past, due_at=timezone.now() - timedelta(seconds=1)
    )
    return approval


def test_an_sla_breach_is_told_to_its_routes_by_email_and_webhook_once(
    settings, pending_approval, hook, django_capture_on_commit_callbacks
):
    settings.BOSUN_BASE_URL = "https://bosun.example"
    route(NotificationKind.SLA_ESCALATION, url=hook.url, emails="a@example.com, b@example.com")
    route(NotificationKind.DEAD_LETTER, url=hook.url)  # another kind: not told
    approval = overdue(pending_approval)
    with django_capture_on_commit_callbacks(execute=True):
        assert sla.sweep_slas().breached == [approval.pk]
    assert sorted(m.to[0] for m in mail.outbox) == ["a@example.com", "b@example.com"]
    assert mail.outbox[0].subject == "[Bosun] Overdue: Email to Dana"
    link = f"https://bosun.example/console/review/{approval.pk}/"
    assert link in mail.outbox[0].body
    [message] = hook.received
    assert message["event"] == "sla_escalation" and message["approval_id"] == approval.pk
    assert message["text"].startswith("Overdue review: Email to Dana") and link in message["text"]
    assert message["blocks"] == [
        {"type": "section", "text": {"type": "mrkdwn", "text": message["text"]}}
    ]
    with django_capture_on_commit_callbacks(execute=True):
        assert sla.sweep_slas().breached == []  # swept again: nothing more
        again = ApprovalRequest.objects.select_related("run__workflow").get(pk=approval.pk)
        assert notify_event(sla_escalation(again)) == []  # the constraint refuses a second claim
    assert len(mail.outbox) == 2 and len(hook.received) == 1
    delivery = NotificationDelivery.objects.get()
    assert delivery.sent_at is not None and delivery.error == ""


def test_a_claim_in_a_transaction_that_rolls_back_tells_nobody(
    pending_approval, django_capture_on_commit_callbacks
):
    route(NotificationKind.SLA_ESCALATION)
    approval = overdue(pending_approval)
    request = ApprovalRequest.objects.select_related("run__workflow").get(pk=approval.pk)
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        assert notify_event(sla_escalation(request)) != []
        transaction.set_rollback(True)
    assert mail.outbox == [] and not NotificationDelivery.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_event(sla_escalation(request)) != []  # told once it commits
    assert len(mail.outbox) == 1


def dead_run(version, *, ago_s: float = 1.0) -> Run:
    run = add_run(version, status="failed", error="work: boom\ntraceback", current_step="work")
    Run.objects.filter(pk=run.pk).update(
        dead_lettered_at=timezone.now() - timedelta(seconds=ago_s), finished_at=timezone.now()
    )
    run.refresh_from_db()
    return run


def test_a_dead_letter_is_told_once_and_again_when_it_dies_again(
    two_step_version, hook, django_capture_on_commit_callbacks
):
    made = route(NotificationKind.DEAD_LETTER, url=hook.url)
    NotificationRoute.objects.filter(pk=made.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    run = dead_run(two_step_version)
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_dead_letters() == [run.pk]
        assert notify_dead_letters() == []  # a second sweep: nothing new
        tasks.sweep()  # the periodic sweep tells too, and finds it told
    assert [m.to for m in mail.outbox] == [["oncall@example.com"]]
    assert f"run {run.pk}" in mail.outbox[0].subject and "work: boom" in mail.outbox[0].body
    [message] = hook.received
    assert (message["event"], message["run_id"], message["error"]) == (
        "dead_letter",
        run.pk,
        "work: boom",
    )
    # Retried, it failed again: a new event.
    Run.objects.filter(pk=run.pk).update(dead_lettered_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_dead_letters() == [run.pk]
    assert len(mail.outbox) == 2 and len(hook.received) == 2


def test_a_new_route_is_not_told_of_earlier_dead_letters_nor_a_disabled_one(
    two_step_version, django_capture_on_commit_callbacks
):
    dead_run(two_step_version, ago_s=60)
    route(NotificationKind.DEAD_LETTER)
    route(NotificationKind.DEAD_LETTER, enabled=False, emails="off@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_dead_letters() == []
    assert mail.outbox == []


def test_a_breaker_alert_is_told_once_per_outage(settings, django_capture_on_commit_callbacks):
    settings.BOSUN_ALERT_WEBHOOK_URL = ""
    route(NotificationKind.BREAKER_ALERT, emails="ops@example.com")
    outage = {"key": "vendor:x", "since": "2026-12-06T08:00:00+00:00", "state": "open"}
    with django_capture_on_commit_callbacks(execute=True):
        alerts.breaker_open_too_long(**outage, waiting=3)
        alerts.breaker_open_too_long(**outage, waiting=4)  # told again by a second sweep
    assert [m.to for m in mail.outbox] == [["ops@example.com"]]
    assert "Breaker vendor:x still open" in mail.outbox[0].subject
    with django_capture_on_commit_callbacks(execute=True):
        alerts.breaker_open_too_long(**{**outage, "since": "2026-12-07T08:00:00+00:00"}, waiting=1)
    assert len(mail.outbox) == 2  # a new outage


def test_a_failing_webhook_is_recorded_on_the_delivery_not_raised(
    two_step_version, hook, django_capture_on_commit_callbacks
):
    hook.state["fail"] = True
    made = route(NotificationKind.DEAD_LETTER, url=hook.url, emails="")
    NotificationRoute.objects.filter(pk=made.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    dead_run(two_step_version)
    with django_capture_on_commit_callbacks(execute=True):
        notify_dead_letters()
    delivery = NotificationDelivery.objects.get()
    assert len(hook.received) == 1 and delivery.error == "webhook failed (see the log)"
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_dead_letters() == []  # not retried
    assert len(hook.received) == 1


def test_admin_sets_up_a_route_audited_and_refuses_one_that_tells_nobody(make_user):
    client = Client()
    client.user = make_user("operator")
    client.force_login(client.user)
    url = "/admin/policies/notificationroute/add/"
    assert client.get(url).status_code == 200
    base = {"name": "on-call", "kind": "dead_letter", "enabled": "on"}
    base |= {"deliveries-TOTAL_FORMS": "0", "deliveries-INITIAL_FORMS": "0"}
    refused = client.post(url, {**base, "emails": "", "webhook_url": ""})
    assert "Give email addresses, a webhook URL, or both." in refused.content.decode()
    bad = client.post(url, {**base, "emails": "ops@example.com, nobody", "webhook_url": ""})
    assert "Not an email address: nobody" in bad.content.decode()
    saved = client.post(url, {**base, "emails": "ops@example.com", "webhook_url": ""})
    assert saved.status_code == 302
    made = NotificationRoute.objects.get()
    assert made.addresses == ["ops@example.com"]
    entry = AuditEntry.objects.get(action="notification_route.saved")
    assert entry.actor == f"user:{client.user.username}" and entry.target_id == str(made.pk)
    assert entry.data["emails"] == "ops@example.com"


def test_runs_told_already_do_not_hide_later_dead_letters(
    two_step_version, django_capture_on_commit_callbacks
):
    """More dead letters than one call tells: the next call tells the rest
    (the ones told first are not read again as if they were new)."""
    made = route(NotificationKind.DEAD_LETTER)
    NotificationRoute.objects.filter(pk=made.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    runs = [dead_run(two_step_version, ago_s=30 - n) for n in range(3)]
    experiment = dead_run(two_step_version, ago_s=10)
    Run.objects.filter(pk=experiment.pk).update(mode="experiment")
    with django_capture_on_commit_callbacks(execute=True):
        assert notify_dead_letters(limit=2) == [runs[0].pk, runs[1].pk]
        assert notify_dead_letters(limit=2) == [runs[2].pk]
        assert notify_dead_letters(limit=2) == []
    assert len(mail.outbox) == 3
