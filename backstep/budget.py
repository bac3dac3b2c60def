"""A wall-clock budget for SymPy work that may take unexpectedly long (simplifying, proving).

SymPy cannot be asked to stop, so the budget interrupts it with SIGALRM, which only the main
thread can receive; elsewhere (a worker thread, Windows) the work runs unbounded. Budgets nest: an
inner one never outlives an outer one, and the outer timer is re-armed with what it had left.
"""

from __future__ import annotations

import signal
import threading
import time


class BudgetExpired(Exception):
    """Raised inside the budgeted block when its time is up."""

    def __init__(self, budget: TimeBudget):
        super().__init__(f"over the {budget.seconds:g} s budget")
        self.budget = budget


def can_interrupt() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


class TimeBudget:
    """`with TimeBudget(2.0) as b: ...` raises BudgetExpired(b) after 2 s; 0 or None: no limit.

    Catch it with `except BudgetExpired as e: if e.budget is not b: raise` when budgets nest:
    an outer budget's expiry must reach the outer handler.
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._armed = False

    def __enter__(self) -> TimeBudget:
        if not self.seconds or self.seconds <= 0 or not can_interrupt():
            return self
        outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
        if outer_left and outer_left <= self.seconds:
            return self  # the outer budget ends first: let its alarm fire
        self._outer_left = outer_left
        self._start = time.monotonic()
        self._old_handler = signal.signal(signal.SIGALRM, self._expire)
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def _expire(self, signum, frame):
        raise BudgetExpired(self)

    def __exit__(self, *exc) -> bool:
        if not self._armed:
            return False
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # (even if the alarm fired on the way in here)
            signal.signal(signal.SIGALRM, self._old_handler)
            self._armed = False
            if self._outer_left:
                left = self._outer_left - (time.monotonic() - self._start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6))  # overdue: fire at once
        return False
