"""Grading a class: `backstep check --grade DIR --key KEY` (see README, "Grading a class").

The key's problems and the students' submissions (read by submissions.py), each submission
checked by ``problem.py`` under a time budget of its own, spread over the cores, and the rows
written to grades.csv as they come (grades.py), so that an interrupted run (Ctrl-C, SIGTERM, a CPU
limit, an error) keeps what it graded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from ..budget import BudgetExpired, TimeBudget
from ..errors import BackstepError, UsageError
from ..userfiles import check_output_path, printable
from .common import _console, _one_line
from .grades import CSV_COLUMNS, GradesFile, print_grades  # noqa: F401  (CSV_COLUMNS: the columns of grade_task's rows)
from .problem import Problem
from .submissions import (
    ProblemSpec,
    Task,
    _read_submission,
    _Refused,
    _section,
    _submission_files,
    find_submissions,
    load_key,
)

DEFAULT_STUDENT_TIMEOUT = 120.0  # seconds for one student's derivation of one problem

# The key's problems, derived once per process: (id, function, points, seed) -> Problem
_WORKER_PROBLEMS: dict = {}


def _init_worker() -> None:
    # Ctrl-C reaches every process of the terminal's group: a worker leaves it to the parent, which
    # keeps the rows done and ends the workers (a worker raising KeyboardInterrupt would only lose
    # its task and go on to the next one)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in _STOP_SIGNALS:  # forked with the parent's handlers: a worker ends when told to
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def grade_task(
    spec: ProblemSpec,
    task: Task,
    points: int,
    seed: int,
    budget: float,
    timeout: float | None = DEFAULT_STUDENT_TIMEOUT,
) -> list[dict]:
    """Check one student's derivation of one problem; every failure becomes a row, never an exception.

    The student's lines get `timeout` seconds (0 or None: no limit), the key's setup (deriving the
    formula, drawing its points) not counted: checked between lines, and by SIGALRM within one
    where the platform has it. The lines checked in time keep their rows; one row says
    "timed out" for the rest, and a gradient no line gave in time is "timed out", not "missing"."""
    base = {"student": task.student, "problem": task.problem}

    def row(step, verdict, mistake=None, reason="", line=None, written=None):
        return {
            **base,
            "step": step,
            "verdict": verdict,
            "mistake": mistake or "",
            "line": line if line is not None else "",
            "written": written or "",
            "reason": reason,
        }

    try:
        if task.refused is not None:
            return [row("", "error", reason=task.refused)]
        if task.path is None:
            return [row("", "missing", reason=task.note or "no submission")]
        try:
            text = _read_submission(task.path)
        except UnicodeDecodeError:
            return [row("", "error", reason=f"cannot read {task.path}: not UTF-8 text")]
        except _Refused as err:
            return [row("", "error", reason=str(err))]
        except OSError as err:
            if err.errno == errno.ELOOP:  # O_NOFOLLOW met a link put there since find_submissions
                return [row("", "error", reason="refused: a symbolic link")]
            return [row("", "error", reason=f"cannot read {task.path}: {err.strerror or err}")]
        text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the first line
        if task.section:
            text = _section(text, task.problem)
            if text is None:
                return [row("", "missing", reason=f"no [{task.problem}] section in {Path(task.path).name}")]
        key = (spec.id, spec.function, points, seed)
        problem = _WORKER_PROBLEMS.get(key)
        if problem is None:
            problem = _WORKER_PROBLEMS[key] = spec.build(points, seed, budget)
        problem.points  # noqa: B018  (drawn here, outside the student's time: the key's cost, shared)
        results = _check_in_time(problem, text, timeout)
        rows = []
        for r in results:
            if r.verdict == "defined":
                continue
            rows.append(
                row(
                    r.step or "",
                    r.verdict,
                    r.mistake.message if r.mistake else None,
                    r.reason,
                    r.line,
                    r.written,
                )
            )
        given = {r.node for r in results if r.node is not None and r.verdict in ("right", "wrong")}
        timed_out = any(r.timed_out for r in results)
        for w in spec.wrt:
            if w not in given:
                step = problem.label(w, ascii_only=True) if w in problem.adjoint else f"dL/d{w}"
                if timed_out:
                    rows.append(row(step, "error", reason=f"timed out before a line giving {step} was checked"))
                else:
                    rows.append(row(step, "missing", reason=f"no line gives {step}"))
        if not rows:
            rows.append(row("", "error", reason="no line of the form name = expression"))
        return rows
    except BackstepError as err:
        return [row("", "error", reason=_one_line(err))]
    except RecursionError:
        return [row("", "error", reason="nested too deeply")]
    except BudgetExpired:
        return [row("", "error", reason=f"timed out: the {timeout:g} s budget for this submission ran out")]
    except Exception as err:  # a bug in backstep must not stop the class
        return [row("", "error", reason=f"internal error (a bug in backstep): {type(err).__name__}: {err}")]


def _check_in_time(problem: Problem, text: str, timeout: float | None) -> list:
    """problem.check_lines(text) within `timeout` seconds: the lines after the deadline are not
    checked (check_lines looks at the clock between lines), and one line that runs past it is
    interrupted by a TimeBudget (SIGALRM, where the platform has it)."""
    if not timeout or timeout <= 0:
        return problem.check_lines(text)
    results = None
    try:
        with TimeBudget(timeout):
            results = problem.check_lines(text, deadline=time.monotonic() + timeout, timeout=timeout)
    except BudgetExpired:
        if results is None:  # (expired between check_lines and the end of the block: results stand)
            raise
    return results


class GradingInterrupted(KeyboardInterrupt):
    """The grading stopped before the end (Ctrl-C, SIGTERM, SIGXCPU …); the CSV holds what was done."""

    def __init__(self, why: str, code: int, tasks_done: int, tasks: int, students_done: int, students: int, path):
        super().__init__(why)
        self.why, self.code, self.path = why, code, path
        self.tasks_done, self.tasks, self.students_done, self.students = tasks_done, tasks, students_done, students

    def message(self) -> str:
        if self.path is None:
            where = "nothing was written"
        elif self.tasks_done == 0:
            where = f"nothing was graded, {self.path} is as it was"
        else:
            where = (
                f"{self.path} holds {self.students_done} of {self.students} students "
                f"({self.tasks_done} of {self.tasks} submissions)"
            )
        return f"grading interrupted ({self.why}): {where}; run it again to grade the rest"


_STOP_SIGNALS = ("SIGTERM", "SIGHUP", "SIGXCPU")


class _Stopped(KeyboardInterrupt):
    """SIGTERM, SIGHUP or SIGXCPU (a CPU limit) during the grading, raised so that the rows are kept."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stop_signals_raise():
    """While grading, SIGTERM, SIGHUP and SIGXCPU raise _Stopped (as Ctrl-C raises KeyboardInterrupt)
    instead of ending the process at once, so the rows done are written. Main thread only."""
    import threading

    sigs = [getattr(signal, n) for n in _STOP_SIGNALS if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise _Stopped(signum)

    old = {}
    try:
        for s in sigs:
            old[s] = signal.signal(s, stop)
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def grade(
    root: Path,
    key: Path,
    points: int = 3,
    seed: int = 0,
    budget: float = 2.0,
    jobs: int | None = None,
    progress: bool = True,
    *,
    timeout: float | None = DEFAULT_STUDENT_TIMEOUT,
    csv_path: Path | None = None,
    inputs: Iterable[Path | str | None] = (),
) -> list[dict]:
    """Every student's derivation of every problem, checked; rows in (student, problem, line) order.

    `timeout`: seconds for one student's derivation of one problem (see grade_task). With
    `csv_path`, the rows are written to it as they come (a temporary file beside it, renamed over it
    at the end); when the run is interrupted (Ctrl-C, SIGTERM, SIGHUP, SIGXCPU) the workers are
    ended, the rows done are renamed into place all the same, and GradingInterrupted says how many."""
    specs = load_key(key)
    built = {}
    for spec in specs:  # a broken key is bad input: say so before any student is graded
        try:
            built[spec.id] = spec.build(points, seed, budget)
        except BackstepError as err:
            raise UsageError(f"the key's problem {spec.id}: {_one_line(err)}") from None
    by_id = {s.id: s for s in specs}
    tasks = find_submissions(root, specs)
    jobs = jobs or os.cpu_count() or 1
    serial = jobs <= 1 or len(tasks) == 1
    if serial:  # the key's problems, derived once, serve this process's tasks
        for spec in specs:
            _WORKER_PROBLEMS[(spec.id, spec.function, points, seed)] = built[spec.id]
    results: dict[int, list[dict]] = {}
    out = GradesFile(csv_path, inputs) if csv_path is not None else None
    bar = _progress() if progress else None
    handle = bar.add_task("grading", total=len(tasks)) if bar is not None else None

    def done(i: int, rows: list[dict]) -> None:
        results[i] = rows
        if out is not None:
            out.add(i, rows)
        if bar is not None:
            bar.advance(handle)

    stopped: KeyboardInterrupt | None = None
    try:
        with _stop_signals_raise():
            if serial:
                if bar is not None:
                    bar.start()
                for i, task in enumerate(tasks):
                    done(i, grade_task(by_id[task.problem], task, points, seed, budget, timeout))
            else:
                _grade_parallel(tasks, by_id, points, seed, budget, timeout, jobs, results, done, bar)
    except KeyboardInterrupt as err:
        stopped = err
    finally:
        if bar is not None:
            bar.stop()
        if out is not None:
            # every row done, on success, interrupt or error; an empty file never replaces a CSV
            out.close(keep=bool(results) or stopped is None)
    if stopped is not None:
        why, code = "Ctrl-C", 130
        if isinstance(stopped, _Stopped):
            why, code = stopped.args[0], 128 + stopped.signum
        finished = {t.student for t in tasks} - {t.student for i, t in enumerate(tasks) if i not in results}
        raise GradingInterrupted(
            why,
            code,
            len(results),
            len(tasks),
            len(finished),
            len({t.student for t in tasks}),
            csv_path,
        ) from None
    return [r for i in range(len(tasks)) for r in results[i]]


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=_console(stderr=True),
        transient=False,
    )


def _grade_parallel(tasks, by_id, points, seed, budget, timeout, jobs, results, done, bar) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules else "spawn"
    context = multiprocessing.get_context(method)
    pool = ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=context, initializer=_init_worker)
    finished = False
    try:
        futures = {
            pool.submit(grade_task, by_id[t.problem], t, points, seed, budget, timeout): i for i, t in enumerate(tasks)
        }
        if bar is not None:
            bar.start()  # the bar's refresh thread starts after the workers are forked
        for future in as_completed(futures):
            i = futures[future]
            try:
                rows = future.result()
            except BrokenProcessPool:
                raise
            except Exception as err:  # pragma: no cover - grade_task catches everything it can
                t = tasks[i]
                rows = [
                    {"student": t.student, "problem": t.problem, "step": "", "verdict": "error", "mistake": ""}
                    | {"line": "", "written": "", "reason": f"internal error: {err}"}
                ]
            done(i, rows)
        finished = True
    except BrokenProcessPool:
        # A worker died (out of memory, a signal): finish what is left here, one at a time.
        _end_workers(pool)
        for i, t in enumerate(tasks):
            if i not in results:
                done(i, grade_task(by_id[t.problem], t, points, seed, budget, timeout))
        finished = True
    finally:
        if finished:
            pool.shutdown(wait=True)
        else:  # interrupted: no task left queued, no worker left running (never an orphan)
            _end_workers(pool)


def _end_workers(pool) -> None:
    """Cancel what is queued and end the workers now (shutdown alone waits for the running tasks)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    deadline = time.monotonic() + 5
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join(1)


def _grade_command(
    root, key, points, seed, budget, jobs, fmt, output, student_timeout: float | None = DEFAULT_STUDENT_TIMEOUT
) -> int:
    if key is None:
        raise UsageError("--grade needs --key KEY.toml (the problems: [[problem]] function = ..., wrt = [...])")
    csv_path = output or Path("grades.csv")
    inputs = [key, *_submission_files(root)]
    check_output_path(csv_path, inputs)  # refused now, not after minutes of grading
    try:
        rows = grade(
            root,
            key,
            points=points,
            seed=seed,
            budget=budget,
            jobs=jobs,
            progress=fmt == "text",
            timeout=student_timeout,
            csv_path=csv_path,
            inputs=inputs,
        )
    except GradingInterrupted as stop:
        from rich.text import Text

        _console(stderr=True).print(Text(printable(stop.message()), style="bold yellow"))
        return stop.code
    if fmt == "json":
        sys.stdout.write(json.dumps({"csv": str(csv_path), "rows": rows}, ensure_ascii=False, indent=2) + "\n")
    else:
        print_grades(rows, csv_path)
    return 0
