"""A deterministic stream of inbound leads with the overlap real lead flow has.

500 records a week for 4 weeks. What makes it realistic is not the names but
the overlap the articles describe ("partial overlap with last week's batch,
retries that started over from scratch, the same record arriving from two
sources"): of each week's 500 records

| records | what |
|---|---|
| 294 | a company seen for the first time |
| 100 | a lead from last week's batch, submitted again (another form, another import) |
| 60 | a lead already seen this week, from another source, with other casing or URL |
| 46 | a retried submission: the very same record with the same idempotency key |

so 2,000 records name 1,176 companies: 1.70 records per company, the
articles' "~1.7 enrichments per lead instead of 1.0" for an agent that
enriches every record it sees. These numbers are fixed inputs; nothing is
tuned to a measured result. (In the first week "last week's batch" is the
part of the same week already seen.)

Each record carries its source's idempotency key (`<source>:<record id>`), so
a retry repeats the key and a second source does not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

SEED = 20260601
WEEKS = 4
PER_WEEK = 500
NEW_PER_WEEK = 294
FROM_LAST_WEEK = 100
OTHER_SOURCE = 60
RETRIED = 46
assert NEW_PER_WEEK + FROM_LAST_WEEK + OTHER_SOURCE + RETRIED == PER_WEEK

SOURCES = ["webform", "linkedin_ads", "webinar", "partner", "trade_show"]
_SYLLABLES = [
    "ka", "lo", "ri", "ven", "tor", "mi", "sa", "nex", "dra", "pel", "qui", "zu", "bel",
    "cor", "fin", "ga", "har", "lu", "mon", "ost", "pra", "rho", "sil", "tek", "um", "vor",
]  # fmt: skip
_SUFFIXES = [
    "", "", "", " Labs", " Systems", " Health", " Robotics", " Analytics", " Logistics",
    " Pay", " Cloud", " Works", " Foods", " Energy", " Learning", " Bank",
]  # fmt: skip
_TLDS = [".com", ".com", ".io", ".co", ".ai", ".dev", ".eu"]
FIRST_NAMES = [
    "Dana", "Li", "Sam", "Ana", "Gavin", "Priya", "Jonas", "Maya", "Omar", "Chloé", "Kenji",
    "Sofia", "Lukas", "Amara", "Diego", "Hannah", "Yusuf", "Elena", "Noah", "Ines",
]  # fmt: skip
LAST_NAMES = [
    "Nguyen", "Smith", "Okafor", "Müller", "Rossi", "Kowalski", "Tanaka", "Silva", "Haddad",
    "Berg", "Dubois", "Novak", "Ahmed", "García", "Olsen", "Kaur",
]  # fmt: skip
TITLES = [
    "CEO", "Co-founder", "VP Sales", "Head of Growth", "Director of Marketing",
    "Chief Revenue Officer", "Sales Manager", "Marketing Manager", "RevOps Lead", "Team Lead",
    "Account Executive", "Engineer", "Analyst", "Product Designer", "Student", "Consultant",
    "Customer Success", "Intern",
]  # fmt: skip
NOTES = [
    "Looking for a demo next week.",
    "We process about 300 inbound leads a month and want to stop paying twice for them.",
    "Can you send pricing?",
    "Met your team at the conference.",
]


@dataclass(frozen=True)
class LeadRecord:
    """One submission. `company` is the true domain (for measuring), `key`
    the source's idempotency key, `input` what the source sent."""

    seq: int
    week: int
    day: float  # days since the stream's start
    kind: str  # new | last_week | other_source | retry
    company: str
    key: str
    input: dict[str, Any]


@dataclass(frozen=True)
class _Company:
    domain: str
    name: str
    slug: str
    contact: tuple[str, str, str]  # first name, last name, title


def _contact(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(TITLES)


def _companies(rng: random.Random, count: int) -> list[_Company]:
    seen: set[str] = set()
    out: list[_Company] = []
    while len(out) < count:
        stem = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        suffix = rng.choice(_SUFFIXES)
        domain = stem + suffix.strip().lower() + rng.choice(_TLDS)
        if domain in seen:
            continue
        seen.add(domain)
        name, slug = stem.capitalize() + suffix, stem + suffix.strip().lower()
        out.append(_Company(domain, name, slug, _contact(rng)))
    return out


def _submission(rng: random.Random, company: _Company, *, variant: bool) -> dict[str, Any]:
    """What a source sends about a company's contact. A variant (another
    source, a later week) is the same person spelled its own way: casing,
    URL shape, LinkedIn instead of the website, the email's local part."""
    first, last, title = company.contact
    local = rng.choice((f"{first}.{last}", first, f"{first[0]}{last}"))
    local = local.lower().replace("é", "e").replace("ü", "ue").replace("í", "i")
    email = f"{local}@{company.domain}"
    record: dict[str, Any] = {
        "company": company.name,
        "email": email,
        "first_name": first,
        "last_name": last,
        "title": title,
    }
    shape = rng.randrange(4) if variant else rng.randrange(2)
    if shape == 0:
        record["website"] = f"https://{company.domain}"
    elif shape == 1:
        record["website"] = f"https://www.{company.domain}/"
    elif shape == 2:
        record["company"] = company.name.upper()
        record["website"] = f"http://WWW.{company.domain.upper()}/pricing"
        record["email"] = email.title()
    else:
        record["company"] = company.name.lower() + " inc."
        record["linkedin_url"] = f"https://www.linkedin.com/company/{company.slug}/"
    if rng.random() < 0.15:
        record["message"] = rng.choice(NOTES)
    return record


def week_mix(per_week: int = PER_WEEK) -> dict[str, int]:
    """How many records of each kind a week of `per_week` holds: the mix of
    500 scaled (smaller demos and tests keep the same overlap)."""
    scale = per_week / PER_WEEK
    mix = {
        "last_week": round(FROM_LAST_WEEK * scale),
        "other_source": round(OTHER_SOURCE * scale),
        "retry": round(RETRIED * scale),
    }
    return {"new": per_week - sum(mix.values()), **mix}


class _Stream:
    """Builds the records week by week (one random generator, so the stream
    is the same every time)."""

    def __init__(self, seed: int, weeks: int, per_week: int) -> None:
        self.rng = random.Random(seed)
        self.mix = week_mix(per_week)
        self.pool = iter(_companies(self.rng, self.mix["new"] * weeks))
        self.ids = iter(range(100_001, 10_000_000))

    def record(self, week: int, day: float, kind: str, company: _Company, **extra) -> dict:
        source = extra.pop("source", self.rng.choice(SOURCES))
        return {
            "week": week,
            "day": day,
            "kind": kind,
            "company": company,
            "key": extra.pop("key", f"{source}:{next(self.ids)}"),
            "input": extra.pop("input", None)
            or {**_submission(self.rng, company, variant=kind != "new"), "source": source},
        }

    def week(self, week: int, last_week: list[_Company]) -> tuple[list[dict], list[_Company]]:
        """One week's records, and the companies new in it."""
        rng, mix, start = self.rng, self.mix, week * 7.0
        fresh = [
            self.record(week, start + rng.random() * 7, "new", next(self.pool))
            for _ in range(mix["new"])
        ]
        batch = list(fresh)
        earlier = last_week or [r["company"] for r in fresh]
        for _ in range(mix["last_week"]):
            day = start + rng.random() * 7
            batch.append(self.record(week, day, "last_week", rng.choice(earlier)))
        for _ in range(mix["other_source"]):
            first = rng.choice(fresh)
            day = first["day"] + rng.random() * (start + 7 - first["day"])
            batch.append(self.record(week, day, "other_source", first["company"]))
        for _ in range(mix["retry"]):
            first = rng.choice([r for r in batch if r["kind"] != "retry"])
            day = min(first["day"] + rng.uniform(0.001, 0.05), start + 7 - 1e-6)
            again = {"key": first["key"], "input": dict(first["input"])}
            source = first["input"]["source"]
            batch.append(self.record(week, day, "retry", first["company"], source=source, **again))
        return batch, [r["company"] for r in fresh]


def lead_stream(
    *, seed: int = SEED, weeks: int = WEEKS, per_week: int = PER_WEEK
) -> list[LeadRecord]:
    """The records of `weeks` weeks, in arrival order (deterministic)."""
    stream = _Stream(seed, weeks, per_week)
    records: list[dict] = []
    last_week: list[_Company] = []
    for week in range(weeks):
        batch, last_week = stream.week(week, last_week)
        records.extend(batch)
    records.sort(key=lambda r: r["day"])
    return [
        LeadRecord(
            seq=index,
            week=r["week"],
            day=r["day"],
            kind=r["kind"],
            company=r["company"].domain,
            key=r["key"],
            input=r["input"],
        )
        for index, r in enumerate(records, start=1)
    ]


@dataclass(frozen=True)
class TicketRecord:
    day: float
    ticket_id: str


def ticket_stream(
    *, seed: int = SEED, weeks: int = WEEKS, per_week: int = 20
) -> list[TicketRecord]:
    """Support tickets over the same weeks; two carry a prompt-injection
    attempt (ids starting `INJ-`, see `demo.vendors`)."""
    rng = random.Random(seed + 1)
    tickets = [
        TicketRecord(day=rng.random() * 7 * weeks, ticket_id=f"T-{20_000 + n}")
        for n in range(per_week * weeks)
    ]
    # One injection attempt in the middle of the period, one in the last hours.
    tickets += [
        TicketRecord(day=3.5 * weeks, ticket_id="INJ-1"),
        TicketRecord(day=7 * weeks - 0.1, ticket_id="INJ-2"),
    ]
    return sorted(tickets, key=lambda t: t.day)
