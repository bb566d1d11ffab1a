"""Idempotency keys for API requests, after Stripe's rules.

A request with an `Idempotency-Key` header inserts an `IdempotencyRecord`
(owner = the API key's prefix, key) *before* it is handled: the unique
constraint on (owner, key) decides which of concurrent duplicates goes
ahead, never a check-then-insert. The winner's answer is stored; the
others get it back byte for byte, or 409 while the winner is still busy,
or 422 when they are a different request under the same key.

"The same request" means the same method, path and parameters: the JSON
body is compared parsed (`canonical_body`), so a retry that spaces or
orders its keys otherwise is still the same request; the query string is
compared sorted.

A record may be claimed again, by one conditional UPDATE, when
- it is older than `REPLAY_WINDOW` (24 h): the key may be reused;
- its answer was not stored (a 5xx, 409 or 429; or a 400, 404 or 422 for
  a request that failed validation or named something missing released
  it): the client retries, or corrects the request, with the same key;
- its handler died (`locked_until` has passed while it was in progress).

Expired records are dead weight; `purge_idempotency_keys` deletes them (for a
periodic sweep).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qsl, urlencode

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Q, When
from django.db.models.functions import Now

from integrations.models import IdempotencyRecord

REPLAY_WINDOW = timedelta(hours=24)
# How long a claim protects a request in progress. Handlers that start a
# run take milliseconds; a claim this old belongs to a handler that died.
LOCK_FOR = timedelta(seconds=60)
RETRY_AFTER_S = 1


class KeyReused(Exception):
    code = "idempotency_key_reused"


class KeyInProgress(Exception):
    code = "idempotency_in_progress"
    retry_after = RETRY_AFTER_S


@dataclass(frozen=True)
class Claim:
    """This request holds the key and handles it. `work_key` is stable
    across retries of the same request under the same key (and differs for
    another body or after the key expired): pass it on as the idempotency
    key of the work, so a retry after a lost answer finds the work done."""

    record_id: int
    request_hash: str
    work_key: str


@dataclass(frozen=True)
class Stored:
    """The first answer to this request, to be sent again as it was."""

    status: int
    headers: dict[str, str]
    body: bytes


def canonical_body(body: bytes) -> bytes:
    """The parameters a body carries, in one spelling: JSON parsed and
    written back with sorted keys, no spaces and ASCII escapes, so that
    `{"a": 1, "b": 2}` and `{"b":2,"a":1}` compare equal (a repeated key
    counts once, with its last value, as the handler reads it). A body that
    is empty or not JSON is compared as sent."""
    if not body.strip():
        return b""
    try:
        parsed = json.loads(body)
        return json.dumps(parsed, sort_keys=True, separators=(",", ":")).encode("ascii")
    except (ValueError, RecursionError):  # not JSON (or nested past recursion): as sent
        return body


def canonical_path(path: str) -> str:
    """The path with its query parameters sorted."""
    route, _, query = path.partition("?")
    if not query:
        return route
    return f"{route}?{urlencode(sorted(parse_qsl(query, keep_blank_values=True)))}"


def request_fingerprint(*, method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(f"{method.upper()}\n{canonical_path(path)}\n".encode())
    digest.update(canonical_body(body))
    return digest.hexdigest()


def claim_idempotency_key(
    *, owner: str, key: str, method: str, path: str, body: bytes
) -> Claim | Stored:
    """Claim `key` for this request, or return the stored answer of the
    same request. Raises KeyReused (another request holds the key) or
    KeyInProgress (this request is being handled right now)."""
    request_hash = request_fingerprint(method=method, path=path, body=body)
    fields = {"method": method[:10], "path": path[:300], "request_hash": request_hash}
    record: IdempotencyRecord | None
    for _ in range(3):  # a record purged between our statements: go again
        try:
            with (
                transaction.atomic()
            ):  # a savepoint: a lost race leaves the caller's transaction usable
                record = IdempotencyRecord.objects.create(
                    owner=owner, key=key, in_progress=True, locked_until=Now() + LOCK_FOR, **fields
                )
            return _claim(record)  # created_at as stored (microseconds, both databases)
        except IntegrityError:
            pass
        expired = Q(created_at__lt=Now() - REPLAY_WINDOW)
        free = Q(in_progress=False, status_code__isnull=True) | Q(
            in_progress=True, locked_until__lt=Now()
        )
        # One conditional UPDATE: of concurrent claimers of a free record
        # exactly one changes it; the rest see it in progress below.
        claimed = (
            IdempotencyRecord.objects.filter(owner=owner, key=key)
            .filter(expired | free)
            .update(
                in_progress=True,
                locked_until=Now() + LOCK_FOR,
                status_code=None,
                response_headers={},
                response_body=None,
                # A reused key starts a new window (and a new work key); a
                # released or abandoned one keeps its own.
                created_at=Case(When(expired, then=Now()), default=F("created_at")),
                **fields,
            )
        )
        record = IdempotencyRecord.objects.filter(owner=owner, key=key).first()
        if record is None:
            continue
        if claimed:
            return _claim(record)
        if record.request_hash != request_hash:
            raise KeyReused("this Idempotency-Key was used with a different request; use a new key")
        if record.in_progress or record.status_code is None:
            raise KeyInProgress("a request with this Idempotency-Key is in progress")
        return Stored(
            status=record.status_code,
            headers=dict(record.response_headers),
            body=bytes(record.response_body or b""),
        )
    raise KeyInProgress("this Idempotency-Key is changing hands; try again")


def _claim(record: IdempotencyRecord) -> Claim:
    seed = f"{record.owner}\n{record.key}\n{record.request_hash}\n{record.created_at.isoformat()}"
    return Claim(
        record_id=record.pk,
        request_hash=record.request_hash,
        work_key="api:" + hashlib.sha256(seed.encode()).hexdigest()[:48],
    )


def store_idempotent_answer(
    *, claim: Claim, status: int, headers: dict[str, str], body: bytes
) -> None:
    """Keep the answer for replays. Conditional on still holding the claim:
    a handler that outlived its lock does not overwrite its successor."""
    IdempotencyRecord.objects.filter(
        pk=claim.record_id, in_progress=True, request_hash=claim.request_hash
    ).update(
        in_progress=False,
        locked_until=None,
        status_code=status,
        response_headers=headers,
        response_body=body,
    )


def release_idempotency_key(*, claim: Claim) -> None:
    """Give the key back without an answer: the client may retry with it."""
    IdempotencyRecord.objects.filter(
        pk=claim.record_id, in_progress=True, request_hash=claim.request_hash
    ).update(in_progress=False, locked_until=None, status_code=None)


def purge_idempotency_keys(*, older_than: timedelta = REPLAY_WINDOW) -> int:
    """Delete records older than the replay window (not those in progress);
    returns how many. For the periodic sweep."""
    deleted, _ = (
        IdempotencyRecord.objects.filter(created_at__lt=Now() - older_than)
        .exclude(in_progress=True, locked_until__gte=Now())
        .delete()
    )
    return deleted
