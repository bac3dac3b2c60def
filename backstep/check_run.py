"""Running `backstep check`: one claim, a derivation file, a batch of claims, a class to grade.

The deciding and diagnosing is in ``check.py``; this module reads the inputs, spreads a class
over the cores, and writes what a person (a table) or another tool (JSON, CSV) reads.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .check import Problem, Result
from .errors import BackstepError, UsageError
from .shapes import parse_shape_text
from .userfiles import check_output_path, csv_cell, open_output, printable, write_output

CHECK_SCHEMA = "backstep.check/1"
FILE_SCHEMA = "backstep.check-file/1"
SUBMISSION_SUFFIXES = ("", ".txt", ".md", ".bs", ".deriv")


# --- output helpers ----------------------------------------------------------------------------


def _console(stderr: bool = False, file=None):
    from rich.console import Console

    if file is not None:
        return Console(highlight=False, width=140, file=file, color_system=None)
    console = Console(highlight=False, stderr=stderr)
    if not console.is_terminal:
        console = Console(highlight=False, width=140, stderr=stderr)
    return console


def _value(value) -> str:
    from .render.common import format_value

    return format_value(value, max_entries=24)


def _one_line(err: BackstepError) -> str:
    return err.render().splitlines()[0]


# --- one claim ---------------------------------------------------------------------------------


def claim_json(problem: Problem, wrt: str, result: Result) -> dict:
    return {"schema": CHECK_SCHEMA, "input": problem.source, "wrt": wrt, **result.to_dict()}


def print_claim(result: Result, console=None) -> None:
    from rich.text import Text

    # Text, never markup, and every user-written piece through printable: a claim or a name may
    # carry `[/x]` (a crash), `[conceal]` (hidden text) or an ANSI escape (a cleared screen).
    console = console or _console()
    target, claim = printable(result.target), printable(result.claim)
    t = Text()
    if result.verdict == "right":
        t.append("✓ right", style="bold green")
        t.append(f"  {target} = {claim}\n")
        t.append(f"  {printable(result.reason)}{_sizes_line(result)}", style="dim")
        console.print(t)
        return
    t.append("✗ wrong", style="bold red")
    t.append(f"  {target} = {claim}\n")
    t.append("  why       ", style="dim")
    t.append(printable(result.reason) + "\n")
    if result.mistake is not None:
        t.append("  mistake   ", style="dim")
        t.append(printable(result.mistake.message) + "\n", style="bold yellow")
        if result.mistake.fix:
            t.append("  fixed     ", style="dim")
            t.append(printable(result.mistake.fix))
            t.append("   (equals the true gradient at every point)\n", style="dim")
    if result.expected_text:
        t.append("  correct   ", style="dim")
        t.append(f"{target} = {printable(result.expected_text)}\n", style="green")
        if result.expected and result.expected != result.expected_text:
            t.append(f"            {printable(result.expected)}\n", style="dim")
    cx = result.counterexample
    if cx:
        sizes = " ".join(f"{k}={v}" for k, v in cx["sizes"].items())
        values = ", ".join(f"{k} = {_value(v)}" for k, v in cx["values"].items())
        t.append("  at        ", style="dim")
        t.append(printable((sizes + ": " if sizes else "") + values))
        t.append("\n            ")
        t.append(f"claim = {_value(cx['claim'])}", style="red")
        t.append(", ")
        t.append(f"true = {_value(cx['expected'])}", style="green")
        t.append("\n")
    if result.points:  # a circular claim is refused before any point is drawn
        t.append(f"  tested at {result.points} random points (float64){_sizes_line(result)}", style="dim")
    t.rstrip()
    console.print(t)


def _sizes_line(result: Result) -> str:
    sets = "; ".join(" ".join(f"{k}={v}" for k, v in s.items()) for s in result.sizes if s)
    return printable(f", sizes {sets}") if sets else ""


# --- a derivation file -------------------------------------------------------------------------


def file_json(problem: Problem, results: list[Result]) -> dict:
    graded = [r for r in results if r.verdict in ("right", "wrong", "error")]
    first = next((r for r in results if r.verdict in ("wrong", "error")), None)
    verdict = "right" if graded and first is None else ("error" if first and first.verdict == "error" else "wrong")
    if not graded:
        verdict = "error"
    lines = []
    for r in results:
        d = r.to_dict()
        d = {"line": r.line, "written": r.written, "step": r.step, **d}
        lines.append(d)
    return {
        "schema": FILE_SCHEMA,
        "input": problem.source,
        "verdict": verdict,
        "first_wrong_line": first.line if first else None,
        "lines": lines,
    }


def file_exit_code(results: list[Result]) -> int:
    if any(r.verdict == "error" for r in results) or not any(r.verdict in ("right", "wrong") for r in results):
        return 2
    return 1 if any(r.verdict == "wrong" for r in results) else 0


MARKS = {"right": ("✓", "green"), "wrong": ("✗", "red"), "error": ("!", "magenta"), "defined": ("·", "dim")}


def print_file(results: list[Result], console=None) -> None:
    from rich.table import Table
    from rich.text import Text

    console = console or _console()
    table = Table(box=None, pad_edge=False, show_header=True, header_style="bold")
    table.add_column("line", justify="right", style="dim")
    table.add_column("")
    table.add_column("as written")
    table.add_column("note")
    for r in results:
        mark, style = MARKS.get(r.verdict, ("?", ""))
        note = r.reason if r.verdict != "right" else ("proved" if r.proof == "symbolic" else "checked numerically")
        if r.mistake is not None:
            note = f"{r.mistake.message}"
        # a student's line is Text, not markup: `[/x]` would crash rich, `[conceal]` hide the rest
        written = Text(printable(r.written or ""))
        table.add_row(
            str(r.line), Text(mark, style=style), written, Text(printable(note), style=style if mark != "✓" else "dim")
        )
    console.print(table)
    first = next((r for r in results if r.verdict in ("wrong", "error")), None)
    t = Text()
    if first is None:
        count = sum(r.verdict == "right" for r in results)
        if count:
            t.append(f"✓ every step right ({count} checked)", style="bold green")
        else:
            t.append("no line gives an adjoint to check", style="bold magenta")
    else:
        t.append(f"first wrong line: {first.line}", style="bold red")
        t.append(f"  {printable(first.written)}\n")
        t.append(f"  {printable(first.reason)}\n", style="dim")
        if first.mistake is not None:
            t.append(f"  mistake: {printable(first.mistake.message)}\n", style="bold yellow")
        if first.expected:
            t.append(f"  expected: {printable(first.step)} = {printable(first.expected)}\n", style="green")
        t.append("  later lines are checked as if the earlier ones were right", style="dim")
    console.print(t)


# --- a batch of claims -------------------------------------------------------------------------


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


BATCH_KEYS = ("id", "verdict", "reason", "mistake", "mistake_kind", "fix", "expected", "proof", "line")


def run_batch(lines: Iterable[str], points: int = 3, seed: int = 0, budget: float = 2.0) -> Iterator[dict]:
    """One output object per input line that is not blank, in order; a broken line gives an
    `error` verdict for that line only. Formulas are derived once and shared by their claims."""
    cache: dict[tuple, Problem | BackstepError] = {}
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        out: dict = dict.fromkeys(BATCH_KEYS)
        out["verdict"], out["reason"] = "error", ""
        try:
            try:
                obj = json.loads(raw)
            except ValueError as err:
                raise UsageError(f"not a JSON object ({err})") from None
            if not isinstance(obj, dict):
                raise UsageError("each line must be a JSON object")
            out["id"] = obj.get("id")
            for name in ("expr", "wrt", "claim"):
                if not isinstance(obj.get(name), str) or not obj[name].strip():
                    raise UsageError(f'"{name}" is missing (each line needs "expr", "wrt" and "claim" strings)')
            shapes = _shapes_from_json(obj.get("shapes"))
            assume = _assume_from_json(obj.get("assume"))
            key = (obj["expr"], tuple(sorted(shapes.items())), tuple(sorted(assume.items())))
            if key not in cache:
                try:
                    cache[key] = Problem(obj["expr"], shapes, None, assume, points=points, seed=seed, budget=budget)
                except BackstepError as err:
                    cache[key] = err
            problem = cache[key]
            if isinstance(problem, BackstepError):
                raise problem
            result = problem.check_claim(obj["wrt"].strip(), obj["claim"])
            out.update(
                verdict=result.verdict,
                reason=result.reason,
                mistake=result.mistake.message if result.mistake else None,
                mistake_kind=result.mistake.kind if result.mistake else None,
                fix=result.mistake.fix if result.mistake else None,
                expected=result.expected,
                proof=result.proof,
            )
        except BackstepError as err:
            out["reason"] = _one_line(err)
        except RecursionError:
            out["reason"] = "the formula or the claim is nested too deeply"
        except Exception as err:  # a bug in backstep must not stop the other lines
            out["reason"] = f"internal error (a bug in backstep; please report it): {type(err).__name__}: {err}"
        out["line"] = number
        yield out


# --- grading a class ---------------------------------------------------------------------------


@dataclass
class ProblemSpec:
    id: str
    function: str
    wrt: list[str] = field(default_factory=list)
    shapes: dict = field(default_factory=dict)
    assume: dict = field(default_factory=dict)

    def build(self, points: int, seed: int, budget: float) -> Problem:
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
        data = tomllib.loads(path.read_text(encoding="utf-8"))
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
    if stat.S_ISLNK(mode):
        return "refused: a symbolic link"
    if stat.S_ISFIFO(mode):
        return "refused: a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "refused: a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "refused: a device, not a regular file"
    return "refused: not a regular file"


def _is_folder(path: Path) -> bool:
    """A real folder, not a link to one (Path.is_dir follows links)."""
    try:
        return stat.S_ISDIR(path.lstat().st_mode)
    except OSError:
        return False


def find_submissions(root: Path, specs: list[ProblemSpec]) -> list[Task]:
    """`root/<student>/<problem id>.txt` (any of .txt .md .bs .deriv or none), or `root/<student>.txt`
    holding every problem in `[id]` sections (or the whole file, for a key with one problem).
    A link or a special file where a submission would be is refused (an error row), never read."""
    if not root.is_dir():
        raise UsageError(f"--grade {root}: not a directory")
    ids = [s.id for s in specs]
    tasks = []
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name.startswith("_"):
            continue
        refused = _refusal(entry)
        if refused is not None:
            student = entry.stem if entry.suffix in SUBMISSION_SUFFIXES else entry.name
            tasks.extend(Task(student, pid, None, refused=refused) for pid in ids)
        elif _is_folder(entry):
            # every entry but a folder: a link or a FIFO named like a submission is refused, not skipped
            try:
                files = sorted(f for f in entry.iterdir() if not f.name.startswith(".") and not _is_folder(f))
            except OSError as err:
                refused = f"refused: cannot list the folder ({err.strerror or err})"
                tasks.extend(Task(entry.name, pid, None, refused=refused) for pid in ids)
                continue
            for pid in ids:
                match = [f for f in files if f.stem == pid and f.suffix in SUBMISSION_SUFFIXES]
                if not match and len(ids) == 1 and len(files) == 1:
                    match = files
                if match:
                    refused = _refusal(match[0])
                    path = None if refused else str(match[0])
                    tasks.append(Task(entry.name, pid, path, refused=refused))
                else:
                    tasks.append(Task(entry.name, pid, None, note=f"no file {entry.name}/{pid}.txt"))
        else:
            for pid in ids:
                tasks.append(Task(entry.stem, pid, str(entry), section=len(ids) > 1))
    if not tasks:
        raise UsageError(f"--grade {root}: no submissions (one folder or one file per student)")
    return tasks


def _section(text: str, pid: str) -> str | None:
    """The lines under `[pid]` up to the next `[...]` header."""
    out, inside, found = [], False, False
    for line in text.splitlines():
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
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


def grade_task(spec: ProblemSpec, task: Task, points: int, seed: int, budget: float) -> list[dict]:
    """Check one student's derivation of one problem; every failure becomes a row, never an exception."""
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
        if task.section:
            text = _section(text, task.problem)
            if text is None:
                return [row("", "missing", reason=f"no [{task.problem}] section in {Path(task.path).name}")]
        key = (spec.id, spec.function, points, seed)
        problem = _WORKER_PROBLEMS.get(key)
        if problem is None:
            problem = _WORKER_PROBLEMS[key] = spec.build(points, seed, budget)
        results = problem.check_lines(text)
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
        for w in spec.wrt:
            if w not in given:
                step = problem.label(w, ascii_only=True) if w in problem.adjoint else f"dL/d{w}"
                rows.append(row(step, "missing", reason=f"no line gives {step}"))
        if not rows:
            rows.append(row("", "error", reason="no line of the form name = expression"))
        return rows
    except BackstepError as err:
        return [row("", "error", reason=_one_line(err))]
    except RecursionError:
        return [row("", "error", reason="nested too deeply")]
    except Exception as err:  # a bug in backstep must not stop the class
        return [row("", "error", reason=f"internal error (a bug in backstep): {type(err).__name__}: {err}")]


CSV_COLUMNS = ["student", "problem", "step", "verdict", "mistake", "line", "written", "reason"]


def grade(
    root: Path,
    key: Path,
    points: int = 3,
    seed: int = 0,
    budget: float = 2.0,
    jobs: int | None = None,
    progress: bool = True,
) -> list[dict]:
    """Every student's derivation of every problem, checked; rows in (student, problem, line) order."""
    specs = load_key(key)
    for spec in specs:  # a broken key is bad input: say so before any student is graded
        try:
            spec.build(points, seed, budget)
        except BackstepError as err:
            raise UsageError(f"the key's problem {spec.id}: {_one_line(err)}") from None
    by_id = {s.id: s for s in specs}
    tasks = find_submissions(root, specs)
    jobs = jobs or os.cpu_count() or 1
    results: dict[int, list[dict]] = {}
    bar = _progress() if progress else None
    handle = bar.add_task("grading", total=len(tasks)) if bar is not None else None
    try:
        if jobs <= 1 or len(tasks) == 1:
            if bar is not None:
                bar.start()
            for i, task in enumerate(tasks):
                results[i] = grade_task(by_id[task.problem], task, points, seed, budget)
                if bar is not None:
                    bar.advance(handle)
        else:
            _grade_parallel(tasks, by_id, points, seed, budget, jobs, results, bar, handle)
    finally:
        if bar is not None:
            bar.stop()
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


def _grade_parallel(tasks, by_id, points, seed, budget, jobs, results, bar, handle) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() and "torch" not in sys.modules else "spawn"
    context = multiprocessing.get_context(method)
    try:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(tasks)), mp_context=context, initializer=_init_worker
        ) as pool:
            futures = {
                pool.submit(grade_task, by_id[t.problem], t, points, seed, budget): i for i, t in enumerate(tasks)
            }
            if bar is not None:
                bar.start()  # the bar's refresh thread starts after the workers are forked
            for future in as_completed(futures):
                i = futures[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    raise
                except Exception as err:  # pragma: no cover - grade_task catches everything it can
                    t = tasks[i]
                    results[i] = [
                        {"student": t.student, "problem": t.problem, "step": "", "verdict": "error", "mistake": ""}
                        | {"line": "", "written": "", "reason": f"internal error: {err}"}
                    ]
                if bar is not None:
                    bar.advance(handle)
    except BrokenProcessPool:
        # A worker died (out of memory, a signal): finish what is left here, one at a time.
        for i, t in enumerate(tasks):
            if i not in results:
                results[i] = grade_task(by_id[t.problem], t, points, seed, budget)
                if bar is not None:
                    bar.advance(handle)


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


# --- the command -------------------------------------------------------------------------------


def _read(path: Path, what: str) -> str:
    if str(path) == "-":
        return sys.stdin.read()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read the {what} {path}: {getattr(err, 'strerror', None) or err}") from None


def run_check_command(
    *,
    source: str | None,
    wrt: str | None,
    claim: str | None,
    derivation: Path | None,
    batch: Path | None,
    grade: Path | None,
    key: Path | None,
    shapes: dict,
    assume: dict,
    points: int,
    seed: int,
    budget: float,
    jobs: int | None,
    fmt: str,
    output: Path | None,
    source_file: Path | None = None,
) -> int:
    """`backstep check`: returns the exit code (0 right, 1 wrong); bad input raises a BackstepError.
    `source_file` is the file the formula was read from (-f), which -o must not overwrite."""
    modes = [name for name, given in (("--claim", claim), ("--derivation", derivation), ("--batch", batch)) if given]
    if grade is not None:
        modes.append("--grade")
    if len(modes) != 1:
        raise UsageError(
            "give one of --claim (with --wrt), --derivation FILE, --batch FILE or --grade DIR --key KEY"
            + (f" (got {', '.join(modes)})" if modes else "")
        )
    if grade is not None:
        return _grade_command(grade, key, points, seed, budget, jobs, fmt, output)
    if batch is not None:
        return _batch_command(batch, points, seed, budget, output)
    inputs = [p for p in (source_file, derivation) if p is not None and str(p) != "-"]
    if output is not None:
        check_output_path(output, inputs)  # refused before any work, not after it
    if claim is not None:
        if not wrt:
            raise UsageError("--claim needs --wrt NAME: the variable whose gradient the claim is")
        if "," in wrt:
            raise UsageError("--wrt names one variable for a claim")
        problem = Problem(source, shapes, [wrt.strip()], assume, points=points, seed=seed, budget=budget)
        result = problem.check_claim(wrt.strip(), claim)
        _emit(fmt, output, inputs, lambda: claim_json(problem, wrt.strip(), result), lambda c: print_claim(result, c))
        return result.exit_code
    text = _read(derivation, "derivation file")
    problem = Problem(source, shapes, None, assume, points=points, seed=seed, budget=budget)
    results = problem.check_lines(text)
    _emit(fmt, output, inputs, lambda: file_json(problem, results), lambda c: print_file(results, c))
    return file_exit_code(results)


def _emit(fmt: str, output: Path | None, inputs: list[Path], as_json, as_text) -> None:
    """To stdout, or to `output` by a temporary file (never through a link, never over an input)."""
    try:
        if fmt == "json":
            text = json.dumps(as_json(), ensure_ascii=False, indent=2) + "\n"
            if output is None:
                sys.stdout.write(text)
            else:
                write_output(output, text, inputs)
        elif output is None:
            as_text(None)
        else:
            with open_output(output, inputs) as f:
                as_text(_console(file=f))
    except OSError as err:
        raise UsageError(f"cannot write {output}: {err.strerror or err}") from None


def _batch_command(batch: Path, points: int, seed: int, budget: float, output: Path | None) -> int:
    inputs = [] if str(batch) == "-" else [batch]
    if output is not None:
        check_output_path(output, inputs)  # before the batch is read: -o must never be the batch itself
    if str(batch) == "-":
        lines: Iterable[str] = sys.stdin
    else:
        text = _read(batch, "batch file")
        lines = text.splitlines()
    if output is None:
        return _write_batch(sys.stdout, lines, points, seed, budget)
    with open_output(output, inputs) as out:
        return _write_batch(out, lines, points, seed, budget)


def _write_batch(out, lines: Iterable[str], points: int, seed: int, budget: float) -> int:
    all_right = True
    for obj in run_batch(lines, points=points, seed=seed, budget=budget):
        all_right = all_right and obj["verdict"] == "right"
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()
    return 0 if all_right else 1


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


def _grade_command(root, key, points, seed, budget, jobs, fmt, output) -> int:
    if key is None:
        raise UsageError("--grade needs --key KEY.toml (the problems: [[problem]] function = ..., wrt = [...])")
    csv_path = output or Path("grades.csv")
    inputs = [key, *_submission_files(root)]
    check_output_path(csv_path, inputs)  # refused now, not after minutes of grading
    rows = grade(root, key, points=points, seed=seed, budget=budget, jobs=jobs, progress=fmt == "text")
    write_csv(rows, csv_path, inputs)
    if fmt == "json":
        sys.stdout.write(json.dumps({"csv": str(csv_path), "rows": rows}, ensure_ascii=False, indent=2) + "\n")
    else:
        print_grades(rows, csv_path)
    return 0
