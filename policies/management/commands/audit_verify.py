"""manage.py audit_verify — check the audit log's hash chain."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from policies import audit


class Command(BaseCommand):
    help = "Recompute the audit log's hash chain and report the first broken row."

    def handle(self, *args, **options) -> None:
        checked, broken = audit.verify()
        if broken is not None:
            raise CommandError(
                f"audit chain broken at row {broken.position} (id {broken.entry_id}): "
                f"{broken.reason}; {checked} row(s) read"
            )
        self.stdout.write(f"audit chain intact: {checked} row(s)")
