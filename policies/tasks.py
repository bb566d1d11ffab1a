"""django-q2 entry points of the policies app. Thin, and safe to run twice."""

from __future__ import annotations

from django.conf import settings

from policies import audit_checkpoints


def audit_checkpoint() -> int | None:
    """The schedule's checkpoint of the audit chain (none while the log is
    idle), appended to BOSUN_AUDIT_CHECKPOINT_FILE when one is set."""
    checkpoint = audit_checkpoints.take_checkpoint(only_if_grown=True)
    if checkpoint is None:
        return None
    if settings.BOSUN_AUDIT_CHECKPOINT_FILE:
        audit_checkpoints.export_checkpoint(checkpoint, path=settings.BOSUN_AUDIT_CHECKPOINT_FILE)
    return checkpoint.pk
