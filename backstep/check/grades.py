"""The grades: grades.csv written as the grading goes (or all at once), and the table a person reads."""

from __future__ import annotations

import contextlib
import csv
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from ..errors import UsageError
from ..userfiles import _keep_mode, check_output_path, csv_cell, open_output, printable
from .common import _console

CSV_COLUMNS = ["student", "problem", "step", "verdict", "mistake", "line", "written", "reason"]


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
