"""Signed checkpoints of the audit chain's head: its anchor outside the table.

The hash chain proves that the rows present follow one another; it cannot
show a tail that was deleted, nor a chain recomputed from an edited row on.
A checkpoint can: an HMAC, under a key the database does not hold, over the
newest entry's id and hash, the number of entries up to it and the time.
Checkpoints are written by a schedule and by `manage.py audit_checkpoint`,
kept in their own append-only table and appended to a file outside the
database. `verify_checkpoints` recomputes the chain from its first row and
holds each checkpoint against it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from policies.audit import GENESIS, entries, entry_hash, iso, lock_appends
from policies.models import AuditCheckpoint, AuditEntry

# Names what is signed, so that a MAC made for anything else never passes.
_VERSION = "bosun-audit-checkpoint-v1"


def _key() -> bytes:
    if settings.BOSUN_AUDIT_KEY:
        return settings.BOSUN_AUDIT_KEY.encode()
    # A key derived from SECRET_KEY for this one purpose, never SECRET_KEY
    # itself. It guards against whoever holds the database but not the
    # application's settings; set BOSUN_AUDIT_KEY to keep them apart.
    return hmac.new(settings.SECRET_KEY.encode(), b"bosun.audit.checkpoint", "sha256").digest()


def key_id() -> str:
    """A fingerprint of the signing key (it tells which key signed, and
    reveals nothing of it)."""
    return hashlib.sha256(b"bosun.audit.key-id:" + _key()).hexdigest()[:16]


def checkpoint_mac(*, at: datetime, last_id: int, last_hash: str, count: int, key: str) -> str:
    message = json.dumps([_VERSION, iso(at), last_id, last_hash, count, key], separators=(",", ":"))
    return hmac.new(_key(), message.encode(), "sha256").hexdigest()


def take_checkpoint(*, only_if_grown: bool = False) -> AuditCheckpoint | None:
    """Sign and store the chain's head now. With `only_if_grown`, nothing is
    written while the newest checkpoint already names the same head (the
    schedule's case: an idle log needs no new checkpoint every ten minutes)."""
    with transaction.atomic():
        # Appends wait until this commits, so the head and the count read
        # below describe one and the same chain.
        lock_appends()
        head = AuditEntry.objects.order_by("-id").values_list("id", "hash").first()
        last_id, last_hash = head or (0, GENESIS)
        if only_if_grown:
            newest = AuditCheckpoint.objects.order_by("-id").first()
            if newest is not None and (newest.last_id, newest.last_hash) == (last_id, last_hash):
                return None
        checkpoint = AuditCheckpoint(
            at=timezone.now(),
            last_id=last_id,
            last_hash=last_hash,
            count=AuditEntry.objects.filter(id__lte=last_id).count(),
            key_id=key_id(),
        )
        checkpoint.mac = checkpoint_mac(
            at=checkpoint.at,
            last_id=checkpoint.last_id,
            last_hash=checkpoint.last_hash,
            count=checkpoint.count,
            key=checkpoint.key_id,
        )
        checkpoint.save()
    return checkpoint


def export_checkpoint(checkpoint: AuditCheckpoint, *, path: str | Path) -> None:
    """Append the checkpoint to `path` as one JSON line, flushed to disk."""
    line = json.dumps(
        {
            "id": checkpoint.pk,
            "at": iso(checkpoint.at),
            "last_id": checkpoint.last_id,
            "last_hash": checkpoint.last_hash,
            "count": checkpoint.count,
            "key_id": checkpoint.key_id,
            "mac": checkpoint.mac,
        },
        separators=(",", ":"),
    )
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")
        file.flush()
        os.fsync(file.fileno())


@dataclass(frozen=True)
class Claim:
    """What one checkpoint vouches for, read from the table or from a file."""

    source: str  # "checkpoint #12" or "checkpoints.jsonl line 3"
    at: datetime
    last_id: int
    last_hash: str
    count: int
    key_id: str
    mac: str

    def signed(self) -> tuple[datetime, int, str, int, str, str]:
        """Everything but where it was read: equal for a checkpoint and its export."""
        return (self.at, self.last_id, self.last_hash, self.count, self.key_id, self.mac)

    def describe(self) -> str:
        return f"{self.source} ({iso(self.at)}: id {self.last_id}, {_entries(self.count)})"


@dataclass(frozen=True)
class Finding:
    """One thing the checkpoints show was done to the log. Kinds: `forged`,
    `truncated`, `rehashed`, `changed`, `gone`, `count`, `unlisted`, `file`."""

    kind: str
    message: str


def claims_in_table() -> list[Claim]:
    return [
        Claim(f"checkpoint #{c.pk}", c.at, c.last_id, c.last_hash, c.count, c.key_id, c.mac)
        for c in AuditCheckpoint.objects.order_by("id")
    ]


def claims_in_file(path: str | Path) -> tuple[list[Claim], list[Finding]]:
    """The checkpoints exported to `path`, and a finding for each line that
    is not one."""
    claims, findings = [], []
    name = Path(path).name
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                claims.append(_claim_of(json.loads(line), f"{name} line {number}"))
            except (ValueError, TypeError, KeyError) as exc:
                findings.append(
                    Finding("file", f"{name} line {number} is not a checkpoint ({exc})")
                )
    return claims, findings


def _claim_of(row: dict[str, Any], source: str) -> Claim:
    at = parse_datetime(row["at"])
    if at is None:
        raise ValueError(f"bad time {row['at']!r}")
    return Claim(
        source,
        at,
        int(row["last_id"]),
        str(row["last_hash"]),
        int(row["count"]),
        str(row["key_id"]),
        str(row["mac"]),
    )


def unlisted(file_claims: Iterable[Claim], table_claims: Iterable[Claim]) -> list[Finding]:
    """Exported checkpoints that the table no longer holds: the application
    role cannot delete a checkpoint, so someone else did."""
    held = {claim.mac for claim in table_claims}
    return [
        Finding("unlisted", f"{claim.describe()} is missing from the checkpoint table")
        for claim in file_claims
        if claim.mac not in held and _signed(claim)
    ]


def _signed(claim: Claim) -> bool:
    expected = checkpoint_mac(
        at=claim.at,
        last_id=claim.last_id,
        last_hash=claim.last_hash,
        count=claim.count,
        key=claim.key_id,
    )
    return claim.key_id == key_id() and hmac.compare_digest(expected, claim.mac)


def verify_checkpoints(claims: Iterable[Claim], *, chunk: int = 2000) -> list[Finding]:
    """Hold each checkpoint against the chain as recomputed from its first
    row (the stored hashes are not trusted): a bad signature, an entry it
    names that is gone, a hash or a count that differs."""
    findings: list[Finding] = []
    by_id: dict[int, list[Claim]] = {}
    for claim in claims:
        if not _signed(claim):
            findings.append(Finding("forged", _forged(claim)))
        elif claim.last_id > 0:  # a checkpoint of the empty log vouches for nothing
            by_id.setdefault(claim.last_id, []).append(claim)

    running, position, last_id, intact = GENESIS, 0, 0, True
    matched: list[int] = []  # ids where a checkpoint agrees with the log
    differ: list[tuple[Claim, str, int]] = []  # (claim, recomputed hash, position)
    for entry in entries(chunk):
        position, last_id = position + 1, entry.pk
        intact = intact and entry.prev_hash == running
        running = entry_hash(entry, prev_hash=running)
        intact = intact and entry.hash == running
        for claim in by_id.pop(entry.pk, []):
            if claim.last_hash != running:
                differ.append((claim, running, position))
            elif claim.count != position:
                findings.append(Finding("count", _count(claim, position)))
            else:
                matched.append(entry.pk)

    if differ:
        findings.append(_differs(differ, matched, intact))
    gone = [claim for claims_at in by_id.values() for claim in claims_at]
    tail = [claim for claim in gone if claim.last_id > last_id]
    if tail:
        findings.append(_truncated(tail, last_id, position))
    findings.extend(
        Finding("gone", f"{claim.describe()} names entry id {claim.last_id}, which is gone")
        for claim in sorted(gone, key=lambda c: c.last_id)
        if claim.last_id <= last_id
    )
    return findings


def _forged(claim: Claim) -> str:
    if claim.key_id != key_id():
        return (
            f"forged checkpoint: {claim.describe()} is signed with key {claim.key_id}, "
            f"not the configured key {key_id()} (forged, or the key was changed)"
        )
    return f"forged checkpoint: {claim.describe()} does not match its signature"


def _count(claim: Claim, position: int) -> str:
    return (
        f"entries removed or slipped in: {claim.describe()} counted {claim.count} entries "
        f"up to id {claim.last_id}, the log has {position}"
    )


def _entries(count: int) -> str:
    return f"{count} entry" if count == 1 else f"{count} entries"


def _truncated(tail: list[Claim], last_id: int, position: int) -> Finding:
    newest = max(tail, key=lambda c: (c.last_id, c.count))
    missing = newest.count - position
    return Finding(
        "truncated",
        f"deleted tail: {newest.describe()} vouches for entry id {newest.last_id} "
        f"(hash {newest.last_hash[:16]}…), but the log ends at id {last_id} after "
        f"{_entries(position)}: {_entries(missing) if missing > 0 else 'entries'} after "
        f"id {last_id} gone"
        + (
            f" ({len(tail) - 1} more checkpoint(s) name entries past the end)"
            if len(tail) > 1
            else ""
        ),
    )


def _differs(differ: list[tuple[Claim, str, int]], matched: list[int], intact: bool) -> Finding:
    claim, recomputed, position = min(differ, key=lambda d: d[0].last_id)
    before = [entry_id for entry_id in matched if entry_id < claim.last_id]
    where = (
        f"an entry after id {max(before)} (the newest checkpoint that still matches) "
        f"and up to id {claim.last_id} was changed"
        if before
        else f"an entry up to id {claim.last_id} was changed"
    )
    kind, what = ("rehashed", "re-hashed chain") if intact else ("changed", "changed entries")
    others = len({d[0].source for d in differ}) - 1
    return Finding(
        kind,
        f"{what}: {claim.describe()} vouches for hash {claim.last_hash[:16]}… at entry "
        f"{position}, the log recomputes {recomputed[:16]}… there: {where}"
        + (f"; {others} later checkpoint(s) disagree too" if others else ""),
    )
