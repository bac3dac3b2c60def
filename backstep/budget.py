"""A wall-clock budget for SymPy work that may take unexpectedly long (simplifying, proving).

SymPy cannot be asked to stop, so the budget interrupts it:

- on the main thread, with SIGALRM (setitimer): the exception is raised by the signal handler,
  which also cuts a blocking call such as `time.sleep` short;
- on any other thread (the Python API called from a worker thread, a notebook's executor, a web
  server), and where there is no SIGALRM (Windows), a timer thread raises the exception in the
  budgeted thread with CPython's `PyThreadState_SetAsyncExc`. The exception arrives between two
  Python bytecodes of that thread, so pure-Python work such as SymPy's is cut short on time; a
  single long call into C (a huge integer product, a blocking `sleep` or read) finishes first.
  On an interpreter without `ctypes.pythonapi` (not CPython) the work runs unbounded there.

A `try/except Exception` in the interrupted code (SymPy has some) can swallow the exception, so
an expired budget raises it again every RETRY_SECONDS until its block is left. Budgets nest: an
inner one never outlives an outer one (the outer's expiry reaches the outer handler through the
inner block).
"""

from __future__ import annotations

import signal
import sys
import threading
import time

try:  # CPython: raise an exception in another thread
    import ctypes

    _set_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]  # (a function object of our own)
    _set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
    _set_async_exc.restype = ctypes.c_int
    _clear_async_exc = ctypes.pythonapi["PyThreadState_SetAsyncExc"]
    _clear_async_exc.argtypes = (ctypes.c_ulong, ctypes.c_void_p)  # None: NULL, which takes it back
    _clear_async_exc.restype = ctypes.c_int
except (ImportError, AttributeError):  # pragma: no cover - not CPython
    _set_async_exc = _clear_async_exc = None

# An expired budget raises again this often until its block is left (the first may be swallowed).
RETRY_SECONDS = 0.25

_async_lock = threading.Lock()
_pending: dict[int, TimeBudget] = {}  # thread id -> the budget whose exception was last sent there


class BudgetExpired(Exception):
    """Raised inside the budgeted block when its time is up."""

    def __init__(self, budget: TimeBudget):
        super().__init__(f"over the {budget.seconds:g} s budget")
        self.budget = budget


def _signals_here() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def can_interrupt() -> bool:
    """Whether a budget can cut work short in this thread (SIGALRM here, or an asynchronous
    exception from a timer thread)."""
    return _signals_here() or _set_async_exc is not None


class TimeBudget:
    """`with TimeBudget(2.0) as b: ...` raises BudgetExpired(b) after 2 s; 0 or None: no limit.

    Catch it with `except BudgetExpired as e: if e.budget is not b: raise` when budgets nest:
    an outer budget's expiry must reach the outer handler. Works in any thread (see the module's
    docstring for how, and for what a thread other than the main one cannot interrupt).
    """

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self._armed = False
        self._timer: threading.Timer | None = None

    def __enter__(self) -> TimeBudget:
        if not self.seconds or self.seconds <= 0:
            return self
        if _signals_here():
            return self._enter_signal()
        if _set_async_exc is not None:
            return self._enter_async()
        return self

    # --- the main thread: SIGALRM -----------------------------------------------------------------

    def _enter_signal(self) -> TimeBudget:
        outer_left, _ = signal.getitimer(signal.ITIMER_REAL)
        if outer_left and outer_left <= self.seconds:
            return self  # the outer budget ends first: let its alarm fire
        self._outer_left = outer_left
        self._start = time.monotonic()
        self._leaving = False
        self._old_handler = signal.signal(signal.SIGALRM, self._alarm)
        self._armed = True
        signal.setitimer(signal.ITIMER_REAL, self.seconds, RETRY_SECONDS)  # again, if it is swallowed
        return self

    def _alarm(self, signum, frame):
        # Not while the block is being left: raised in __exit__, the expiry would skip the reset
        # of the timer, which would then go on firing outside the block.
        if self._leaving or (frame is not None and frame.f_code in _LEAVING_CODE):
            return
        self._expire(signum, frame)

    def _expire(self, signum, frame):
        """Raise the expiry (a subclass may raise another class, constructed with the budget)."""
        raise BudgetExpired(self)

    # --- any other thread: an asynchronous exception from a timer thread ------------------------

    def _enter_async(self) -> TimeBudget:
        self._thread = threading.get_ident()
        self._done = False
        self._fired = False
        budget = self
        try:  # the class that _expire raises (a subclass of TimeBudget may raise its own)
            self._expire(None, None)
        except BaseException as sample:  # noqa: BLE001
            base = type(sample)

        class Expired(base):  # raised by type, without arguments: it knows its budget
            def __init__(self):
                base.__init__(self, budget)

        Expired.__name__ = Expired.__qualname__ = base.__name__
        self._expired_type = Expired
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _fire(self) -> None:
        with _async_lock:
            if self._done:
                return
            if _is_leaving(self._thread):  # not while the block is being left: try again at once
                self._timer = threading.Timer(0.001, self._fire)
                self._timer.daemon = True
                self._timer.start()
                return
            self._fired = True
            _pending[self._thread] = self
            _set_async_exc(self._thread, self._expired_type)
            self._timer = threading.Timer(RETRY_SECONDS, self._fire)  # again, if it is swallowed
            self._timer.daemon = True
            self._timer.start()

    def _exit_async(self, exc_type) -> None:
        with _async_lock:
            self._done = True
            self._timer.cancel()
            if self._fired and _pending.get(self._thread) is self:
                del _pending[self._thread]
                # sent but not raised yet (the block finished first, or a retry was sent while an
                # earlier expiry was on its way out of the block): take it back, so that it cannot
                # go off later, outside the block. (A later budget's is never taken.)
                _clear_async_exc(self._thread, None)

    def __exit__(self, exc_type, *exc) -> bool:
        while True:
            try:
                return self._leave(exc_type)
            except BaseException as err:
                if getattr(err, "budget", None) is not self:
                    raise
                # this budget's expiry, delivered on the way out (a timer thread's exception can
                # land anywhere): the block is left anyway, and the timer must still be stopped,
                # or it would go on firing outside the block
                continue

    def _leave(self, exc_type) -> bool:
        if self._timer is not None:
            self._exit_async(exc_type)
            return False
        if not self._armed:
            return False
        self._leaving = True
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
        finally:  # (even if the alarm fired on the way in here)
            signal.signal(signal.SIGALRM, self._old_handler)
            self._armed = False
            if self._outer_left:
                left = self._outer_left - (time.monotonic() - self._start)
                signal.setitimer(signal.ITIMER_REAL, max(left, 1e-6))  # overdue: fire at once
        return False


# The code that leaves a budget's block: an expiry is not raised there (it would skip the reset).
_LEAVING_CODE = (TimeBudget.__exit__.__code__, TimeBudget._leave.__code__, TimeBudget._exit_async.__code__)


def _is_leaving(thread: int) -> bool:
    """Whether that thread is in the code that leaves a budget's block."""
    frame = sys._current_frames().get(thread)
    for _ in range(3):  # __exit__ → _leave → _exit_async
        if frame is None:
            return False
        if frame.f_code in _LEAVING_CODE:
            return True
        frame = frame.f_back
    return False
