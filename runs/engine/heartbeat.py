"""Heartbeats: a worker keeps the lease of the run it holds alive.

Leases are short (`BOSUN_LEASE_S`), so a run whose worker died is rung by
the sweeper and taken over within seconds. From the claim until the worker
lets the run go, one thread per process renews the lease and the sweeper's
timer (`ring_at`) every beat (`BOSUN_HEARTBEAT_S`) with a fenced UPDATE.
Checkpoints leave both alone: a step's update of the run then changes no
indexed column, and PostgreSQL can write it as a HOT update on the same
page; a run whose steps take less than a beat altogether is never beaten
for. A beat that matches no row (the run was taken over, or cancelled) sets
the `lost` event: a long tool may read it (`ToolCall.lease_lost`) to stop
early, and whatever it returns is fenced anyway (the ledger and the
checkpoint carry the fence).

A frozen or killed process beats no more, which is the point: its lease
runs out and another worker takes the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from django.conf import settings
from django.db import close_old_connections, connection

from runs.engine import store

log = logging.getLogger("bosun.engine")


@dataclass(eq=False)
class _Beat:
    run_id: int
    fence: int
    lease_s: float
    every_s: float
    due: float
    lost: threading.Event = field(default_factory=threading.Event)


class _Heart:
    """The beating thread of one process and the leases it keeps."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.beats: set[_Beat] = set()
        self.thread: threading.Thread | None = None

    def add(self, beat: _Beat) -> None:
        with self.cond:
            self.beats.add(beat)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._loop, name="bosun-heartbeat", daemon=True
                )
                self.thread.start()
            self.cond.notify()

    def remove(self, beat: _Beat) -> None:
        with self.cond:
            self.beats.discard(beat)

    def _loop(self) -> None:
        while True:
            with self.cond:
                now = time.monotonic()
                due = [b for b in self.beats if b.due <= now]
                if not due:
                    upcoming = min((b.due for b in self.beats), default=None)
                    if upcoming is None:
                        # Nothing to keep: give the database connection
                        # back until a run is held again.
                        connection.close()
                    self.cond.wait(None if upcoming is None else upcoming - now)
                    continue
                for beat in due:
                    beat.due = now + beat.every_s
            for beat in due:
                try:
                    renewed = renew_lease(beat.run_id, beat.fence, beat.lease_s)
                except Exception:  # a database blip: beat again next time
                    log.exception("run %s: heartbeat failed", beat.run_id)
                    close_old_connections()
                    continue
                if not renewed and not beat.lost.is_set():
                    log.warning("run %s: lease lost (heartbeat matched no row)", beat.run_id)
                    beat.lost.set()


_heart: _Heart | None = None


def _current() -> _Heart:
    """This process's heart (a forked worker makes its own: threads do not
    survive a fork)."""
    global _heart
    if _heart is None or _heart.pid != os.getpid():
        _heart = _Heart()
    return _heart


def renew_lease(run_id: int, fence: int, lease_s: float) -> bool:
    """Extend the lease if the run is still held under `fence`; the sweeper's
    timer moves with it. False when the run is no longer this worker's."""
    later = store.later_sql()
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {store.RUN} SET lease_expires_at = {later}, ring_at = {later}"
            " WHERE id = %s AND fence = %s AND status = 'running'",
            [lease_s, lease_s, run_id, fence],
        )
        return bool(cursor.rowcount == 1)


@contextmanager
def beating(
    run_id: int, fence: int, lease_s: float, every_s: float | None = None
) -> Iterator[threading.Event]:
    """Keep the lease alive while the block runs (the first beat one beat
    after the block starts); yields the event set when a beat finds the run
    gone."""
    every = every_s if every_s is not None else heartbeat_s(lease_s)
    beat = _Beat(run_id, fence, lease_s, every, due=time.monotonic() + every)
    heart = _current()
    heart.add(beat)
    try:
        yield beat.lost
    finally:
        heart.remove(beat)


def heartbeat_s(lease_s: float) -> float:
    """The beat: `BOSUN_HEARTBEAT_S`, and at most a third of the lease, so two
    beats can be late before the lease runs out."""
    configured: float | None = settings.BOSUN_HEARTBEAT_S
    return min(configured or lease_s, lease_s / 3)
