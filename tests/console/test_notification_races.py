"""Sweeps racing on PostgreSQL: each event told once per route."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from policies.models import NotificationDelivery, NotificationKind, NotificationRoute
from policies.notifications import notify_dead_letters
from runs.models import Run
from tests.conftest import race
from tests.console import runs_fixtures as fx
from tests.console.runs_fixtures import add_run

pytestmark = [
    pytest.mark.postgres_only,
    pytest.mark.django_db(transaction=True),
]

two_step_version = fx.two_step_version


def test_eight_sweeps_at_once_tell_each_dead_letter_once_per_route(two_step_version):
    an_hour_ago = timezone.now() - timedelta(hours=1)
    for name in ("oncall", "leads"):
        NotificationRoute.objects.create(
            name=name, kind=NotificationKind.DEAD_LETTER, emails=f"{name}@example.com"
        )
    NotificationRoute.objects.update(created_at=an_hour_ago)
    dead = [add_run(two_step_version, status="failed", error="boom") for _ in range(5)]
    Run.objects.filter(pk__in=[run.pk for run in dead]).update(dead_lettered_at=timezone.now())
    mail.outbox.clear()

    told = race(8, lambda i: notify_dead_letters())
    assert not [result for result in told if isinstance(result, Exception)]
    # (two sweeps may each claim one route of the same run: both report it)
    assert {pk for result in told for pk in result} == {run.pk for run in dead}
    recipients = sorted(m.to[0] for m in mail.outbox)
    assert recipients == ["leads@example.com"] * 5 + ["oncall@example.com"] * 5
    assert NotificationDelivery.objects.filter(sent_at__isnull=False).count() == 10
