"""django-q2 entry points for the review queue. Thin: they take ids.

Delivery is at-least-once; telling reviewers is claimed on the request
(`notified_at`), so a task delivered twice sends once.
"""

from __future__ import annotations

from django_q.tasks import async_task

from approvals import sla


def notify(approval_id: int) -> None:
    """The production `BOSUN_REVIEW_NOTIFIER`: queue the telling, so the
    step that created the request goes on at once."""
    async_task(
        "approvals.tasks.tell_reviewers",
        approval_id,
        task_name=f"approval-{approval_id}-notify",
        save=False,
    )


def tell_reviewers(approval_id: int) -> bool:
    return sla.notify_request(approval_id=approval_id)
