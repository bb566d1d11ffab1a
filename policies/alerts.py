"""Telling operators that a circuit breaker has stayed open too long.

`breaker_open_too_long` is the default `BOSUN_BREAKER_NOTIFIER`: the sweep
calls it once per outage, after the `breaker.alerted` audit entry has
committed. One email to each member of `BOSUN_ALERT_GROUP` with an
address, and a JSON post (Slack-compatible `text`) to
`BOSUN_ALERT_WEBHOOK_URL` when set. A mail server or chat that is down is
logged, never raised.
"""

from __future__ import annotations

import logging

import httpx2
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.urls import reverse

log = logging.getLogger("bosun.alerts")


def breaker_open_too_long(*, key: str, since: str, state: str, waiting: int) -> None:
    link = settings.BOSUN_BASE_URL.rstrip("/") + reverse("console-breaker-list")
    text = (
        f"Circuit breaker {key} has not closed since its failures began at {since} UTC"
        f" (now {state.replace('_', '-')}); {waiting} run(s) wait on it.\\nBreakers: {link}\\n"
    )
    _email(f"[Bosun] Breaker {key} still open"[:200], text)
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
        try:
            response = httpx2.post(
                settings.BOSUN_ALERT_WEBHOOK_URL,
                json=message,
                timeout=settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S,
                follow_redirects=False,
            )
            response.raise_for_status()
        except Exception:  # the chat being down must not fail the sweep
            log.exception("posting the breaker alert to the webhook failed")


def _email(subject: str, body: str) -> None:
    group = settings.BOSUN_ALERT_GROUP
    users = get_user_model().objects.filter(groups__name=group, is_active=True)
    addresses = sorted(set(users.exclude(email="").values_list("email", flat=True)))
    if not addresses:
        log.warning("alert group %r has nobody with an email address", group)
        return
    try:
        connection = get_connection(timeout=settings.BOSUN_REVIEW_NOTIFY_TIMEOUT_S)
        connection.send_messages([EmailMessage(subject, body, to=[a]) for a in addresses])
    except Exception:  # a mail server that is down must not fail the sweep
        log.exception("emailing the breaker alert to group %r failed", group)
