"""Standard Webhooks signatures, one implementation for both directions.

A signature is `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`,
keyed with the base64-decoded part of a `whsec_` secret (any other secret
is used as its UTF-8 bytes). Inbound deliveries are verified with it and
the outbound `webhook.post` tool signs with it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SECRET_PREFIX = "whsec_"


def secret_key(secret: str) -> bytes:
    """The HMAC key of a secret; raises `binascii.Error` for bad base64."""
    if secret.startswith(SECRET_PREFIX):
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    return secret.encode()


def sign(*, secret: str, webhook_id: str, timestamp: int | str, body: bytes) -> str:
    """The `v1,<base64>` signature of one delivery."""
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_matches(expected: str, header: str) -> bool:
    """Whether any of the space-separated signatures in `header` is `expected`
    (several are allowed so that a sender can rotate secrets). Compared in
    constant time."""
    return any(hmac.compare_digest(expected, given) for given in header.split())
