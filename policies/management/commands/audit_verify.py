"""manage.py audit_verify — check the audit log's hash chain and checkpoints."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from policies import audit, audit_checkpoints
from policies.audit_checkpoints import Finding


class Command(BaseCommand):
    help = (
        "Recompute the audit log's hash chain, report the first broken row, and hold "
        "every signed checkpoint (the table's, and those of --checkpoints PATH) against it."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--checkpoints",
            metavar="PATH",
            action="append",
            default=[],
            help="A file of exported checkpoints (JSON lines) to verify too; may be repeated.",
        )

    def handle(self, *args, checkpoints: list[str], **options) -> None:
        checked, broken = audit.verify()
        findings: list[str] = []
        if broken is not None:
            findings.append(
                f"audit chain broken at row {broken.position} (id {broken.entry_id}): "
                f"{broken.reason}; {checked} row(s) read"
            )
        table = audit_checkpoints.claims_in_table()
        claims = list(table)
        problems: list[Finding] = []
        for path in checkpoints:
            try:
                exported, unreadable = audit_checkpoints.claims_in_file(path)
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc}") from None
            # A checkpoint exported from the table is checked once, as the table's.
            held = {claim.signed() for claim in claims}
            claims += [claim for claim in exported if claim.signed() not in held]
            problems += unreadable + audit_checkpoints.unlisted(exported, table)
        problems += audit_checkpoints.verify_checkpoints(claims)
        findings += [problem.message for problem in problems]
        if findings:
            raise CommandError("\n".join(findings))
        if claims:
            self.stdout.write(
                f"audit chain intact: {checked} row(s); {len(claims)} checkpoint(s) match"
            )
        else:
            self.stdout.write(f"audit chain intact: {checked} row(s)")
            self.stderr.write(
                "no checkpoints yet: a deleted tail would not show "
                "(manage.py audit_checkpoint writes one)"
            )
