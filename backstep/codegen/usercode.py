"""Running code that is not backstep's: the generated module (backstep's own text, executed from
it) and the user's file (imported as Python, which is what --torch and --against ask for).

The user's code runs only inside ``user_code``: sys.exit() in it, or a run over
``USER_CODE_SECONDS``, is a UsageError (exit 2), never backstep's exit (exit 0 from ``--against``
says that every gradient agrees).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from ..budget import TimeBudget
from ..errors import UsageError


def load_generated(code: str, name: str = "backstep_generated") -> ModuleType:
    """The generated module, executed from its text (backstep's own code, not the user's)."""
    module = ModuleType(name)
    module.__file__ = f"<{name}>"
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our generated code)
    return module


# How long the user's code may run at a time (importing the file, tracing, one call of a backward):
# a file that loops or waits at import must not hang backstep. Tests lower it.
USER_CODE_SECONDS = 60.0


class UserCodeTimeout(BaseException):
    """Raised inside the user's code when its time is up: a BaseException, so that an `except
    Exception` in the user's code cannot swallow it."""

    def __init__(self, budget: TimeBudget):
        super().__init__(f"over {budget.seconds:g} s")
        self.budget = budget


class UserCodeBudget(TimeBudget):
    """A TimeBudget (SIGALRM, restored afterwards) whose expiry is a UserCodeTimeout; `seconds`
    None: USER_CODE_SECONDS, as it is when the budget is made (tests lower it)."""

    def __init__(self, seconds: float | None = None):
        super().__init__(USER_CODE_SECONDS if seconds is None else seconds)

    def _expire(self, signum, frame):
        raise UserCodeTimeout(self)


@contextmanager
def user_code(where: str, doing: str, seconds: float | None = None) -> Iterator[None]:
    """Run the user's code for at most `seconds` (USER_CODE_SECONDS; 0: no limit here, each call
    timed by a UserCodeBudget inside). sys.exit() in it, or running out of time, is a UsageError
    (exit 2) that says `where` (`--torch model.py:Net`) and `doing` (`while backstep imported
    model.py`): never backstep's own exit, whose 0 would say that all went well."""
    try:
        with UserCodeBudget(seconds):
            yield
    except SystemExit as err:
        raise UsageError(
            f"{where}: its code called sys.exit({err.code!r}) {doing}; that is an error here, "
            "never backstep's own exit status"
        ) from None
    except UserCodeTimeout as err:
        raise UsageError(
            f"{where}: its code was still running after {err.budget.seconds:g} s {doing} "
            "(an endless loop, or waiting for input?); backstep stopped it"
        ) from None


def load_user_object(spec: str, option: str):
    """`path.py:Name` -> the object. This imports (runs) the user's file, as the option asks,
    within user_code's limits."""
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text or not attr:
        raise UsageError(f"{option} {spec}: write FILE.py:NAME (e.g. my_function.py:MyFunction)")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{option} {spec}: no such file {path}")
    module_name = "backstep_user_" + re.sub(r"\W", "_", path.stem)
    spec_obj = importlib.util.spec_from_file_location(module_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise UsageError(f"{option} {spec}: cannot import {path}")
    module = importlib.util.module_from_spec(spec_obj)
    import torch  # noqa: F401 (before the clock starts: torch's first import takes seconds that are not the file's)

    sys.modules[module_name] = module
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)  # the file may import its neighbours
    try:
        with user_code(f"{option} {spec}", f"while backstep imported {path}"):
            try:
                spec_obj.loader.exec_module(module)
            except Exception as err:  # the user's code: any failure is theirs to see, as one line
                raise UsageError(f"{option} {spec}: importing {path} failed: {type(err).__name__}: {err}") from None
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    obj = module
    with user_code(f"{option} {spec}", f"while backstep looked up {attr} in {path}"):  # a module __getattr__ may run
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"{option} {spec}: {path} has no {attr}")
            obj = getattr(obj, part)
    return obj, path
