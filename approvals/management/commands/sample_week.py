"""Draw the weekly sample review: a stratified random sample per workflow."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from approvals import sampling


class Command(BaseCommand):
    help = (
        "Draw a week's sample of finished runs for each workflow (by default the last "
        "full ISO week). A week already drawn is left as it is."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--week", default="", help='ISO week, e.g. "2026-W47".')
        parser.add_argument("--size", type=int, default=sampling.DEFAULT_SIZE)
        parser.add_argument("--workflow", default="", help="Only this workflow (its slug).")
        parser.add_argument("--seed", default="", help="Seed of the draw (random if omitted).")

    def handle(self, *args, week: str, size: int, workflow: str, seed: str, **options) -> None:
        week = week or sampling.last_full_week()
        if size < 1:
            raise CommandError("--size must be at least 1")
        try:
            drawn = sampling.draw_week(week=week, size=size, seed=seed or None, workflow=workflow)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if not drawn:
            self.stdout.write(f"{week}: no runs finished that week.")
        for review, created in drawn:
            state = "drawn" if created else "already drawn"
            self.stdout.write(
                f"{week} {review.workflow.slug}: {review.items.count()} runs, {state}"
                f" (seed {review.seed})"
            )
