"""Telling operators that a circuit breaker has stayed open too long.

`breaker_open_too_long` is the default `BOSUN_BREAKER_NOTIFIER`: the sweep
calls it once per outage, after the `breaker.alerted` audit entry has
committed. One email to each member of `BOSUN_ALERT_GROUP` with an
address, and a JSON post (Slack-compatible `text`) to
`BOSUN_ALERT_WEBHOOK_URL` when set. A mail server or chat that is down is
logged, never raised (`lib.notify`).
"""

from __future__ import annotations

from django.conf import settings
from django.urls import reverse

from lib.notify import email_group, post_json
from policies.notifications import breaker_alert, notify_event


def breaker_open_too_long(*, key: str, since: str, state: str, waiting: int) -> None:
    link = settings.BOSUN_BASE_URL.rstrip("/") + reverse("console-breaker-list")
    text = (
        f"Circuit breaker {key} has not closed since its failures began at {since} UTC"
        f" (now {state.replace('_', '-')}); {waiting} run(s) wait on it.\nBreakers: {link}\n"
    )
    timeout_s = settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S
    email_group(
        settings.BOSUN_ALERT_GROUP,
        f"[Bosun] Breaker {key} still open"[:200],
        text,
        timeout_s=timeout_s,
    )
    if settings.BOSUN_ALERT_WEBHOOK_URL:
        message = {
            "text": text.strip(),
            "event": "breaker.open_too_long",
            "breaker": key,
            "since": since,
            "state": state,
            "waiting": waiting,
            "url": link,
        }
        post_json(settings.BOSUN_ALERT_WEBHOOK_URL, message, timeout_s=timeout_s)
    # The routes set in admin for breaker alerts (once per outage and route).
    notify_event(breaker_alert(key=key, since=since, state=state, waiting=waiting))
