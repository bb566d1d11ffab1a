"""Small generic tools that need nothing outside the process."""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, Field

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

    def run(self, args: Args, call: ToolCall) -> Result:
        time.sleep(args.seconds)
        return self.Result(waited_s=args.seconds)


_DOMAIN = re.compile(r"^(?:https?://)?(?:www\.)?([^/:?#\s]+)", re.IGNORECASE)


class NormalizeLead(Tool):
    """Cleans an inbound lead: trimmed name, lower-case email, bare domain."""

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
        employees: int
        country: str
        title: str

    def run(self, args: Args, call: ToolCall) -> Result:
        email = args.email.strip().lower()
        domain = ""
        if args.website:
            match = _DOMAIN.match(args.website.strip())
            domain = match.group(1).lower() if match else ""
        if not domain and "@" in email:
            domain = email.rsplit("@", 1)[1]
        return self.Result(
            company=" ".join(args.company.split()),
            email=email,
            domain=domain,
            employees=args.employees,
            country=args.country.strip().upper(),
            title=args.title.strip(),
        )
