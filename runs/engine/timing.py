"""Backoff delays and per-step time limits."""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # see _current_handler
import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from django.conf import settings

from runs.engine.errors import StepTimeout


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Delay before attempt `attempt + 1`, after attempt `attempt` failed.

    Exponential with "equal jitter": the ceiling doubles per attempt up to
    `cap_s`, and the delay is drawn from [ceiling / 2, ceiling], so retries
    spread out but never come back sooner than half the schedule. A
    provider's Retry-After is a floor: the next attempt is never earlier.
    """
    ceiling = min(cap_s, base_s * (2 ** (attempt - 1)))
    delay: float = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def queue_task_s() -> float | None:
    """How long the queue lets one task run (Q_CLUSTER["timeout"]), None
    when it does not stop tasks. django-q2's sentinel ends a worker still
    busy a few seconds past it, whatever the worker is doing."""
    timeout = settings.Q_CLUSTER.get("timeout")
    if not isinstance(timeout, int | float) or timeout <= 0:
        return None
    return float(timeout)


def step_room_s(task_s: float) -> float:
    """The longest step time limit a task of `task_s` seconds has room for:
    less the margin a step's checkpoint needs."""
    return task_s - settings.BOSUN_LEASE_MARGIN_S


# signal.getsignal wraps the C call's answer in an enum, which cost more
# than the rest of a step's time limit; the C module's gives the same answer.
_current_handler: Any = _signal.getsignal

# The limit of the step running now in the main thread, if any.
_running: float | None = None


def _expire(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    if _running is not None:  # an alarm with no step running is one left over: ignore it
        raise StepTimeout(_running)


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in the step if it runs longer than `seconds`.

    Preemptive through SIGALRM in a main thread (the worker processes run
    tasks there), so even a step stuck in a socket read is interrupted.
    In other threads, where signals cannot be used, the limit is left to the
    step's own I/O timeouts, which receive the same number.

    The handler is installed once and stays (again if something replaced
    it): a step only arms and disarms the timer. The timer is the process's
    only one, so a step's limit replaces an alarm set before it.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return
    global _running
    if _current_handler(signal.SIGALRM) is not _expire:
        signal.signal(signal.SIGALRM, _expire)
    _running = seconds
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        _running = None
