"""The audit log: append-only, hash-chained records of decisions and changes.

`record` is called inside the transaction that makes the change it records
(an approval, a publish, a policy save, a kill switch, a retry…), so the
entry commits with the change or not at all. Appends are serialized (an
advisory lock on PostgreSQL; SQLite's immediate transactions serialize
writers already) so that each row's `prev_hash` is the hash of the row
before it. `verify` recomputes the chain and names the first row that does
not match: a changed byte, a removed row or a row slipped in. What the
chain alone cannot show (a deleted tail, a chain re-hashed from an edit on)
the signed checkpoints of `policies.audit_checkpoints` do.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from policies.models import AuditEntry

GENESIS = "0" * 64
# Any fixed number: the one advisory lock all appends queue on.
_LOCK_KEY = 0x626F73756E  # "bosun"


def record(
    *,
    action: str,
    actor: str,
    target: Any = None,
    target_type: str = "",
    target_id: str | int = "",
    data: dict[str, Any] | None = None,
) -> AuditEntry:
    """Append one entry. `actor` is "user:<name>", "key:<prefix>", "policy"
    or "system"; `target` (a model instance) fills type and id."""
    if target is not None:
        target_type = target_type or target._meta.label_lower
        target_id = target_id or target.pk
    # Store exactly what was hashed: JSON-normalized data (Decimals and
    # dates become strings once, here, not differently on each database).
    clean = json.loads(json.dumps(data or {}, default=str, sort_keys=True))
    with transaction.atomic():
        lock_appends()
        last = AuditEntry.objects.order_by("-id").values_list("hash", flat=True).first()
        entry = AuditEntry(
            at=timezone.now(),
            actor=actor[:150],
            action=action[:80],
            target_type=str(target_type)[:60],
            target_id=str(target_id)[:100],
            data=clean,
            prev_hash=last or GENESIS,
        )
        entry.hash = entry_hash(entry)
        entry.save()
    return entry


def lock_appends() -> None:
    """Hold every other append off until the current transaction ends (call
    inside `transaction.atomic()`): the head read next stays the head."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])


def actor_of(user=None, *, key=None) -> str:
    """The actor label for a user or an API key (never the key itself)."""
    if key is not None:
        return f"key:{key.prefix}"
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.get_username()}"
    return "system"


def entry_hash(entry: AuditEntry, *, prev_hash: str | None = None) -> str:
    """The entry's hash over its contents and `prev_hash` (the stored one
    unless another is given: recomputing a chain from the start)."""
    payload = [
        entry.prev_hash if prev_hash is None else prev_hash,
        iso(entry.at),
        entry.actor,
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.data,
    ]
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class Break:
    """The first row where the chain does not hold, and why."""

    entry_id: int
    position: int  # 1-based position in the chain
    reason: str


def verify(*, chunk: int = 2000) -> tuple[int, Break | None]:
    """Walk the chain in order: (rows checked, the first break or None)."""
    previous = GENESIS
    checked = 0
    for position, entry in enumerate(entries(chunk), start=1):
        checked = position
        if entry.prev_hash != previous:
            return checked, Break(entry.pk, position, "prev_hash does not match the row before")
        if entry_hash(entry) != entry.hash:
            return checked, Break(entry.pk, position, "contents do not match the row's hash")
        previous = entry.hash
    return checked, None


def entries(chunk: int = 2000) -> Iterator[AuditEntry]:
    last_id = 0
    while True:
        batch = list(AuditEntry.objects.filter(id__gt=last_id).order_by("id")[:chunk])
        if not batch:
            return
        yield from batch
        last_id = batch[-1].pk
