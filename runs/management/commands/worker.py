"""Start a worker cluster: django-q2's `qcluster`, with a sentinel that
renews the cluster's queues when one of its processes is killed (see
`runs.cluster`). Use it instead of `qcluster`. Like `qcluster`, it takes
tasks from the queue named by Q_CLUSTER_NAME when that is set, and warns
when that is not the queue runs are submitted to.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q.conf import Conf

from runs.cluster import Cluster

log = logging.getLogger("bosun.worker")


class Command(BaseCommand):
    help = "Start a worker cluster that executes runs (survives its workers being killed)."

    def handle(self, *args, **options) -> None:
        submitted_to = settings.Q_CLUSTER["name"]
        taken_from = Conf.CLUSTER_NAME
        if taken_from != submitted_to:
            log.warning(
                "this cluster takes tasks from queue %r, but runs are submitted to %r: "
                "it will execute no run unless something else submits to %r",
                taken_from,
                submitted_to,
                taken_from,
            )
        Cluster().start()
