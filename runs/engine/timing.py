"""Backoff delays and per-step time limits."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import NoReturn

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


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise StepTimeout in the step if it runs longer than `seconds`.

    Preemptive through SIGALRM in a main thread (the worker processes run
    tasks there), so even a step stuck in a socket read is interrupted.
    In other threads, where signals cannot be used, the limit is left to the
    step's own I/O timeouts, which receive the same number.
    """
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> NoReturn:  # noqa: ARG001
        raise StepTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
