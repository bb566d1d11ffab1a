"""Console page of an entity: what the knowledge graph holds about it (its
events with their provenance and validity, what holds now, e.g. a pause
and until when), the runs that touched it and what they spent (over its
newest TOTALS_SHOWN runs: the page says when there are more).

Needs `runs.view_run`: the page is about what runs did. Event payloads are
redacted for anyone without `runs.view_personal_data`, as step records are,
and so are keys (a person's key is an email address).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from knowledge import memory
from knowledge.models import Entity
from lib.console import console_view
from lib.screening import redact, redact_value
from runs.models import Run
from runs.search import entity_match, newest_ids

EVENTS_SHOWN = 100
RUNS_SHOWN = 50
# The run count and spend are over at most this many of its newest runs.
TOTALS_SHOWN = 1000
RUN_FIELDS = (
    "id", "status", "wait_reason", "current_step", "outcome", "success", "cost_usd",
    "created_at", "workflow__slug", "version__number",
)  # fmt: skip


def _state(event: memory.HistoryEvent, now: datetime) -> str:
    if event.superseded:
        return "superseded"
    if event.valid_from > now:
        return "not yet valid"
    if event.valid_until is not None and event.valid_until <= now:
        return "expired"
    return "active"


@require_GET
@console_view("runs.view_run")
def entity_detail(request: HttpRequest, entity_id: int) -> HttpResponse:
    entity = get_object_or_404(Entity.objects.prefetch_related("aliases"), pk=entity_id)
    history = memory.entity_history(entity=entity, limit=EVENTS_SHOWN)
    now = timezone.now()
    personal = request.user.has_perm("runs.view_personal_data")
    events = [
        {
            "event": event,
            "state": _state(event, now),
            "payload": event.payload if personal else redact_value(event.payload),
        }
        for event in history.events
    ]
    # The newest TOTALS_SHOWN runs that touched it, found per way of naming
    # it (each by its index); the figures are over those, so an account
    # that most runs name costs what one named by a few does.
    found = newest_ids(Run.objects.all(), entity_match(entity).conditions(), limit=TOTALS_SHOWN + 1)
    capped = len(found) > TOTALS_SHOWN
    runs = Run.objects.filter(pk__in=found[:TOTALS_SHOWN])
    totals = runs.aggregate(runs=Count("id"), cost=Sum("cost_usd"))
    credits: dict[str, int] = {}
    for spent in runs.exclude(credits={}).values_list("credits", flat=True):
        for vendor, amount in (spent or {}).items():
            credits[vendor] = credits.get(vendor, 0) + int(amount)
    context: dict[str, Any] = {
        "nav": "search",
        "entity": entity,
        "key": entity.key if personal else redact(entity.key),
        "name": entity.name if personal else redact(entity.name),
        "aliases": [alias.key if personal else redact(alias.key) for alias in entity.aliases.all()],
        "attributes": entity.attributes if personal else redact_value(entity.attributes),
        "events": events,
        "holding": [row for row in events if row["state"] == "active"],
        "events_limit": EVENTS_SHOWN,
        "runs": list(
            Run.objects.filter(pk__in=found[:RUNS_SHOWN])
            .select_related("workflow", "version")
            .only(*RUN_FIELDS)
            .order_by("-id")
        ),
        "runs_limit": RUNS_SHOWN,
        "run_count": totals["runs"],
        "capped": capped,
        "cost": totals["cost"] or Decimal(0),
        "credits": ", ".join(f"{v} {n:,} cr" for v, n in sorted(credits.items())),
        "search_url": f"{reverse('console-run-search')}?{urlencode({'q': entity.key})}",
    }
    return render(request, "console/knowledge/entity.html", context)
