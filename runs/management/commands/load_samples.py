"""Load the sample workflows and start a few demo runs (idempotent)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from runs import engine
from runs.samples import SAMPLE_LEADS, SAMPLE_WORKFLOWS, install_workflow


class Command(BaseCommand):
    help = "Install the sample workflows and start demo runs."

    def handle(self, *args, **options) -> None:
        for spec in SAMPLE_WORKFLOWS:
            version = install_workflow(spec)
            self.stdout.write(f"workflow {version}")
        created = 0
        for lead in SAMPLE_LEADS:
            started = engine.start_run(
                workflow="lead-qualification",
                input=lead,
                idempotency_key=f"sample-{lead['email']}",
            )
            created += started.created
        self.stdout.write(
            f"{created} demo run(s) started, {len(SAMPLE_LEADS) - created} already there"
        )
