"""Inbound webhooks (Standard Webhooks): verify, deduplicate, start a run.

A delivery carries `webhook-id`, `webhook-timestamp` and
`webhook-signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
keyed with the base64-decoded part of the source's `whsec_` secret; several
space-separated signatures are allowed, so a sender can rotate secrets).
It is refused (WebhookRejected, a 400) when a header is missing, the
timestamp is further than the source's tolerance from now (replays of old
captures), or no signature matches.

A verified delivery is recorded once per (source, webhook-id): the INSERT
and the run's start commit together, and the unique constraint turns a
repeat (the sender retrying, or delivering the same message twice at once)
into a duplicate that starts nothing. If the run cannot start (a full
queue, an input the workflow refuses) nothing is recorded, so the sender's
retry is handled as new.
"""

from __future__ import annotations

import binascii
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from integrations.models import WebhookDelivery, WebhookSource
from lib import webhooks as signing
from lib.context import MISSING, resolve
from runs.engine.errors import InvalidInput, NotFound
from runs.engine.service import start_run

# The run's idempotency key is "whk:<source id>:<webhook id>" and must fit
# in Run.idempotency_key (200 characters).
MAX_ID_LEN = 150
_ID = re.compile(r"[\x21-\x7e]+")
_STAMP = re.compile(r"[0-9]{1,12}")


class WebhookRejected(Exception):
    """The delivery cannot be trusted or read; `code` says why."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Received:
    delivery_id: int
    run_id: int | None
    duplicate: bool


def verify(
    *,
    source: WebhookSource,
    headers: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> str:
    """Check a delivery's headers against the source; return its webhook id."""
    webhook_id = headers.get("webhook-id", "")
    stamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (webhook_id and stamp and signatures):
        raise WebhookRejected(
            "webhook-id, webhook-timestamp and webhook-signature are required",
            code="missing_header",
        )
    if len(webhook_id) > MAX_ID_LEN or not _ID.fullmatch(webhook_id):
        raise WebhookRejected(
            f"webhook-id must be 1-{MAX_ID_LEN} visible ASCII characters", code="invalid_id"
        )
    if not _STAMP.fullmatch(stamp):
        raise WebhookRejected(
            "webhook-timestamp must be whole seconds since the epoch", code="invalid_timestamp"
        )
    now = time.time() if now is None else now
    if abs(now - int(stamp)) > source.tolerance_s:
        raise WebhookRejected(
            f"webhook-timestamp is more than {source.tolerance_s}s from now",
            code="stale_timestamp",
        )
    try:
        expected = signing.sign(
            secret=source.secret, webhook_id=webhook_id, timestamp=stamp, body=body
        )
    except (binascii.Error, ValueError):
        raise WebhookRejected(
            "the source's secret is not valid base64", code="invalid_signature"
        ) from None
    # Other signature versions never match (the spec lets senders list
    # several during a rotation).
    if not signing.signature_matches(expected, signatures):
        raise WebhookRejected("no valid signature", code="invalid_signature")
    return webhook_id


def receive_webhook(*, slug: str, headers: Mapping[str, str], body: bytes) -> Received:
    """Verify a delivery to the source `slug` and start its workflow's run
    (the payload, or the value at the source's `input_path`), once per
    webhook id. A repeat returns the first delivery, `duplicate=True`."""
    source = WebhookSource.objects.select_related("workflow").filter(slug=slug).first()
    if source is None or not source.enabled:
        raise NotFound(f"no webhook source {slug!r}")
    webhook_id = verify(source=source, headers=headers, body=body)
    payload = _payload(body)
    run_input = _run_input(source, payload)
    with transaction.atomic():
        try:
            with transaction.atomic():  # a savepoint: the duplicate's path goes on
                delivery = WebhookDelivery.objects.create(
                    source=source, webhook_id=webhook_id, payload=payload
                )
        except IntegrityError:
            # The unique (source, webhook_id) refused a repeat: count it,
            # start nothing.
            first = WebhookDelivery.objects.filter(source=source, webhook_id=webhook_id)
            first.update(repeats=F("repeats") + 1)
            delivery = first.get()
            return Received(delivery.pk, delivery.run_id, duplicate=True)
        started = start_run(
            workflow=source.workflow,
            input=run_input,
            idempotency_key=f"whk:{source.pk}:{webhook_id}",
        )
        delivery.run = started.run
        delivery.save(update_fields=["run"])
    return Received(delivery.pk, started.run.pk, duplicate=False)


def _payload(body: bytes) -> Any:
    try:
        payload = json.loads(body, parse_constant=_refuse)
    except (ValueError, RecursionError):
        raise WebhookRejected("the body is not JSON", code="invalid_body") from None
    if not _storable(payload):
        raise WebhookRejected(
            "the body holds text PostgreSQL cannot store (NUL or lone surrogates)",
            code="invalid_body",
        )
    return payload


def _run_input(source: WebhookSource, payload: Any) -> dict[str, Any]:
    value = resolve(payload, source.input_path) if source.input_path else payload
    if value is MISSING or not isinstance(value, dict):
        where = source.input_path or "the body"
        raise InvalidInput({"(input)": f"{where} must be a JSON object"})
    return value


def _refuse(name: str) -> Any:
    raise ValueError(name)


def _storable(value: Any, depth: int = 0) -> bool:
    if depth > 64:
        return False
    if isinstance(value, str):
        return "\x00" not in value and _encodable(value)
    if isinstance(value, dict):
        return all(_storable(k, depth + 1) and _storable(v, depth + 1) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(v, depth + 1) for v in value)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
