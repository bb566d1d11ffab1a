"""Small generic tools that need nothing outside the process."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

from pydantic import BaseModel, Field

from lib.maildomains import mailbox_provider
from runs.tools.base import Tool, ToolCall


class Echo(Tool):
    """Returns its arguments: handy for wiring and for tests."""

    name = "echo"
    description = "Return the given value unchanged."

    class Args(BaseModel):
        value: Any = None

    class Result(BaseModel):
        value: Any = None

    def run(self, args: Args, call: ToolCall) -> Result:
        return self.Result(value=args.value)


class Wait(Tool):
    """Sleeps for a while (bounded): stands in for a slow external call."""

    name = "wait"

    class Args(BaseModel):
        seconds: float = Field(ge=0, le=60)

    class Result(BaseModel):
        waited_s: float

    def stub(self, args: Args) -> Result:
        return self.Result(waited_s=0)

    def run(self, args: Args, call: ToolCall) -> Result:
        time.sleep(args.seconds)
        return self.Result(waited_s=args.seconds)


DomainSource = Literal["website", "email", "none"]
Mailbox = Literal["company", "free_mail", "disposable", "none"]
_DOMAIN = re.compile(r"^(?:https?://)?(?:www\.)?([^/:?#\s]+)", re.IGNORECASE)


class NormalizeLead(Tool):
    """Cleans an inbound lead: trimmed name, lower-case email, bare domain.

    `domain` is the company's domain: the website's, else the email's. A
    free-mail or disposable domain (`lib.maildomains`) never stands for a
    company, from either: `jane@gmail.com` without a website gives no
    domain. `domain_source` says where the domain came from (`website`,
    `email`, or `none`) and `mailbox` what the email's domain is
    (`company`, `free_mail`, `disposable`, or `none` without an address).
    """

    name = "lead.normalize"

    class Args(BaseModel):
        company: str = Field(min_length=1, max_length=200)
        email: str = Field(default="", max_length=254)
        website: str = Field(default="", max_length=500)
        employees: int = Field(default=0, ge=0)
        country: str = Field(default="", max_length=80)
        title: str = Field(default="", max_length=200)

    class Result(BaseModel):
        company: str
        email: str
        domain: str
        domain_source: DomainSource
        mailbox: Mailbox
        employees: int
        country: str
        title: str

    def run(self, args: Args, call: ToolCall) -> Result:
        source: DomainSource
        email = args.email.strip().lower()
        email_domain = email.rsplit("@", 1)[1] if "@" in email else ""
        mailbox: Mailbox = "none"
        if email_domain:
            mailbox = mailbox_provider(email_domain) or "company"
        website = ""
        if args.website:
            match = _DOMAIN.match(args.website.strip())
            website = match.group(1).lower() if match else ""
        domain, source = "", "none"
        if website and mailbox_provider(website) is None:
            domain, source = website, "website"
        elif mailbox == "company":  # no usable website: the address's domain
            domain, source = email_domain, "email"
        return self.Result(
            company=" ".join(args.company.split()),
            email=email,
            domain=domain,
            domain_source=source,
            mailbox=mailbox,
            employees=args.employees,
            country=args.country.strip().upper(),
            title=args.title.strip(),
        )
