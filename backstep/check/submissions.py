"""What a grading run reads: the key's problems, and the students' submissions found in the folder
(links and special files refused, two submissions under one name a conflict), each read without
following a link or waiting for a FIFO."""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..userfiles import file_kind
from .common import _assume_from_json, _shapes_from_json
from .files import split_text
from .problem import Problem

SUBMISSION_SUFFIXES = ("", ".txt", ".md", ".bs", ".deriv")


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
