"""The worker cluster: django-q2's, made safe against a process killed at
any point (`manage.py worker` starts it).

django-q2's processes share two multiprocessing queues guarded by
semaphores. A worker killed while it waits for a task dies holding the task
queue's read lock; one killed while it hands back a result may die holding
the result queue's write lock or its own timer's lock. The cluster then
reincarnates the worker, and the new one, like every other, waits on that
lock for ever: every process is alive and nothing is taken from the queue
again. The same holds for the pusher and the monitor.

This sentinel treats any process that exits without being asked to (killed,
crashed) as having poisoned the queues it used. It builds new queues with a
new pusher, monitor and workers at once, lets each old worker that is
executing a task finish it, and stops each old process as soon as it is
idle (or after a grace period, for the old monitor). No old worker is
stopped in the middle of a task, so a kill costs the step its victim was
running and nothing else.

Nothing is lost with the old queues: the tasks they held were doorbells
(`runs.tasks.advance`), and the engine rings every run that is still queued
again (`mark_queued_runs_due`), so they run within a sweep instead of after
the redelivery delay. The sentinel also knows which workers died, so it ends
their leases at once (`expire_leases_of`): the run a killed worker was
executing is taken over within a sweep, not when its lease would have run
out. (Leases remain the safety net for what no sentinel sees: a frozen
process, a lost machine.)
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from multiprocessing import Event, current_process
from time import monotonic, sleep
from typing import Any

from django import db
from django_q import cluster as q
from django_q.conf import Conf
from django_q.queues import Queue
from django_q.status import Stat

from runs import engine
from runs.engine.worker import worker_prefix

log = logging.getLogger("bosun.worker")

# Worker timer values django-q2 uses besides a countdown: idle, timed out
# (the worker stops itself), recycled (it stopped after RECYCLE tasks).
IDLE, TIMED_OUT, RECYCLED = -1.0, 0.0, -2.0
# Setting the stop event takes no time unless a dead process holds its lock.
EVENT_TIMEOUT_S = 2.0
# How long an old monitor may go on acknowledging the results of the old
# workers once they are gone.
MONITOR_GRACE_S = 5.0


@dataclass
class _Retiring:
    """The processes of a replaced generation, stopped as they fall idle."""

    workers: list[Any]  # worker processes, each with its `timer` Value
    monitor: Any
    result_queue: Queue
    workers_gone_at: float | None = None


class Sentinel(q.Sentinel):
    """django-q2's sentinel with a guard that survives any sudden death."""

    # Set by django-q2's sentinel; a worker is a Process with a `timer` Value.
    pool: list[Any]
    pusher: Any
    monitor: Any
    task_queue: Queue
    result_queue: Queue
    event_out: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.retiring: list[_Retiring] = []
        self.renewals = 0
        super().__init__(*args, **kwargs)

    def guard(self) -> None:
        log.info(
            "%s guarding cluster %s [%s]",
            current_process().name,
            q.humanize(self.cluster_id.hex),
            self.queue_name(),
        )
        self.start_event.set()
        Stat(self).save()
        counter = 0.0
        cycle = Conf.GUARD_CYCLE
        while True:
            if self._sudden_death():
                self.renew()
            else:
                self._reincarnate_finished_workers(cycle)
            self._retire(cycle)
            counter += cycle
            if counter >= 30 and Conf.SCHEDULER:
                counter = 0
                q.scheduler(broker=self.broker)
            Stat(self).save()
            if self.stop_event.wait(cycle):
                break
        self.stop()

    def _sudden_death(self) -> bool:
        """Did a process of the current generation exit without being asked?"""
        if not self.pusher.is_alive() or not self.monitor.is_alive():
            return True
        return any(not p.is_alive() and _timer(p) not in (TIMED_OUT, RECYCLED) for p in self.pool)

    def _reincarnate_finished_workers(self, cycle: float) -> None:
        """django-q2's own care of its workers, without ever blocking on the
        lock of a worker that may have died holding it."""
        for p in list(self.pool):
            if not p.is_alive():
                self.reincarnate(p)  # recycled, or stopped after a timeout
                continue
            lock = p.timer.get_lock()
            if not lock.acquire(timeout=cycle):
                continue  # look again next cycle
            try:
                if p.timer.value == TIMED_OUT:
                    self.reincarnate(p)  # django-q2 terminates it
                elif p.timer.value > 0:
                    p.timer.value -= cycle
            finally:
                lock.release()

    def renew(self) -> None:
        """Replace the queues and the processes that use them."""
        self.renewals += 1
        dead = [p.name for p in (*self.pool, self.pusher, self.monitor) if not p.is_alive()]
        log.critical(
            "%s: %s exited unasked: its queues may be held by a dead process; "
            "starting new queues and processes (renewal %d)",
            q.humanize(self.cluster_id.hex),
            ", ".join(dead),
            self.renewals,
        )
        # The old pusher may hold tasks it took from the broker: they are
        # doorbells, rung again below.
        self.event_out.set()
        if self.pusher.is_alive():
            self.pusher.terminate()
        self.retiring.append(
            _Retiring(
                workers=[p for p in self.pool if p.is_alive()],
                monitor=self.monitor,
                result_queue=self.result_queue,
            )
        )
        # Before any new process exists (so none can share a dead pid yet):
        # the runs the dead workers held are due now, not when their leases
        # would have run out.
        dead_workers = [worker_prefix(p.pid) for p in self.pool if not p.is_alive()]
        try:
            expired = engine.expire_leases_of(dead_workers)
            due = engine.mark_queued_runs_due()
            log.info("%d run(s) of dead workers and %d queued run(s) made due", expired, due)
        except Exception:  # the database may be the cause; leases and the sweeper cover it
            log.exception("could not make the runs due")
        self.task_queue = Queue(maxsize=Conf.QUEUE_LIMIT) if Conf.QUEUE_LIMIT else Queue()
        self.result_queue = Queue()
        self.event_out = Event()
        db.connections.close_all()  # before forking
        self.pool = []
        for __ in range(self.pool_size):
            self.spawn_worker()
        self.monitor = self.spawn_monitor()
        self.pusher = self.spawn_pusher()

    def _retire(self, cycle: float) -> None:
        """Stop each old worker once it is idle (never mid-task), and each old
        monitor once its workers are gone and it had time to acknowledge."""
        for old in list(self.retiring):
            for p in list(old.workers):
                if not p.is_alive():
                    old.workers.remove(p)
                    continue
                lock = p.timer.get_lock()
                if not lock.acquire(timeout=cycle):
                    continue
                try:
                    # Holding the timer's lock, the worker cannot move from
                    # idle to busy: it needs that lock to start a task.
                    if p.timer.value in (IDLE, TIMED_OUT, RECYCLED):
                        p.kill()
                        old.workers.remove(p)
                    elif p.timer.value > 0:
                        p.timer.value -= cycle
                finally:
                    lock.release()
            if old.workers:
                continue
            if old.workers_gone_at is None:
                old.workers_gone_at = monotonic()
                old.result_queue.put("STOP")
                # If a dead process holds that queue's write lock, the put
                # never goes out: do not let it hold up this process's exit.
                old.result_queue.cancel_join_thread()
            elif old.monitor.is_alive() and monotonic() - old.workers_gone_at < MONITOR_GRACE_S:
                continue
            if old.monitor.is_alive():
                old.monitor.kill()
            self.retiring.remove(old)

    def stop(self) -> None:
        for old in self.retiring:
            for p in (*old.workers, old.monitor):
                if p.is_alive():
                    p.kill()
        self.retiring = []
        super().stop()


def _timer(p: Any) -> float:
    """A worker's timer, read without its lock (the worker may have died
    holding it)."""
    return float(p.timer.get_obj().value)


class Cluster(q.Cluster):
    """django-q2's cluster, started with this module's sentinel."""

    _stopping = False
    # Set by django-q2's cluster.
    sentinel: Any
    stop_event: Any
    start_event: Any

    def sig_handler(self, signum: int, frame: Any) -> None:
        """Stop once. A second TERM or INT (a terminal's Ctrl-C reaches the
        whole process group, and a supervisor may add its own TERM) would
        re-enter django-q2's stop while it joins the sentinel, and hang."""
        if self._stopping:
            return
        self._stopping = True
        super().sig_handler(signum, frame)

    def stop(self) -> bool:
        """django-q2's stop, which cannot hang: a signal sent to the whole
        process group (Ctrl-C, a supervisor) may have killed the sentinel
        while it held the stop event's lock, and then setting the event
        would wait for ever. The event is set from a thread; if that does
        not finish at once, the sentinel is stopped outright (runs lose
        nothing: the engine resumes them from their last checkpoint)."""
        if self.sentinel is None or not self.sentinel.is_alive():
            return False
        setter = threading.Thread(target=self.stop_event.set, daemon=True)
        setter.start()
        setter.join(EVENT_TIMEOUT_S)
        if setter.is_alive():
            log.warning("the sentinel does not take the stop event: terminating it")
            self.sentinel.terminate()
        self.sentinel.join()
        self.start_event = None
        self.stop_event = None
        return True

    def start(self) -> int:
        self.stop_event = Event()
        self.start_event = Event()
        self.sentinel = q.get_mp_context().Process(
            target=Sentinel,
            name=f"Process-{self.cluster_id.hex}",
            args=(self.stop_event, self.start_event, self.cluster_id, self.broker, self.timeout),
        )
        self.sentinel.start()
        log.info("worker cluster %s starting", self.name)
        # Poll rather than wait: a signal arriving during wait() would
        # deadlock with the sentinel (as django-q2 explains in its own start).
        while self.start_event and not self.start_event.is_set():
            if not self.sentinel.is_alive():
                if self.sentinel.exitcode == 0:
                    break  # stopped by a signal while starting
                raise RuntimeError(
                    f"worker cluster {self.name} failed to start: "
                    f"sentinel exited with code {self.sentinel.exitcode}"
                )
            sleep(0.1)
        return int(self.pid)
