"""Retry-After, read one way everywhere (the HTTP tools, the model providers)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: a number of seconds or an
    HTTP date (RFC 9110). None when absent or unreadable; never negative."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None or parsed[9] is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))


def retry_after_from_headers(headers: Mapping[str, str]) -> float | None:
    """`retry-after-ms` (sent by some APIs, more precise) or else `retry-after`."""
    try:
        return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except (KeyError, TypeError, ValueError):
        pass
    return parse_retry_after(headers.get("retry-after"))
