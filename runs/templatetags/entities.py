"""`{% run_entities run as named %}`: the entities a run's input names, for
links from the run page to their console pages (runs.search.entities_in).
Their keys are redacted for someone who may not see personal data."""

from __future__ import annotations

from typing import Any

from django import template

from lib.screening import redact
from runs.models import Run
from runs.search import entities_in

register = template.Library()


@register.simple_tag(takes_context=True)
def run_entities(context: dict[str, Any], run: Run) -> list[dict[str, Any]]:
    request = context.get("request")
    personal = request is not None and request.user.has_perm("runs.view_personal_data")
    return [
        {
            "pk": entity.pk,
            "label": f"{entity.type}:{entity.key if personal else redact(entity.key)}",
        }
        for entity in entities_in(run.input)
    ]
