"""Telling people: one email to each member of a role group, and one JSON
post to a chat webhook. Used for review notices and operator alerts.

A failure is logged, never raised: a mail server or chat that is down must
not fail the step or the sweep that tells.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx2
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection

log = logging.getLogger("bosun.notify")


def email_group(group: str, subject: str, body: str, *, timeout_s: float) -> None:
    """One message per member with an address: nobody sees the others'."""
    users = get_user_model().objects.filter(groups__name=group, is_active=True)
    addresses = sorted(set(users.exclude(email="").values_list("email", flat=True)))
    if not addresses:
        log.warning("group %r has nobody with an email address", group)
        return
    try:
        connection = get_connection(timeout=timeout_s)
        connection.send_messages([EmailMessage(subject, body, to=[a]) for a in addresses])
    except Exception:
        log.exception("emailing group %r failed", group)


def email_addresses(addresses: list[str], subject: str, body: str, *, timeout_s: float) -> bool:
    """One message per address (nobody sees the others'); whether it went."""
    if not addresses:
        return True
    try:
        connection = get_connection(timeout=timeout_s)
        connection.send_messages([EmailMessage(subject, body, to=[a]) for a in addresses])
    except Exception:
        log.exception("emailing %d address(es) failed", len(addresses))
        return False
    return True


def post_json(url: str, message: dict[str, Any], *, timeout_s: float) -> bool:
    """POST the message as JSON (no redirects followed); whether it was taken."""
    try:
        response = httpx2.post(url, json=message, timeout=timeout_s, follow_redirects=False)
        response.raise_for_status()
    except Exception:
        log.exception("posting to the webhook %s failed", url)
        return False
    return True
