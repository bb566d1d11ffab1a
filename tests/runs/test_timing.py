"""The per-step time limit (SIGALRM): it interrupts a blocked step, and its
handler, which stays installed between steps, ignores an alarm that comes
when no step is running."""

from __future__ import annotations

import os
import signal
import time

import pytest

from runs.engine import timing
from runs.engine.errors import StepTimeout
from runs.engine.timing import time_limit

# Long enough that only the alarm can end the wait, short enough that a
# broken limit fails the test quickly instead of hanging it.
WAIT_S = 5.0


def _wait_for_alarm() -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.01)
    pytest.fail("the time limit did not interrupt the step")


def test_a_limit_interrupts_a_blocked_step_and_leaves_the_timer_off():
    with pytest.raises(StepTimeout), time_limit(0.05):
        _wait_for_alarm()
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_an_alarm_with_no_step_running_is_ignored():
    with time_limit(30):
        pass
    # The step's handler stays installed, so the alarm neither ends the
    # process (the default action) nor raises into whatever runs now.
    assert signal.getsignal(signal.SIGALRM) is timing._expire
    os.kill(os.getpid(), signal.SIGALRM)  # delivered before kill() returns to Python code
    time.sleep(0)  # let the interpreter run the handler: it must not raise


def test_a_handler_replaced_between_steps_is_installed_again():
    """The queue resets SIGALRM's handler after each task."""
    with time_limit(30):
        pass
    # Ignored rather than the default, so a failure cannot end the test run.
    previous = signal.signal(signal.SIGALRM, signal.SIG_IGN)
    try:
        with pytest.raises(StepTimeout), time_limit(0.05):
            _wait_for_alarm()
    finally:
        signal.signal(signal.SIGALRM, previous)
