"""Fixtures for the sample workflows: installed samples, leads, a run driver."""

from __future__ import annotations

from typing import Any

import pytest

from demo.samples import install_samples
from runs import engine
from runs.models import Run
from tests.conftest import drive


@pytest.fixture
def samples(db):
    """Both sample workflows installed and published (with rubric, policies
    and event types), as {slug: WorkflowVersion}."""
    return install_samples()


def lead(company: str, domain: str, title: str, **extra: Any) -> dict[str, Any]:
    """A lead as a web form sends it."""
    return {
        "company": company,
        "email": f"dana@{domain}",
        "website": f"https://{domain}",
        "first_name": "Dana",
        "title": title,
        "source": "webform",
        **extra,
    }


# Scores under the sample rubric follow from the enrichment of each domain
# (demo.vendors.company_profile) and the contact's title.
OUTREACH = lead("Acme Robotics", "acme-robotics.example", "VP Operations")  # 88
NURTURE = lead("Umbrella", "umbrella.example", "Engineer")  # 60
ARCHIVE = lead("Globex", "globex.example", "Engineer")  # 20.5


def run_of(workflow: str, input: dict[str, Any], key: str | None = None) -> Run:
    """Start a run and drive it until it waits or ends."""
    return drive(engine.start_run(workflow=workflow, input=input, idempotency_key=key).run.pk)
