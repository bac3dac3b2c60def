"""The shared test helpers (tests/helpers.py) themselves: each can fail."""

from __future__ import annotations

import signal
import time
import warnings

import pytest
from helpers import Hung, TorchConventionWarning, check_grad_fn, time_limit


def test_time_limit_stops_a_block_that_runs_too_long_and_puts_the_alarm_back():
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Hung, match="the loop was still running after 0.2 s"):
        with time_limit(0.2, "the loop"):
            while True:
                time.sleep(0.01)
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_time_limit_lets_a_quick_block_finish():
    with time_limit(5):
        value = sum(range(10))
    assert value == 45
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_check_grad_fn_fails_on_differentiability_and_notes_a_new_name():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_grad_fn("MmBackward0", "MmBackward0", "x @ W")  # the same: silent
        check_grad_fn(None, None, "x > y")
    with pytest.raises(AssertionError, match="the op table says None, torch says ReluBackward0"):
        check_grad_fn(None, "ReluBackward0", "relu(x)")
    with pytest.raises(AssertionError):
        check_grad_fn("ReluBackward0", None, "relu(x)")
    with pytest.warns(TorchConventionWarning, match="the op table says ViewBackward0, torch .* says AddBackward0"):
        check_grad_fn("ViewBackward0", "AddBackward0", "linear(x, W, b)")
