"""Where a call sends data, and the patterns a policy allows it to send to.

A destination is a typed string a tool derives from its arguments:
`email:bob@acme.com` (a recipient) or `host:api.acme.com` (the host of a
URL). Only destinations that arguments control are named: a tool that always
talks to the same vendor names none.

A pattern in a policy's allowlist (or an autonomy rule's trusted
destinations) is one of:

| pattern            | matches                                              |
|--------------------|------------------------------------------------------|
| `*`                | any destination                                      |
| `bob@acme.com`     | that recipient                                       |
| `@acme.com`        | any recipient at acme.com (not at its subdomains)     |
| `@*.acme.com`      | any recipient at a subdomain of acme.com              |
| `api.acme.com`     | that host                                            |
| `*.acme.com`       | any subdomain of acme.com (not acme.com itself)       |

Matching is exact after lower-casing: `acme.com.evil.io` is not `acme.com`,
and `acme.co` is not `acme.com`.
"""

from __future__ import annotations

import re

# What `pattern_problem` accepts: a label of letters, digits and hyphens
# (IDNA names arrive here already encoded as xn--…).
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOST = rf"(?:{_LABEL}\.)*{_LABEL}"
_HOST_PATTERN = re.compile(rf"^(?:\*\.)?{_HOST}$|^\[[0-9a-f:.]+\]$")
_EMAIL_PATTERN = re.compile(rf"^[^@\s*]+@{_HOST}$|^@(?:\*\.)?{_HOST}$")


def email(address: str) -> str:
    return f"email:{address.strip().lower()}"


def host(name: str) -> str:
    return f"host:{name.strip().lower().rstrip('.')}"


def pattern_problem(pattern: str) -> str:
    """Why `pattern` is not a valid allowlist entry ('' when it is)."""
    if not isinstance(pattern, str) or not pattern.strip():
        return "an entry must be a non-empty string"
    value = pattern.strip().lower()
    if value == "*":
        return ""
    if "@" in value:
        if _EMAIL_PATTERN.match(value):
            return ""
        return f"{pattern!r} is not an address, @domain or @*.domain"
    if _HOST_PATTERN.match(value):
        return ""
    return f"{pattern!r} is not a host name or *.domain"


def matches(destination: str, pattern: str) -> bool:
    """Does the allowlist entry `pattern` cover `destination`?"""
    kind, _, value = destination.partition(":")
    entry = pattern.strip().lower()
    if entry == "*":
        return True
    if kind == "email":
        if "@" not in entry:
            return False
        if not entry.startswith("@"):
            return value == entry
        domain = value.rpartition("@")[2]
        return _domain_matches(domain, entry[1:])
    if kind == "host":
        return "@" not in entry and _domain_matches(value, entry)
    return False


def allowed(destination: str, patterns: tuple[str, ...] | list[str]) -> bool:
    return any(matches(destination, pattern) for pattern in patterns)


def _domain_matches(name: str, entry: str) -> bool:
    if entry.startswith("*."):
        suffix = entry[1:]  # ".acme.com"
        return name.endswith(suffix) and len(name) > len(suffix)
    return name == entry
