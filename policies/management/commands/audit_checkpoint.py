"""manage.py audit_checkpoint — sign the audit chain's head now."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from policies import audit_checkpoints


class Command(BaseCommand):
    help = (
        "Write a signed checkpoint of the audit chain's head to its table, and append it "
        "to --export PATH and to BOSUN_AUDIT_CHECKPOINT_FILE when set."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--export", metavar="PATH", help="Also append the checkpoint to PATH as a JSON line."
        )

    def handle(self, *args, export: str | None, **options) -> None:
        checkpoint = audit_checkpoints.take_checkpoint()
        assert checkpoint is not None  # always written when not only_if_grown
        paths = dict.fromkeys(p for p in (export, settings.BOSUN_AUDIT_CHECKPOINT_FILE) if p)
        for path in paths:
            try:
                audit_checkpoints.export_checkpoint(checkpoint, path=path)
            except OSError as exc:
                raise CommandError(
                    f"checkpoint #{checkpoint.pk} is written, but not appended to {path}: {exc}"
                ) from None
        self.stdout.write(
            f"checkpoint #{checkpoint.pk}: entry id {checkpoint.last_id}, "
            f"{checkpoint.count} entries, hash {checkpoint.last_hash[:16]}…"
            + "".join(f"; appended to {path}" for path in paths)
        )
