"""The Python API beyond ``derive`` and ``parse``: checking claims and derivation files, code
generation, and the JSON schemas of the outputs.

``import backstep`` does not import this module: ``backstep.check_file``, ``backstep.schema``,
``backstep.CheckResult`` and ``backstep.FileCheckResult`` are loaded on first use, and
``backstep.check(...)`` and ``backstep.codegen(...)`` (the submodules ``backstep.check`` and
``backstep.codegen``, made callable by ``backstep/__init__.py``) call ``check`` and ``codegen``
here. So the CLI's cold start pays for none of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

from .check import Problem, Result
from .errors import UsageError
from .model import Derivation

CHECK_SCHEMA = "backstep.check/1"
FILE_SCHEMA = "backstep.check-file/1"

# The schema files shipped in backstep/schemas/, by short name and by the id the documents carry.
SCHEMAS = {
    "derivation": "derivation.schema.json",
    "check": "check.schema.json",
    "check-file": "check-file.schema.json",
    "check-batch": "check-batch.schema.json",
}
SCHEMA_IDS = {
    "backstep.derivation/1": "derivation",
    CHECK_SCHEMA: "check",
    FILE_SCHEMA: "check-file",
}


def _console_text(draw, width: int = 140) -> str:
    """What `draw(console)` prints, as plain text (no colour, no terminal codes)."""
    import io

    from rich.console import Console

    buffer = io.StringIO()
    draw(Console(emoji=False, file=buffer, width=width, highlight=False, color_system=None))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()) + "\n"


@dataclass(repr=False)
class CheckResult(Result):
    """The verdict on one claim: a ``backstep.check.Result`` with the formula and the variable.

    ``verdict`` is ``"right"`` or ``"wrong"``; ``reason`` says why; a wrong claim may carry a
    ``mistake`` (``.kind``, ``.message``, ``.fix``), the true gradient (``expected``,
    ``expected_text``) and a ``counterexample``. ``to_dict()`` is the document of
    ``backstep check --format json`` (schema ``backstep.check/1``).
    """

    input: str = ""
    wrt: str = ""

    @property
    def ok(self) -> bool:
        """True when the claim is right."""
        return self.verdict == "right"

    def to_dict(self) -> dict:
        """The ``backstep.check/1`` document, as ``backstep check --format json`` writes it."""
        return {"schema": CHECK_SCHEMA, "input": self.input, "wrt": self.wrt, **Result.to_dict(self)}

    def to_json(self) -> str:
        """``to_dict()`` as JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_text(self) -> str:
        """The verdict as the terminal shows it (plain text)."""
        from .check.run import print_claim

        return _console_text(lambda console: print_claim(self, console))

    def __repr__(self) -> str:
        mark = "✓" if self.ok else "✗"
        tail = f": {self.mistake.message}" if self.mistake else (f": {self.reason}" if not self.ok else "")
        return f"<CheckResult {mark} {self.verdict}  {self.target} = {_short(self.claim)}{_short(tail, 120)}>"

    def __str__(self) -> str:
        return self.to_text().rstrip("\n")


@dataclass(repr=False)
class FileCheckResult:
    """Every line of a derivation file, checked: ``lines`` holds one ``backstep.check.Result`` a line
    (``verdict`` right, wrong, error, or defined for a name of the student's own, with ``line``,
    ``written`` and ``step``). ``to_dict()`` is the ``backstep.check-file/1`` document."""

    input: str
    lines: list[Result]
    problem: Problem | None = field(default=None, compare=False)

    @property
    def verdict(self) -> str:
        """``right`` (every checked line right), ``wrong`` (a line wrong) or ``error`` (a line cannot be checked)."""
        return self.to_dict()["verdict"]

    @property
    def ok(self) -> bool:
        """True when every line that is checked is right."""
        return self.verdict == "right"

    @property
    def first_wrong_line(self) -> int | None:
        """The number of the first line that is wrong or cannot be checked."""
        return self.to_dict()["first_wrong_line"]

    @property
    def exit_code(self) -> int:
        """The CLI's exit code: 0 every line right, 1 a line wrong, 2 a line that cannot be checked."""
        from .check.run import file_exit_code

        return file_exit_code(self.lines)

    def to_dict(self) -> dict:
        """The ``backstep.check-file/1`` document, as ``backstep check --derivation FILE --format json`` writes it."""
        from .check.run import file_json

        return file_json(self.problem if self.problem is not None else _Source(self.input), self.lines)

    def to_json(self) -> str:
        """``to_dict()`` as JSON text."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)

    def to_text(self) -> str:
        """The table the terminal shows (plain text)."""
        from .check.run import print_file

        return _console_text(lambda console: print_file(self.lines, console))

    def __repr__(self) -> str:
        counts = {v: sum(r.verdict == v for r in self.lines) for v in ("right", "wrong", "error", "defined")}
        shown = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
        first = f"; first wrong line {self.first_wrong_line}" if self.first_wrong_line else ""
        return f"<FileCheckResult {self.verdict}: {len(self.lines)} lines ({shown or 'none'}){first}>"

    def __str__(self) -> str:
        return self.to_text().rstrip("\n")


@dataclass
class _Source:
    source: str


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _one_wrt(wrt: str) -> str:
    if not isinstance(wrt, str) or not wrt.strip():
        raise UsageError("wrt names the variable whose gradient the claim is, e.g. wrt='W1'")
    if "," in wrt:
        raise UsageError("wrt names one variable for a claim")
    return wrt.strip()


def check(
    source: str,
    wrt: str,
    claim: str,
    *,
    shapes: dict[str, tuple] | None = None,
    assume: dict[str, str] | None = None,
    points: int = 3,
    seed: int = 0,
    timeout: float = 2.0,
) -> CheckResult:
    """Check a hand-derived gradient: is `claim` the gradient ∂L/∂`wrt` of `source`?

    ``backstep.check("relu(x@W1)@W2", "W1", "x.T @ ((grad_y @ W2.T) * step(x @ W1))")`` — the same
    check as ``backstep check EXPR --wrt W1 --claim CLAIM``: numerically at `points` random points
    (and 2 more at a second set of sizes) against torch autograd, symbolically where SymPy proves it
    within `timeout` seconds. The claim may carry its left side (``grad_W1 = ...``). shapes and
    assume as for ``derive``. A wrong claim is a result (``verdict == "wrong"``), not an error; bad
    input (a claim or formula that does not parse, an unknown name) raises a ``BackstepError``.
    """
    wrt = _one_wrt(wrt)
    problem = Problem(source, shapes, [wrt], assume, points=points, seed=seed, budget=timeout)
    result = problem.check_claim(wrt, claim)
    return CheckResult(**vars(result), input=problem.source, wrt=wrt)


def check_file(
    source: str,
    derivation: str | os.PathLike | Iterable[str],
    *,
    shapes: dict[str, tuple] | None = None,
    assume: dict[str, str] | None = None,
    points: int = 3,
    seed: int = 0,
    timeout: float = 2.0,
) -> FileCheckResult:
    """Check a whole hand derivation of `source`, line by line (``backstep check EXPR --derivation FILE``).

    `derivation` is the text (``"grad_W2 = H.T @ ...\\nH_bar = ..."``), a list of lines, or a path
    (``pathlib.Path``; a ``str`` is always the text itself). One ``name = expression`` per line,
    ``#`` comments allowed; each line is checked against the true adjoint (or value) of its node,
    with every adjoint it uses bound to its true value, so the first wrong line is named and later
    lines are checked as if the earlier ones were right. Bad input for the formula raises a
    ``BackstepError``; a line that cannot be checked is an ``error`` line of the result.
    """
    if isinstance(derivation, os.PathLike):
        from pathlib import Path

        path = Path(derivation)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(
                f"cannot read the derivation file {path}: {getattr(err, 'strerror', None) or err}"
            ) from None
    elif isinstance(derivation, str):
        text = derivation
    else:
        text = "\n".join(line.rstrip("\n") for line in derivation)
    problem = Problem(source, shapes, None, assume, points=points, seed=seed, budget=timeout)
    return FileCheckResult(problem.source, problem.check_lines(text), problem)


def codegen(
    source: str | Derivation,
    name: str = "DerivedFunction",
    *,
    shapes: dict[str, tuple] | None = None,
    wrt: list[str] | str | None = None,
    assume: dict[str, str] | None = None,
    command: str | None = None,
) -> str:
    """The Python module (its source text) holding a ``torch.autograd.Function`` named `name` whose
    backward is the derived formula, step by step, with a ``gradcheck()`` function — what
    ``backstep codegen`` writes.

    `source` is a formula or program (derived here with shapes, wrt and assume, as ``derive`` does)
    or a ``Derivation``. `command`, if given, goes into the module's docstring as the way to
    regenerate it. Load the text with ``backstep.codegen.load_generated(code)`` to run it.
    """
    from .codegen import generate

    if isinstance(source, Derivation):
        if shapes or wrt or assume:
            raise UsageError("shapes, wrt and assume are for a formula; a Derivation already has them")
        derivation = source
    else:
        from .derive import derive

        derivation = derive(source, shapes=shapes, wrt=wrt, assume=assume, verify=False)
    return generate(derivation, name, command=command).code


def schema(name: str = "derivation") -> dict:
    """The JSON Schema (draft 2020-12) of a JSON output, from the files shipped in ``backstep/schemas/``.

    `name`: ``"derivation"`` (``backstep derive --format json``, ``backstep.derivation/1``),
    ``"check"`` (one claim, ``backstep.check/1``), ``"check-file"`` (a derivation file,
    ``backstep.check-file/1``), ``"check-batch"`` (one line of ``backstep check --batch``); the
    ``schema`` field of a document works too: ``backstep.schema(doc["schema"])``.
    """
    from importlib.resources import files

    key = SCHEMA_IDS.get(name, name)
    if key not in SCHEMAS:
        known = ", ".join([*SCHEMAS, *SCHEMA_IDS])
        raise UsageError(f"no schema {name!r} (known: {known})")
    return json.loads(files("backstep").joinpath("schemas", SCHEMAS[key]).read_text(encoding="utf-8"))
