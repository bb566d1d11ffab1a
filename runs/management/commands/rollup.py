"""Roll up the days of runs the dashboard has not rolled up yet (runs.rollup).

A django-q2 schedule does it every 10 minutes; this is for operators (after
an import, or to see what a pass does) and benchmarks. Safe beside the
schedule: passes take turns.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from runs.rollup import DAYS_PER_PASS, roll_up_days


class Command(BaseCommand):
    help = "Roll up every finished UTC day of runs not rolled up yet, or stale."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--days-per-pass",
            type=int,
            default=DAYS_PER_PASS,
            help="Days rolled up per transaction.",
        )

    def handle(self, *args, days_per_pass: int, **options) -> None:
        while True:
            done = roll_up_days(limit=days_per_pass)
            days = ", ".join(day.isoformat() for day in sorted(done.rolled)) or "none"
            self.stdout.write(
                f"rolled up {len(done.rolled)} day(s): {days};"
                f" watermark {done.finished_before.isoformat()}; {done.left} left"
            )
            if not done.left:
                return
