"""Telling people of events through the routes set in admin (NotificationRoute).

Three kinds of event: an approval request past its SLA (approvals.sla, at
the breach), a run dead-lettered (`notify_dead_letters`, run by the
sweeps), a circuit breaker open too long (policies.alerts). Each enabled
route of the event's kind gets one email per address and/or one POST to
its webhook with a Slack-compatible body: `text`, `blocks` (one mrkdwn
section with the same text), then the event's own fields (`event`, ids,
a link).

Once per event and route: `notify_event` inserts a NotificationDelivery
row, unique on (route, event key), and only the caller whose insert went
in sends (a constraint, not a check-then-insert: concurrent sweeps, a task
delivered twice, a retried step all try, one wins). The sending happens
after the transaction that made the claim commits (`on_commit`; at once
outside a transaction), so a rolled-back claim tells nobody; the HTTP post
goes through `lib.notify.post_json` with BOSUN_REVIEW_NOTIFY_TIMEOUT_S. A
failure is logged and kept on the delivery row (`error`), never raised
and not retried (the event stays visible on its page).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone

from lib.notify import email_addresses, post_json
from policies.models import NotificationDelivery, NotificationKind, NotificationRoute

log = logging.getLogger("bosun.notify")


@dataclass(frozen=True)
class Event:
    """One thing to tell: its kind, a key naming it once and for all (the
    same event gets the same key however often it is noticed), a subject
    line and a text, and fields for the webhook's JSON."""

    kind: str
    key: str
    subject: str
    text: str
    fields: dict[str, Any] = field(default_factory=dict)


def notify_event(event: Event, *, route_ids: list[int] | None = None) -> list[int]:
    """Claim the event for each enabled route of its kind (of `route_ids`,
    if given) and send after commit. The ids of the routes this call
    claimed (and will tell)."""
    claimed = []
    routes = NotificationRoute.objects.filter(kind=event.kind, enabled=True)
    if route_ids is not None:
        routes = routes.filter(pk__in=route_ids)
    for route in routes:
        try:
            with transaction.atomic():  # a savepoint: a lost race leaves the caller's work intact
                delivery = NotificationDelivery.objects.create(route=route, event_key=event.key)
        except IntegrityError:
            continue  # told already (or being told) by someone else
        transaction.on_commit(partial(_deliver, delivery.pk, event))
        claimed.append(route.pk)
    return claimed


def _deliver(delivery_id: int, event: Event) -> None:
    delivery = NotificationDelivery.objects.select_related("route").get(pk=delivery_id)
    route = delivery.route
    timeout_s = settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S
    failed = []
    try:
        if not email_addresses(
            route.addresses, f"[Bosun] {event.subject}"[:200], event.text, timeout_s=timeout_s
        ):
            failed.append("email")
        if route.webhook_url and not post_json(
            route.webhook_url, slack_message(event), timeout_s=timeout_s
        ):
            failed.append("webhook")
    except Exception:  # telling people must not fail the sweep or the step
        log.exception("notification %s to route %s failed", event.key, route.pk)
        failed.append("error")
    NotificationDelivery.objects.filter(pk=delivery_id).update(
        sent_at=timezone.now(),
        error=f"{' and '.join(failed)} failed (see the log)" if failed else "",
    )


def slack_message(event: Event) -> dict[str, Any]:
    """The webhook's JSON: Slack's `text` and `blocks`, then the event's fields."""
    return {
        "text": event.text.strip(),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": event.text.strip()}}],
        "event": event.kind,
        **event.fields,
    }


def _link(name: str, *args: Any) -> str:
    return settings.BOSUN_BASE_URL.rstrip("/") + reverse(name, args=args)


# --- the events -------------------------------------------------------------------


def sla_escalation(approval: Any) -> Event:
    """An approval request (approvals.models.ApprovalRequest, with its run
    and workflow loaded) that went past its due time."""
    link = _link("console-review-detail", approval.pk)
    what = approval.title or approval.step_key
    due = f"{approval.due_at:%Y-%m-%d %H:%M} UTC" if approval.due_at else "—"
    text = (
        f"Overdue review: {what} — {approval.run.workflow.name}, run {approval.run_id},"
        f" step {approval.step_key}; due {due}, queue {approval.queue}.\nOpen it: {link}\n"
    )
    return Event(
        kind=NotificationKind.SLA_ESCALATION,
        key=f"approval:{approval.pk}:breach",
        subject=f"Overdue: {what}",
        text=text,
        fields={
            "approval_id": approval.pk,
            "run_id": approval.run_id,
            "workflow": approval.run.workflow.slug,
            "queue": approval.queue,
            "due_at": approval.due_at.isoformat() if approval.due_at else None,
            "url": link,
        },
    )


def breaker_alert(*, key: str, since: str, state: str, waiting: int) -> Event:
    link = _link("console-breaker-list")
    text = (
        f"Circuit breaker {key} has not closed since its failures began at {since} UTC"
        f" (now {state.replace('_', '-')}); {waiting} run(s) wait on it.\nBreakers: {link}\n"
    )
    return Event(
        kind=NotificationKind.BREAKER_ALERT,
        key=f"breaker:{key}:{since}",  # one outage: the time its failures began
        subject=f"Breaker {key} still open",
        text=text,
        fields={"breaker": key, "since": since, "state": state, "waiting": waiting, "url": link},
    )


def dead_letter(run: Any) -> Event:
    """A dead-lettered run (runs.models.Run, with its workflow loaded).
    Dead-lettered again after a retry, it is a new event."""
    link = _link("console-run-detail", run.pk)
    error = (run.error or "").splitlines()[0][:300] if run.error else "no error recorded"
    text = (
        f"Dead letter: run {run.pk} of {run.workflow.name} failed at step {run.current_step}:"
        f" {error}\nOpen it: {link}\nDead letters: {_link('console-deadletter-list')}\n"
    )
    return Event(
        kind=NotificationKind.DEAD_LETTER,
        key=f"run:{run.pk}:dead:{run.dead_lettered_at.isoformat()}",
        subject=f"Dead letter: {run.workflow.slug} run {run.pk}",
        text=text,
        fields={
            "run_id": run.pk,
            "workflow": run.workflow.slug,
            "step": run.current_step,
            "error": error,
            "url": link,
        },
    )


def notify_dead_letters(*, limit: int = 200) -> list[int]:
    """Tell the dead-letter routes of the runs dead-lettered lately: within
    BOSUN_NOTIFY_LOOKBACK_S, and not before the route was made (a new route
    is not told of old failures). Reads the dead runs through their partial
    index (run_dead_letter), a page at a time, oldest first, so that runs
    told already never hide the ones after them; at most `limit` runs told
    a call. Sandbox runs are no one's dead letters. No query more without a
    dead-letter route. Safe to run anywhere, any number of times at once.
    The run ids told."""
    from runs.models import Run, RunMode, RunStatus

    routes = list(
        NotificationRoute.objects.filter(
            kind=NotificationKind.DEAD_LETTER, enabled=True
        ).values_list("pk", "created_at")
    )
    if not routes:
        return []
    since = max(
        timezone.now() - timedelta(seconds=settings.BOSUN_NOTIFY_LOOKBACK_S),
        min(created for _, created in routes),
    )
    dead = (
        Run.objects.filter(status=RunStatus.FAILED, dead_lettered_at__gte=since, mode=RunMode.LIVE)
        .select_related("workflow")
        .only("id", "error", "current_step", "dead_lettered_at", "workflow__slug", "workflow__name")
        .order_by("dead_lettered_at", "id")
    )
    done: list[int] = []
    after: tuple[datetime, int] | None = None
    # Page through the window, oldest first, so that runs told already never
    # hide the ones after them; stop at `limit` told by this call.
    while len(done) < limit:
        page = dead
        if after is not None:
            page = page.filter(
                Q(dead_lettered_at__gt=after[0]) | Q(dead_lettered_at=after[0], id__gt=after[1])
            )
        runs = list(page[:limit])
        if not runs:
            break
        last = runs[-1]
        assert last.dead_lettered_at is not None  # filtered on it
        after = (last.dead_lettered_at, last.pk)
        keys = {dead_letter(run).key: run for run in runs}
        told = set(
            NotificationDelivery.objects.filter(
                route_id__in=[pk for pk, _ in routes], event_key__in=keys
            ).values_list("route_id", "event_key")
        )
        for key, run in keys.items():
            assert run.dead_lettered_at is not None  # filtered on it
            pending = [
                pk
                for pk, created in routes
                if (pk, key) not in told and run.dead_lettered_at >= created
            ]
            if pending and notify_event(dead_letter(run), route_ids=pending):
                done.append(run.pk)
    return done
