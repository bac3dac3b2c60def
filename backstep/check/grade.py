"""Grading a class: `backstep check --grade DIR --key KEY` (see README, "Grading a class").

The key's problems, the students' submissions found in the folder (links and special files
refused, two submissions under one name a conflict), each submission checked by ``problem.py`` under
a time budget of its own, spread over the cores, and the rows written to grades.csv as they come,
so that an interrupted run (Ctrl-C, SIGTERM, a CPU limit, an error) keeps what it graded.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..budget import BudgetExpired, TimeBudget
from ..errors import BackstepError, UsageError
from ..shapes import parse_shape_text
from ..userfiles import _keep_mode, check_output_path, csv_cell, file_kind, open_output, printable
from .files import split_text
from .problem import Problem

SUBMISSION_SUFFIXES = ("", ".txt", ".md", ".bs", ".deriv")
DEFAULT_STUDENT_TIMEOUT = 120.0  # seconds for one student's derivation of one problem


# --- shared with run.py (which imports them from here) ----------------------------------------


def _console(stderr: bool = False, file=None):
    from rich.console import Console

    if file is not None:
        return Console(highlight=False, width=140, file=file, color_system=None)
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        console = Console(highlight=False, width=140, stderr=stderr)
    return console


def _one_line(err: BackstepError) -> str:
    return err.render().splitlines()[0]


def _shapes_from_json(raw) -> dict[str, tuple]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError('"shapes" must be an object such as {"x": [3, 1]}')
    shapes = {}
    for name, value in raw.items():
        if isinstance(value, str):
            try:
                shapes[name] = parse_shape_text(value)
            except ValueError as err:
                raise UsageError(f'"shapes": {name}: {err}') from None
        elif isinstance(value, list) and all(
            (isinstance(d, int) and not isinstance(d, bool) and d >= 1) or (isinstance(d, str) and d.isidentifier())
            for d in value
        ):
            shapes[name] = tuple(value)
        else:
            raise UsageError(f'"shapes": {name} must be a list of positive integers or dimension names')
    return shapes


def _assume_from_json(raw) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise UsageError('"assume" must be an object such as {"x": "positive"}')
    return dict(raw)


# --- the key ------------------------------------------------------------------------------------


@dataclass
class ProblemSpec:
    id: str
    function: str
    wrt: list[str] = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    assume: dict = field(default_factory=dict)

    def build(self, points: int, seed: int, budget: float) -> Problem:  # the size caps: check.MAX_*
        return Problem(self.function, self.shapes, None, self.assume, points=points, seed=seed, budget=budget)


def load_key(path: Path) -> list[ProblemSpec]:
    """The key: `[[problem]]` tables with `function`, optional `id`, `wrt`, `shapes`, `assume`."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise UsageError("reading a TOML key needs Python 3.11 or the tomli package") from None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # (a byte-order mark is no TOML)
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the key {path}: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"the key {path} is not valid TOML: {err}") from None
    problems = data.get("problem")
    if not isinstance(problems, list) or not problems:
        raise UsageError(f'the key {path} has no [[problem]] (each with function = "...")')
    specs = []
    for k, p in enumerate(problems, 1):
        if not isinstance(p, dict):
            raise UsageError(f"the key {path}: problem {k} is not a table")
        function = p.get("function", p.get("expr"))
        if not isinstance(function, str) or not function.strip():
            raise UsageError(f'the key {path}: problem {k} has no function = "..."')
        wrt = p.get("wrt", [])
        if isinstance(wrt, str):
            wrt = [w.strip() for w in wrt.split(",") if w.strip()]
        if not isinstance(wrt, list) or not all(isinstance(w, str) for w in wrt):
            raise UsageError(f"the key {path}: problem {k}: wrt must be a list of names")
        pid = str(p.get("id", p.get("name", f"p{k}")))
        shapes = _shapes_from_json(p.get("shapes"))
        assume = _assume_from_json(p.get("assume"))
        specs.append(ProblemSpec(pid, function, wrt, shapes, assume))
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise UsageError(f"the key {path}: two problems have the same id")
    return specs


@dataclass
class Task:
    student: str
    problem: str
    path: str | None  # the file to read
    section: bool = False  # the file holds several problems in [id] sections
    note: str | None = None  # why there is nothing to check (a missing file)
    refused: str | None = None  # why the submission is not read (a link, a FIFO): an error row


def _refusal(path: Path) -> str | None:
    """Why the submission `path` is not read, or None for a regular file or folder. Looked at with
    lstat, never through a link: a link would copy any file the grader can read into the grades,
    and opening a FIFO would block the grading for ever."""
    try:
        mode = path.lstat().st_mode
    except OSError as err:
        return f"refused: cannot look at it ({err.strerror or err})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    kind = file_kind(mode)
    return (
        f"refused: {kind}" if stat.S_ISLNK(mode) or kind.startswith("not ") else f"refused: {kind}, not a regular file"
    )


def _is_folder(path: Path) -> bool:
    """A real folder, not a link to one (Path.is_dir follows links)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def _student_of(entry: Path, folder: bool) -> str:
    return entry.name if folder or entry.suffix not in SUBMISSION_SUFFIXES else entry.stem


def find_submissions(root: Path, specs: list[ProblemSpec]) -> list[Task]:
    """`root/<student>/<problem id>.txt` (any of .txt .md .bs .deriv or none), or `root/<student>.txt`
    holding every problem in `[id]` sections (or the whole file, for a key with one problem).
    A link or a special file where a submission would be is refused (an error row), never read.
    Two entries that are the same student's (`alice/` and `alice.txt`, `alice.txt` and `alice.md`)
    are a conflict: neither is graded, and the row names both."""
    if not root.is_dir():
        raise UsageError(f"--grade {root}: not a directory")
    ids = [s.id for s in specs]
    entries: dict[str, list[tuple[Path, bool]]] = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name.startswith("_"):
            continue
        folder = _is_folder(entry)
        entries.setdefault(_student_of(entry, folder), []).append((entry, folder))
    tasks = []
    for student, found in sorted(entries.items()):
        if len(found) > 1:
            names = " and ".join(e.name + ("/" if folder else "") for e, folder in found)
            conflict = f"conflict: {names} are both submissions of {student} (keep one, grade again)"
            tasks.extend(Task(student, pid, None, refused=conflict) for pid in ids)
            continue
        entry, folder = found[0]
        refused = _refusal(entry)
        if refused is not None:
            tasks.extend(Task(student, pid, None, refused=refused) for pid in ids)
        elif folder:
            # every entry but a folder: a link or a FIFO named like a submission is refused, not skipped
            try:
                files = sorted(f for f in entry.iterdir() if not f.name.startswith(".") and not _is_folder(f))
            except OSError as err:
                refused = f"refused: cannot list the folder ({err.strerror or err})"
                tasks.extend(Task(student, pid, None, refused=refused) for pid in ids)
                continue
            for pid in ids:
                match = [f for f in files if f.stem == pid and f.suffix in SUBMISSION_SUFFIXES]
                if not match and len(ids) == 1 and len(files) == 1:
                    match = files
                if len(match) > 1:
                    names = " and ".join(f"{entry.name}/{f.name}" for f in match)
                    conflict = f"conflict: {names} are both {student}'s {pid} (keep one, grade again)"
                    tasks.append(Task(student, pid, None, refused=conflict))
                elif match:
                    refused = _refusal(match[0])
                    path = None if refused else str(match[0])
                    tasks.append(Task(student, pid, path, refused=refused))
                else:
                    tasks.append(Task(student, pid, None, note=f"no file {entry.name}/{pid}.txt"))
        else:
            for pid in ids:
                tasks.append(Task(student, pid, str(entry), section=len(ids) > 1))
    if not tasks:
        raise UsageError(f"--grade {root}: no submissions (one folder or one file per student)")
    return tasks


def _section(text: str, pid: str) -> str | None:
    """The lines under `[pid]` up to the next `[...]` header."""
    out, inside, found = [], False, False
    for line in split_text(text):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]") and "=" not in stripped:
            inside = stripped[1:-1].strip() == pid
            found = found or inside
            out.append("")  # keep line numbers
            continue
        out.append(line if inside else "")
    return "\n".join(out) if found else None


class _Refused(Exception):
    """A submission that is not a regular file when it is opened."""


def _read_submission(path: str) -> str:
    """The text of a submission, opened without following a link and without waiting for a FIFO's
    writer, then read only if it is a regular file: the folder may have changed since it was listed."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags)
    with open(fd, encoding="utf-8") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Refused("refused: not a regular file")
        return f.read()


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


CSV_COLUMNS = ["student", "problem", "step", "verdict", "mistake", "line", "written", "reason"]


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


class GradesFile:
    """grades.csv written as the grading goes. The rows go to a temporary file beside `path` (never
    through a link, never over one of `inputs`), flushed as each submission is graded, in the
    submissions' order (one graded early waits for those before it); close() writes any rows still
    waiting and renames the file over `path`, whether the run ended or was interrupted."""

    def __init__(self, path: Path | str, inputs: Iterable[Path | str | None] = ()):
        self.path = check_output_path(path, inputs)
        if not self.path.parent.is_dir():
            raise UsageError(f"cannot write {self.path}: the folder {self.path.parent} does not exist")
        try:
            fd, self.temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        except OSError as err:
            raise UsageError(f"cannot write {self.path}: {err.strerror or err}") from None
        self.file = os.fdopen(fd, "w", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        self.waiting: dict[int, list[dict]] = {}
        self.next = 0
        self.rows = 0
        self.closed = False
        self._write(self.writer.writeheader)

    def _write(self, action, *args) -> None:
        try:
            action(*args)
            self.file.flush()
        except OSError as err:
            self.discard()
            raise UsageError(f"cannot write {self.path}: {err.strerror or err}") from None

    def _put(self, rows: list[dict]) -> None:
        self._write(self.writer.writerows, [{k: _csv_text(v) for k, v in r.items()} for r in rows])
        self.rows += len(rows)

    def add(self, index: int, rows: list[dict]) -> None:
        self.waiting[index] = rows
        while self.next in self.waiting:
            self._put(self.waiting.pop(self.next))
            self.next += 1

    def close(self, keep: bool = True) -> None:
        """The rows still waiting (an interrupted run: those graded out of order), then the rename;
        keep=False removes the temporary file and leaves `path` as it was."""
        if self.closed:
            return
        if not keep:
            self.discard()
            return
        for index in sorted(self.waiting):
            self._put(self.waiting.pop(index))
        try:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            _keep_mode(self.path, self.temporary)
            os.replace(self.temporary, self.path)
        except OSError as err:
            self.discard()
            raise UsageError(f"cannot write {self.path}: {err.strerror or err}") from None
        self.closed = True

    def discard(self) -> None:
        self.closed = True
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(OSError):
            os.unlink(self.temporary)


def _csv_text(value):
    """A cell of grades.csv: a name or a line a student wrote is never a live formula (`=HYPERLINK`),
    and never an escape sequence for whoever runs `cat grades.csv`."""
    return csv_cell(printable(value)) if isinstance(value, str) else value


def write_csv(rows: list[dict], path: Path, inputs: Iterable[Path | str | None] = ()) -> None:
    """All the rows at once, by a temporary file renamed over `path`; never through a link, never over
    one of `inputs` (the key, a submission)."""
    with open_output(path, inputs, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows({k: _csv_text(v) for k, v in r.items()} for r in rows)


def print_grades(rows: list[dict], csv_path: Path | None) -> None:
    """Per problem, one row per student and one column per step: ✓ ✗ – (missing) ! (error)."""
    from rich.table import Table
    from rich.text import Text

    console = _console()
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    for pid in problems:
        mine = [r for r in rows if r["problem"] == pid]
        steps = list(dict.fromkeys(r["step"] for r in mine if r["step"]))
        students = list(dict.fromkeys(r["student"] for r in mine))
        # every name here (a folder, a step, a problem id) is Text, never markup, and printable
        title = Text(printable(f"problem {pid}"), style="bold cyan")
        table = Table(title=title, title_justify="left", header_style="bold")
        table.add_column("student")
        for step in steps:
            table.add_column(Text(printable(step)), justify="center")
        table.add_column("score", justify="right")
        table.add_column("first mistake")
        for student in students:
            cells = [r for r in mine if r["student"] == student]
            marks = []
            for step in steps:
                here = [r for r in cells if r["step"] == step]
                if not here:
                    marks.append(Text(""))
                    continue
                verdicts = {r["verdict"] for r in here}
                if verdicts == {"right"}:
                    marks.append(Text("✓", style="green"))
                elif "wrong" in verdicts:
                    marks.append(Text("✗", style="red"))
                elif "missing" in verdicts:
                    marks.append(Text("–", style="yellow"))
                else:
                    marks.append(Text("!", style="magenta"))
            graded = [r for r in cells if r["verdict"] in ("right", "wrong", "missing", "error")]
            right = sum(r["verdict"] == "right" for r in graded)
            first = next((r for r in cells if r["verdict"] in ("wrong", "error", "missing")), None)
            if first is None:
                note = Text("all right", style="green")
            else:
                where = " ".join(
                    x for x in (f"line {first['line']}" if first["line"] != "" else "", first["step"]) if x
                )
                what = first["mistake"] or first["reason"]
                note = Text(
                    printable(f"{where}: {what}" if where else what), style="red" if first["verdict"] == "wrong" else ""
                )
            table.add_row(Text(printable(student)), *marks, f"{right}/{len(graded)}", note)
        console.print(table)
    if csv_path is not None:
        console.print(Text(printable(f"wrote {csv_path} ({len(rows)} rows)"), style="dim"))


def _submission_files(root: Path) -> list[Path]:
    """Every regular file a student handed in (one and two levels down), which -o must not overwrite."""
    files: list[Path] = []
    if not root.is_dir():
        return files  # find_submissions says so
    for entry in root.iterdir():
        if _is_folder(entry):
            with contextlib.suppress(OSError):  # a folder that cannot be listed holds nothing to overwrite
                files.extend(f for f in entry.iterdir() if _refusal(f) is None and not _is_folder(f))
        elif _refusal(entry) is None:
            files.append(entry)
    return files


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
