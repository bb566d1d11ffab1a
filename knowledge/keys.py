"""Entity keys, spelled one way per entity type.

Every writer and reader of an entity by key (the knowledge steps, the
services, admin, the API, the tool gate through `memory.guarding_events`)
passes the raw value through the type's normaliser, so `https://www.Acme.com/`,
`acme.com.` and `bob@acme.com` are all the account `acme.com`.

A normaliser takes the raw text and returns a `Key`: the normalised value
and whether it is in the type's canonical form (`bareco` is a usable
account key, but not a domain, so workflows keyed by domain never meet it),
or None when nothing usable is left (empty, `mailto:`, `https://`).

The registry is `settings.BOSUN_ENTITY_KEYS`, entity type -> dotted path;
a type not listed gets `name_key`. Pure functions: no database.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parseaddr
from encodings import idna
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

DOMAIN_FORM = "a domain such as acme.com"
EMAIL_FORM = "an email address such as bob@acme.com"
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TLD = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})  # IDNA's other full stops


@dataclass(frozen=True)
class Key:
    """A normalised key; `canonical` False says it is usable but not in the
    type's canonical form, which `form` then describes."""

    value: str
    canonical: bool = True
    form: str = ""


Normaliser = Callable[[str], "Key | None"]


# ------------------------------------------------------------ normalisers


def name_key(raw: str) -> Key | None:
    """Any other type: trimmed, inner whitespace collapsed, lower-cased."""
    value = " ".join(str(raw).split()).lower()
    return Key(value) if value else None


def domain_key(raw: str) -> Key | None:
    """An account: its domain, lower-case ASCII (IDNA), without scheme,
    `www.`, port, path or trailing dot. An email address gives its domain,
    a URL its host. Anything else is kept as a name, not canonical."""
    text = " ".join(str(raw).split())
    if not text:
        return None
    if "://" in text or "@" in text or text.lower().startswith("mailto:"):
        host = _host(text)
        if not host:
            return None  # an address or URL with no host in it
        domain = _domain(host)
        if domain is not None:
            return Key(domain)
        return Key(host.lower().rstrip("."), canonical=False, form=DOMAIN_FORM)
    if " " not in text:
        domain = _domain(_host("//" + text) or "")
        if domain is not None:
            return Key(domain)
    return Key(text.lower(), canonical=False, form=DOMAIN_FORM)


def email_key(raw: str) -> Key | None:
    """A person: an email address, trimmed and lower-cased (the domain as
    `domain_key` spells it, `www.` kept). Anything else is kept as a name,
    not canonical."""
    text = " ".join(str(raw).split())
    if not text:
        return None
    address = (parseaddr(text)[1] if "<" in text else text).strip()
    if address.lower().startswith("mailto:"):
        address = address[len("mailto:") :]
    local, at, host = address.rpartition("@")
    if not at:
        return Key(text.lower(), canonical=False, form=EMAIL_FORM)
    if not local or not host:
        return None  # `bob@`, `@acme.com`
    domain = _domain(host, strip_www=False)
    if " " in local or domain is None:
        return Key(text.lower(), canonical=False, form=EMAIL_FORM)
    return Key(f"{local.lower()}@{domain}")


def _host(text: str) -> str | None:
    if "@" in text and "://" not in text:
        address = (parseaddr(text)[1] if "<" in text else text).strip()
        return address.rpartition("@")[2] or None
    try:
        return urlsplit(text).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _domain(host: str, *, strip_www: bool = True) -> str | None:
    """`host` as a lower-case ASCII domain of two labels or more, or None."""
    host = host.strip().translate(_DOTS).rstrip(".")
    labels: list[str] = []
    for label in host.split("."):
        if not label.isascii():
            try:
                label = idna.ToASCII(label).decode("ascii")
            except UnicodeError:
                return None
        label = label.lower()
        if not _LABEL.fullmatch(label):
            return None
        labels.append(label)
    if strip_www and labels[:1] == ["www"] and len(labels) > 2:
        labels = labels[1:]
    if len(labels) < 2 or not _TLD.fullmatch(labels[-1]):
        return None  # a single label, or an IP address
    domain = ".".join(labels)
    return domain if len(domain) <= 253 else None


# --------------------------------------------------------------- registry


def normaliser(entity_type: str) -> Normaliser:
    """The normaliser of `entity_type`: `settings.BOSUN_ENTITY_KEYS`, else
    `name_key`."""
    path = settings.BOSUN_ENTITY_KEYS.get(entity_type)
    if path is None:
        return name_key
    found: Normaliser = import_string(path)
    return found


def normalise(entity_type: str, raw: str) -> Key | None:
    """`raw` as a key of `entity_type`, or None when nothing usable is left."""
    return normaliser(entity_type)(raw)


def check_registry() -> None:
    """Import every listed normaliser; a bad path fails at start-up."""
    for entity_type, path in settings.BOSUN_ENTITY_KEYS.items():
        try:
            found = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(
                f"BOSUN_ENTITY_KEYS[{entity_type!r}]: cannot import {path!r}: {exc}"
            ) from None
        if not callable(found):
            raise ImproperlyConfigured(
                f"BOSUN_ENTITY_KEYS[{entity_type!r}]: {path!r} is not callable"
            )
