"""Ring for due timers and expired leases, every interval, until stopped.

Run one beside the workers (several are harmless: each due run is taken by
one sweeper). A django-q2 schedule also sweeps once a minute as a safety
net; this loop is what makes short backoffs and lease recovery prompt.
"""

from __future__ import annotations

import logging
import signal
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from approvals import sla
from policies.notifications import notify_dead_letters
from runs import engine

log = logging.getLogger("bosun.sweeper")
SLA_SWEEP_S = 10.0


class Command(BaseCommand):
    help = "Ring the doorbell for runs whose timers are due, in a loop."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--interval", type=float, default=settings.BOSUN_SWEEP_INTERVAL_S)
        parser.add_argument("--once", action="store_true", help="Sweep once and exit.")

    def handle(self, *args, interval: float, once: bool, **options) -> None:
        stopping = False

        def stop(signum, frame):  # noqa: ARG001
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        sla_due = 0.0
        while not stopping:
            try:
                engine.sweep()
                # Approval SLAs need no second-by-second precision, and
                # their sweep may send mail: run it every SLA_SWEEP_S.
                if time.monotonic() >= sla_due:
                    sla_due = time.monotonic() + SLA_SWEEP_S
                    engine.decide_timed_out_approvals()
                    sla.sweep_slas()
                    notify_dead_letters()
            except Exception:  # a restarting database must not kill the loop
                log.exception("sweep failed; retrying")
                close_old_connections()
            if once:
                return
            time.sleep(interval)
