"""API keys: created once (the secret is shown then and never again),
looked up by the SHA-256 of the secret, revoked or expired for good.

A secret reads `bk_<8 visible chars>_<43 random url-safe chars>`. The part
up to the second underscore is the key's `prefix`: stored in clear, shown
in lists and used as the actor label (`key:bk_3f9a0c1d`) and as the owner
of idempotency keys. Only the hash of the whole secret is stored; keys are
long random strings, so a fast hash is enough (no salt or stretching: a
guess has 256 bits of entropy to cover). The secret is never logged.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from policies import audit
from policies.models import ApiKey, ApiScope

KEY_PREFIX = "bk_"
_VISIBLE = "abcdefghijklmnopqrstuvwxyz0123456789"  # no "_" or "-": the prefix parses cleanly
_VISIBLE_LEN = 8
_SECRET_BYTES = 32  # 43 url-safe characters
# last_used_at is a hint for operators, not an access log: writing it on
# every request would make each API call a write. Once a minute is enough.
LAST_USED_EVERY = timedelta(minutes=1)
MAX_SECRET_LEN = 100


class ApiKeyError(ValueError):
    """A key cannot be created as asked (unknown scope, empty name)."""


def create_apikey(
    *,
    name: str,
    scopes: Iterable[str],
    workflows: Iterable = (),
    expires_at: datetime | None = None,
    by=None,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its plaintext secret, which is not
    stored anywhere: the caller shows it once. `workflows` (Workflow rows
    or ids) bind the key to those workflows; none means all. `by` is the
    user who created it (recorded, and named in the audit entry)."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in ApiScope.values]
    if unknown:
        raise ApiKeyError(f"unknown scope(s): {', '.join(unknown)}")
    if not name.strip():
        raise ApiKeyError("a key needs a name")
    workflows = list(workflows)
    for _ in range(5):  # the visible prefix is unique; a clash (1 in 36^8) draws again
        prefix = KEY_PREFIX + "".join(secrets.choice(_VISIBLE) for _ in range(_VISIBLE_LEN))
        plaintext = f"{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    name=name.strip()[:200],
                    prefix=prefix,
                    key_hash=hash_secret(plaintext),
                    scopes=scopes,
                    expires_at=expires_at,
                    created_by=by if getattr(by, "pk", None) else None,
                )
                key.workflows.set(workflows)
                audit.record(
                    action="apikey.created",
                    actor=audit.actor_of(by),
                    target=key,
                    data={
                        "name": key.name,
                        "prefix": prefix,
                        "scopes": scopes,
                        "workflows": sorted(w if isinstance(w, int) else w.pk for w in workflows),
                        "expires_at": expires_at,
                    },
                )
            return key, plaintext
        except IntegrityError:
            continue
    raise ApiKeyError("could not draw a unique key prefix")  # pragma: no cover


def revoke_apikey(*, key: ApiKey, by=None) -> bool:
    """Revoke a key for good; False if it was revoked already. One
    conditional UPDATE, so two admins revoking at once write one entry."""
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=Now())
        if revoked:
            audit.record(
                action="apikey.revoked",
                actor=audit.actor_of(by),
                target=key,
                data={"name": key.name, "prefix": key.prefix},
            )
    key.refresh_from_db(fields=["revoked_at"])
    return bool(revoked)


def authenticate_apikey(*, secret: str) -> ApiKey | None:
    """The live key whose secret this is, or None (unknown, revoked or
    expired). The returned key carries `bound_workflow_ids`: the workflows
    it may reach, empty for all."""
    if not secret.startswith(KEY_PREFIX) or len(secret) > MAX_SECRET_LEN:
        return None  # not one of ours: no query
    now = timezone.now()
    key = (
        ApiKey.objects.filter(key_hash=hash_secret(secret), revoked_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .first()
    )
    if key is None:
        return None
    key.bound_workflow_ids = frozenset(key.workflows.values_list("pk", flat=True))
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_EVERY:
        # Conditional, so concurrent requests of one key write it once.
        ApiKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY)
        ).update(last_used_at=now)
    return key


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()
