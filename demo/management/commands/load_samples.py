"""Install the sample workflows and load the demo data (idempotent)."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandParser

from approvals.sampling import draw_week, last_full_week
from demo.history import load_demo
from demo.sample_data.leads import PER_WEEK, WEEKS
from demo.samples import install_samples


class Command(BaseCommand):
    help = (
        "Install the sample workflows (lead qualification, support refunds) and load four "
        "weeks of demo runs in every state. Safe to run again: nothing is duplicated."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-demo", action="store_true", help="Only install the sample workflows."
        )
        parser.add_argument("--weeks", type=int, default=WEEKS, help="Weeks of history.")
        parser.add_argument("--per-week", type=int, default=PER_WEEK, help="Inbound leads a week.")
        parser.add_argument(
            "--jobs", type=int, default=None, help="Processes playing the history (default 2)."
        )

    def handle(self, *args, **options) -> None:
        if options["no_demo"]:
            for version in install_samples().values():
                self.stdout.write(f"workflow {version}")
            return
        if options["weeks"] < 1 or options["per_week"] < 10:
            self.stderr.write("--weeks must be at least 1 and --per-week at least 10")
            raise SystemExit(2)
        began = time.monotonic()
        report = load_demo(
            weeks=options["weeks"],
            per_week=options["per_week"],
            jobs=options["jobs"],
            log=self.stdout.write,
        )
        for line in report.lines():
            self.stdout.write(line)
        # The weekly sample review opens with last week's draw waiting.
        week = last_full_week()
        drawn = draw_week(week=week, seed=f"demo-{week}")
        self.stdout.write(
            f"weekly sample {week}: "
            + (", ".join(f"{s.workflow.slug} ({s.items.count()} runs)" for s, _ in drawn) or "none")
        )
        self.stdout.write(f"demo data loaded in {time.monotonic() - began:.1f} s")
