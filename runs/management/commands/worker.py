"""Start a worker cluster: django-q2's `qcluster`, with a sentinel that
renews the cluster's queues when one of its processes is killed (see
`runs.cluster`). Use it instead of `qcluster`. Like `qcluster`, it takes
tasks from the queue named by Q_CLUSTER_NAME when that is set (one of
Q_CLUSTER["ALT_CLUSTERS"]; the settings refuse any other name), and warns
when that queue is not the one runs are submitted to.
"""

from __future__ import annotations

import logging
import os

from django.conf import settings
from django.core.management.base import BaseCommand

log = logging.getLogger("bosun.worker")


class Command(BaseCommand):
    help = "Start a worker cluster that executes runs (survives its workers being killed)."

    def handle(self, *args, **options) -> None:
        # An unknown Q_CLUSTER_NAME is refused by the settings already.
        submitted_to = settings.Q_CLUSTER["name"]
        taken_from = os.environ.get("Q_CLUSTER_NAME") or submitted_to
        if taken_from != submitted_to:
            log.warning(
                "this cluster takes tasks from queue %r, but runs are submitted to %r: "
                "it will execute no run unless something else submits to %r",
                taken_from,
                submitted_to,
                taken_from,
            )
        from runs.cluster import Cluster

        Cluster().start()
