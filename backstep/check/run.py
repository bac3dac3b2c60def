"""Running `backstep check`: one claim, a derivation file, a batch of claims, a class to grade.

The deciding and diagnosing is in ``problem.py`` and the modules beside it; this module reads the
inputs and writes what a person (a table) or another tool (JSON) reads. Grading a class is in
``grade.py`` (``from backstep.check.grade import grade, grade_task, load_key``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import BackstepError, UsageError
from ..userfiles import check_output_path, open_output, printable, read_text_capped, write_output
from .common import _assume_from_json, _console, _one_line, _shapes_from_json
from .grade import DEFAULT_STUDENT_TIMEOUT, _grade_command
from .points import MAX_BYTES, MAX_ELEMENTS
from .problem import Problem
from .records import Result

# The most a derivation file or a batch file may hold, in characters, read before anything is parsed:
# a derivation file of some thousand lines fits, /dev/zero does not take the grader's memory.
MAX_DERIVATION_CHARS = 2_000_000
MAX_BATCH_CHARS = 200_000_000

CHECK_SCHEMA = "backstep.check/1"
FILE_SCHEMA = "backstep.check-file/1"


# --- output helpers ----------------------------------------------------------------------------


def _value(value) -> str:
    from ..render.common import format_value

    return format_value(value, max_entries=24)


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


BATCH_KEYS = ("id", "verdict", "reason", "mistake", "mistake_kind", "fix", "expected", "proof", "line")


def run_batch(
    lines: Iterable[str],
    points: int = 3,
    seed: int = 0,
    budget: float = 2.0,
    max_elements: int | None = MAX_ELEMENTS,
    max_bytes: int | None = MAX_BYTES,
) -> Iterator[dict]:
    """One output object per input line that is not blank, in order; a broken line gives an
    `error` verdict for that line only. Formulas are derived once and shared by their claims.
    A line whose shapes make an array of more than `max_elements` numbers, or arrays of more than
    `max_bytes` together (float64), is such a line: refused before anything is allocated."""
    cache: dict[tuple, Problem | BackstepError] = {}
    for number, raw in enumerate(lines, 1):
        if number == 1:
            raw = raw.removeprefix("\ufeff")  # a byte-order mark is not part of the first line
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
                    cache[key] = Problem(
                        obj["expr"],
                        shapes,
                        None,
                        assume,
                        points=points,
                        seed=seed,
                        budget=budget,
                        max_elements=max_elements,
                        max_bytes=max_bytes,
                    )
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


# --- the command -------------------------------------------------------------------------------


def _read(path: Path, what: str, max_chars: int) -> str:
    """A file a command reads (`-`: stdin): a regular file, at most `max_chars` characters."""
    return read_text_capped(path, max_chars, f"the {what}")


def run_check_command(
    *,
    source: str | None,
    wrt: str | None,
    claim: str | None,
    derivation: Path | None,
    batch: Path | None,
    grade: Path | None,  # the --grade folder (grade() itself is grade.grade)
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
    student_timeout: float | None = DEFAULT_STUDENT_TIMEOUT,
    max_elements: int | None = MAX_ELEMENTS,
) -> int:
    """`backstep check`: returns the exit code (0 right, 1 wrong); bad input raises a BackstepError.
    `source_file` is the file the formula was read from (-f), which -o must not overwrite.
    `student_timeout`: --grade's seconds per student and problem (0 or None: no limit);
    `max_elements`: the most numbers one array may have at the sizes a claim is checked at."""
    modes = [name for name, given in (("--claim", claim), ("--derivation", derivation), ("--batch", batch)) if given]
    if grade is not None:
        modes.append("--grade")
    if len(modes) != 1:
        raise UsageError(
            "give one of --claim (with --wrt), --derivation FILE, --batch FILE or --grade DIR --key KEY"
            + (f" (got {', '.join(modes)})" if modes else "")
        )
    if grade is not None:
        return _grade_command(grade, key, points, seed, budget, jobs, fmt, output, student_timeout=student_timeout)
    if batch is not None:
        return _batch_command(batch, points, seed, budget, output, max_elements)
    inputs = [p for p in (source_file, derivation) if p is not None and str(p) != "-"]
    if output is not None:
        check_output_path(output, inputs)  # refused before any work, not after it
    if claim is not None:
        if not wrt:
            raise UsageError("--claim needs --wrt NAME: the variable whose gradient the claim is")
        if "," in wrt:
            raise UsageError("--wrt names one variable for a claim")
        problem = Problem(
            source, shapes, [wrt.strip()], assume, points=points, seed=seed, budget=budget, max_elements=max_elements
        )
        result = problem.check_claim(wrt.strip(), claim)
        _emit(fmt, output, inputs, lambda: claim_json(problem, wrt.strip(), result), lambda c: print_claim(result, c))
        return result.exit_code
    text = _read(derivation, "derivation file", MAX_DERIVATION_CHARS)
    problem = Problem(source, shapes, None, assume, points=points, seed=seed, budget=budget, max_elements=max_elements)
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


def _batch_command(
    batch: Path, points: int, seed: int, budget: float, output: Path | None, max_elements: int | None = MAX_ELEMENTS
) -> int:
    inputs = [] if str(batch) == "-" else [batch]
    if output is not None:
        check_output_path(output, inputs)  # before the batch is read: -o must never be the batch itself
    if str(batch) == "-":
        lines: Iterable[str] = sys.stdin
    else:
        text = _read(batch, "batch file", MAX_BATCH_CHARS)
        # JSON Lines end at \n only: str.splitlines would also cut a line at a raw U+2028, U+0085
        # or form feed, which a JSON string may hold as it is
        lines = text.split("\n")
    if output is None:
        return _write_batch(sys.stdout, lines, points, seed, budget, max_elements)
    with open_output(output, inputs) as out:
        return _write_batch(out, lines, points, seed, budget, max_elements)


def _write_batch(
    out, lines: Iterable[str], points: int, seed: int, budget: float, max_elements: int | None = MAX_ELEMENTS
) -> int:
    all_right = True
    for obj in run_batch(lines, points=points, seed=seed, budget=budget, max_elements=max_elements):
        all_right = all_right and obj["verdict"] == "right"
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
        out.flush()
    return 0 if all_right else 1
