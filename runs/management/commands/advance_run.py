"""Advance one run in the foreground: for debugging and for crash tests."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from runs import engine


class Command(BaseCommand):
    help = "Claim a run and execute its steps here until it waits or ends."

    def add_arguments(self, parser) -> None:
        parser.add_argument("run_id", type=int)
        parser.add_argument("--lease", type=float, default=None, help="Lease in seconds.")
        parser.add_argument("--worker", default=None, help="Worker id to record.")

    def handle(self, *args, run_id: int, lease: float | None, worker: str | None, **options):
        result = engine.advance_run(run_id, worker=worker, lease_s=lease)
        self.stdout.write(result.value)
