"""`backstep sheet hw.toml`: an exercise sheet and a solution sheet from a problem file.

The problem file is TOML::

    title = "Backpropagation by hand"       # required
    course = "Deep Learning, week 3"        # optional
    date = "2026-03-02"                     # optional (default: today; --date overrides)
    instructions = "..."                    # optional: replaces the standard instructions

    [[problem]]
    function = "sum((relu(X@W1)@W2 - Y)**2)"   # required: a formula or a program
    wrt = ["W1", "W2"]                         # optional (default: every variable)
    shapes = { X = "n,d", W1 = "d,h" }         # optional: as --shape
    assume = { x = "positive" }                # optional: as --assume
    title = "A two-layer network"              # optional
    text = "Let $\\sigma$ be ..."              # optional: prose, with $…$ math

Every problem is derived and verified against PyTorch; the exercise sheet shows each problem
(its function, shapes, graph and a space to work), the solution sheet the full derivations.
Both come from the templates ``exercises.tex.j2`` and ``solutions.tex.j2`` (``--template DIR``
overrides them). Bad input — TOML that does not parse, an unknown key, a formula that does not
derive — is a UsageError that names the file, the problem and the line.

Problem files are shared, so untrusted. Their text (`title`, `course`, `instructions`, and a
problem's `title` and `text`) is plain prose: every character prints as itself (`&`, `%`, `#`,
`_`, `\\`, `{`). Only `$…$` is LaTeX, and only math: letters, digits, punctuation, `^ _ & ~`,
balanced braces, the math commands of ``backstep.render.documents.MATH_COMMANDS`` (Greek letters,
`\\frac`, `\\partial`, `\\sum`, `\\sqrt`, `\\log`, `\\exp`, `\\cdot`, `\\times`, `\\top`,
`\\mathbf`, `\\mathbb`, `\\left`/`\\right`, `\\nabla`, `\\in`, `\\le`, `\\ldots`, accents, arrows,
…), `\\,` `\\;` `\\{` `\\}` `\\%` and the like, and the matrix and `cases` environments. Any other
command (`\\input`, `\\include`, `\\openin`, `\\read`, `\\write`, `\\csname`, `\\catcode`, `\\def`,
`\\usepackage`, …), a bare `%` or `#`, `^^` and control characters are refused: a SheetError that
names the field and what is refused. The sheets are written beside the problem file (or into
``--output-dir``), never through a symbolic link and never over the problem file itself.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BackstepError, Place, UsageError
from .model import Derivation
from .userfiles import check_output_path, write_output

SHEET_KEYS = ("title", "course", "date", "instructions", "problem")
PROBLEM_KEYS = ("function", "wrt", "shapes", "assume", "title", "text")


class SheetError(UsageError):
    """Bad input in a problem file: the message names the file (and the line, where known)."""

    def __init__(self, path: Path, message: str, place: Place | None = None, source: str | None = None):
        super().__init__(message, place, source)
        self.kind = f"error in {path}"


@dataclass
class Problem:
    number: int
    function: str
    line: int | None = None  # where its [[problem]] table starts in the file
    wrt: list[str] | None = None
    shapes: dict[str, tuple] = field(default_factory=dict)
    assume: dict[str, str] = field(default_factory=dict)
    title: str = ""
    text: str = ""


@dataclass
class Sheet:
    path: Path
    title: str
    course: str = ""
    date: str = ""
    instructions: str = ""
    problems: list[Problem] = field(default_factory=list)


def load_sheet(path: Path) -> Sheet:
    """Read and check a problem file; every mistake is a SheetError with the place."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:  # Python 3.10: the same parser, as the tomli package (a dependency there)
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise UsageError("backstep sheet reads TOML: on Python 3.10 that needs the tomli package") from None
    try:
        data = tomllib.loads(source)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", message)
        place = Place(int(m.group(1)), int(m.group(2))) if m else None
        message = re.sub(r"\s*\(at line \d+, column \d+\)", "", message) or "not valid TOML"
        raise SheetError(path, f"not valid TOML: {message}", place, source) from None
    lines = source.splitlines()

    def key_place(key: str, start: int = 1, end: int | None = None) -> Place | None:
        for i in range(start - 1, end if end is not None else len(lines)):
            m = re.match(rf"\s*{re.escape(key)}\s*=", lines[i])
            if m:
                col = len(lines[i]) - len(lines[i].lstrip()) + 1
                return Place(i + 1, col, col + len(key))
        return None

    def fail(message: str, place: Place | None = None) -> SheetError:
        return SheetError(path, message, place, source)

    unknown = [k for k in data if k not in SHEET_KEYS]
    if unknown:
        raise fail(
            f"unknown key {unknown[0]!r} (a problem file has: {', '.join(SHEET_KEYS)})",
            key_place(unknown[0], 1, _first_table_line(lines)),
        )
    if not isinstance(data.get("title"), str) or not data["title"].strip():
        raise fail('the sheet needs a title: title = "Backpropagation by hand"', key_place("title"))
    for key in ("course", "instructions"):
        if key in data and not isinstance(data[key], str):
            raise fail(f"{key} must be a string", key_place(key))
    for key in ("title", "course", "instructions"):
        _check_text(data.get(key, ""), key, lambda message, key=key: fail(message, key_place(key)))
    date = data.get("date", "")
    if isinstance(date, (datetime.date, datetime.datetime)):
        date = date.isoformat()[:10]
    elif not isinstance(date, str):
        raise fail('date must be a string or a TOML date: date = "2026-03-02"', key_place("date"))
    tables = data.get("problem")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise fail('the sheet has no problems: add [[problem]] tables, each with function = "..."')

    starts = [i + 1 for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*problem\s*\]\]", line)]
    problems = []
    for k, table in enumerate(tables, 1):
        start = starts[k - 1] if k - 1 < len(starts) else None
        end = starts[k] - 1 if k < len(starts) else None

        def place(key: str, start=start, end=end) -> Place | None:
            if start is None:
                return None
            return key_place(key, start, end) or Place(start, 1)

        where = f"problem {k}" + (f" (line {start})" if start else "")
        unknown = [key for key in table if key not in PROBLEM_KEYS]
        if unknown:
            raise fail(
                f"{where}: unknown key {unknown[0]!r} (a problem has: {', '.join(PROBLEM_KEYS)})", place(unknown[0])
            )
        function = table.get("function")
        if not isinstance(function, str) or not function.strip():
            raise fail(f'{where}: needs a function = "..." (a formula or a program)', place("function"))
        problem = Problem(number=k, function=function, line=start)
        for key in ("title", "text"):
            if key in table:
                if not isinstance(table[key], str):
                    raise fail(f"{where}: {key} must be a string", place(key))
                _check_text(table[key], key, lambda m, key=key, where=where: fail(f"{where}: {m}", place(key)))
                setattr(problem, key, table[key])
        if "wrt" in table:
            wrt = table["wrt"]
            if isinstance(wrt, str):
                wrt = [w.strip() for w in wrt.split(",") if w.strip()]
            if not isinstance(wrt, list) or not wrt or not all(isinstance(w, str) for w in wrt):
                raise fail(f'{where}: wrt must be a list of variable names: wrt = ["W1", "W2"]', place("wrt"))
            problem.wrt = wrt
        if "shapes" in table:
            problem.shapes = _shapes(table["shapes"], lambda m, where=where: fail(f"{where}: {m}", place("shapes")))
        if "assume" in table:
            assume = table["assume"]
            if not isinstance(assume, dict) or not all(isinstance(v, str) for v in assume.values()):
                raise fail(f'{where}: assume must be a table: assume = {{ x = "positive" }}', place("assume"))
            problem.assume = dict(assume)
        problems.append(problem)
    return Sheet(
        path=path,
        title=data["title"].strip(),
        course=data.get("course", "").strip(),
        date=date,
        instructions=data.get("instructions", "").strip(),
        problems=problems,
    )


def _check_text(text: str, key: str, fail) -> None:
    """A teacher's text: its `$…$` math may use only what `check_math` allows (nothing that reads
    or writes a file); anything else is refused by name, not silently printed as text."""
    from .render.documents import check_math, math_in_text

    for math in math_in_text(text):
        problem = check_math(math)
        if problem is not None:
            raise fail(
                f"{key}: {problem} is not allowed in $…$ math (only math commands such as \\frac, \\partial, "
                "\\sum, Greek letters; write a literal dollar sign as \\$)"
            )


def _first_table_line(lines: list[str]) -> int:
    for i, line in enumerate(lines):
        if line.lstrip().startswith("["):
            return i
    return len(lines)


def _shapes(value, fail) -> dict[str, tuple]:
    from .shapes import parse_shape_text

    if not isinstance(value, dict):
        raise fail('shapes must be a table: shapes = { X = "n,d", b = "h" }')
    shapes = {}
    for name, shape in value.items():
        if isinstance(shape, str):
            try:
                shapes[name] = parse_shape_text(shape)
            except ValueError as err:
                raise fail(f"shape of {name}: {err}") from None
        elif isinstance(shape, list) and all(
            (isinstance(d, int) and not isinstance(d, bool) and d > 0) or (isinstance(d, str) and d.isidentifier())
            for d in shape
        ):
            shapes[name] = tuple(shape)
        else:
            raise fail(f'shape of {name}: write "n,d" or ["n", "d"] (positive sizes or dimension names)')
    return shapes


def derive_problems(sheet: Sheet, points: int = 3, seed: int = 0) -> list[Derivation]:
    """Derive and verify every problem; a problem that does not derive is a SheetError naming it."""
    from .derive import derive

    derivations = []
    for p in sheet.problems:
        try:
            derivations.append(
                derive(p.function, shapes=p.shapes, wrt=p.wrt, assume=p.assume, verify=True, points=points, seed=seed)
            )
        except BackstepError as err:
            err.with_source(p.function)
            where = f"problem {p.number}" + (f" (line {p.line})" if p.line else "")
            raise SheetError(sheet.path, f"{where}, its function: {err.render()}") from None
        except RecursionError:
            raise SheetError(sheet.path, f"problem {p.number}: the function is nested too deeply to derive") from None
    return derivations


def today() -> str:
    return datetime.date.today().isoformat()


def render_sheets(
    sheet: Sheet,
    derivations: list[Derivation],
    lang: str = "en",
    notation: str = "bar",
    template_dir: Path | None = None,
    date: str | None = None,
) -> dict[str, str]:
    """The LaTeX of the two sheets: {"exercises": ..., "solutions": ...}."""
    from .render.documents import Templates, view
    from .render.i18n import Messages, format_date

    msg = Messages(lang)
    templates = Templates(template_dir)
    problems = [
        {"number": p.number, "title": p.title, "text": p.text, "D": view(d, notation, lang)}
        for p, d in zip(sheet.problems, derivations)
    ]
    info = {
        "title": sheet.title,
        "course": sheet.course,
        "date": format_date(date or sheet.date or today(), lang),
        "instructions": sheet.instructions,
    }
    common = {"sheet": info, "problems": problems, "msg": msg, "lang": lang}
    return {
        "exercises": templates.render("exercises.tex.j2", **common),
        "solutions": templates.render("solutions.tex.j2", **common),
    }


def write_sheets(
    path: Path,
    output_dir: Path | None = None,
    fmt: str = "pdf",
    lang: str = "en",
    notation: str = "bar",
    template_dir: Path | None = None,
    date: str | None = None,
    points: int = 3,
    seed: int = 0,
) -> tuple[list[Path], list[Derivation]]:
    """Write `<stem>-exercises` and `<stem>-solutions` (.pdf, or .tex with fmt "latex") next to the
    problem file or into `output_dir`; returns the files written and the derivations."""
    from .render.pdf import PdfError, compile_pdf, missing_engine

    if fmt not in ("pdf", "latex"):
        raise UsageError(f"--format {fmt}: a sheet is pdf or latex")
    if fmt == "pdf":
        problem = missing_engine(lang)
        if problem:
            raise PdfError(problem)
    sheet = load_sheet(path)
    derivations = derive_problems(sheet, points=points, seed=seed)
    documents = render_sheets(sheet, derivations, lang=lang, notation=notation, template_dir=template_dir, date=date)
    folder = Path(output_dir) if output_dir is not None else sheet.path.parent
    suffix = ".tex" if fmt == "latex" else ".pdf"
    targets = {kind: folder / f"{sheet.path.stem}-{kind}{suffix}" for kind in documents}
    for target in targets.values():  # both refused before either is written (a link, the problem file)
        check_output_path(target, inputs=[sheet.path])
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot write into {folder}: {err.strerror or err}") from None
    written = []
    for kind, tex in documents.items():
        target = targets[kind]
        if fmt == "latex":
            write_output(target, tex, inputs=[sheet.path])
        else:
            compile_pdf(tex, target, lang=lang, name=target.stem, inputs=[sheet.path])
        written.append(target)
    return written, derivations
