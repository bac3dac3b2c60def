"""The command line's plumbing: argv, stdin and stdout, and the checks on option values.

- `FormulaCommand`: a formula that begins with `-` (`backstep derive "-x**2"`) is the formula,
  not an unknown option (nor `-s` followed by `um(...)`).
- `read_program`: `-f FILE` or `-f -` (stdin), read at most --max-chars (+1) characters, never a
  FIFO, a device or a folder; a UTF-8 BOM and a common indentation are removed.
- `output_format`: `-o -` is stdout; `-o out.pdf` without --format writes a PDF; a --format that
  contradicts the extension is an error.
- `number`: the range check of a numeric option, which also refuses nan and inf.
- `setup_streams` and `finish`: a stdout that cannot encode a character degrades, a closed pipe
  ends quietly, a full disk is one message.

Kept light: importing it imports neither SymPy nor torch.
"""

# No `from __future__ import annotations` here: typer reads the annotations of the callbacks.
import math
import os
import re
import sys
import textwrap
from pathlib import Path
from typing import Optional

import typer
import typer.core
from rich.console import Console

try:  # typer 0.28 carries its own copy of click
    from typer._click.exceptions import NoSuchOption
except ImportError:  # pragma: no cover - older typer: click itself
    from click.exceptions import NoSuchOption

from .errors import BackstepError, UsageError
from .userfiles import read_text_capped  # noqa: F401  (the CLI's readers use it)

STDIO = "-"

# --- a formula that begins with "-" -----------------------------------------------------------------

# After the minus: a name, a number, a bracket (or spaces and one of those).
_FORMULA_AFTER_MINUS = re.compile(r"\s*[\w(\[.]")
# Characters of a formula that no attached option value (-sX=3x4, -ffile.bs, -oout.json) has.
_FORMULA_ONLY = re.compile(r"[()*+@]")


def looks_like_formula(token: str, value_options: set[str]) -> bool:
    """`token` (which begins with "-") is a formula such as -x**2 or -sum(Y * log(P)), not an option."""
    if len(token) < 2 or token[1] == "-" or token in value_options:
        return False
    rest = token[1:]
    if not _FORMULA_AFTER_MINUS.match(rest):
        return False
    if token[:2] in value_options:  # -sum(...) or -sX=3x4: a short option with its value attached?
        head = rest.split("(", 1)[0]
        return bool(_FORMULA_ONLY.search(rest)) and "=" not in head
    return True


def formula_first(args: list[str], command) -> list[str]:
    """`args` with a formula that begins with "-" moved behind `--`, where click reads it as the
    argument. Option values (`--claim -2*x`) and everything after `--` are left alone."""
    value_options: set[str] = set()
    flags: set[str] = set()
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option":
            (flags if param.is_flag or param.count else value_options).update(param.opts)
            flags.update(param.secondary_opts)
    positional = False
    i = 0
    while i < len(args):
        token = args[i]
        if token == "--":
            return args
        if token.startswith("-") and len(token) > 1:
            if token in value_options:
                i += 2
                continue
            if token.startswith("--") or token in flags:
                i += 1
                continue
            if looks_like_formula(token, value_options):
                if positional:
                    return args  # a second argument: click says so
                rest = args[:i] + args[i + 1 :]
                if "--" in rest:
                    at = rest.index("--") + 1
                    return rest[:at] + [token] + rest[at:]
                return rest + ["--", token]
        else:
            positional = True
        i += 1
    return args


class FormulaCommand(typer.core.TyperCommand):
    """A command whose argument is a formula, which may begin with a minus sign."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, formula_first(list(args), self))
        except NoSuchOption as err:
            if not err.option_name.startswith("--"):
                err.message += f' (a formula that begins with "-" goes after --: backstep {self.name} -- "-x**2")'
            raise


# --- reading a program ------------------------------------------------------------------------------


def clean_program(text: str) -> str:
    """A UTF-8 byte order mark, the blank lines before the first statement and the indentation
    common to every line removed: a program pasted from an indented block parses."""
    text = text.lstrip("\ufeff")
    lines = text.split("\n")
    while len(lines) > 1 and not lines[0].strip():
        lines.pop(0)
    return textwrap.dedent("\n".join(lines))


def read_program(
    expr: Optional[str], file: Optional[Path], max_chars: int = 100_000, example: str = 'backstep derive "x**2"'
) -> str:
    """The formula or program: the argument, or -f FILE, or -f - (stdin)."""
    if expr is not None and file is not None:
        raise UsageError("give the formula as an argument or with -f FILE, not both")
    if file is not None:
        return clean_program(read_text_capped(file, max_chars))
    if expr is None:
        raise UsageError(f"give a formula, e.g. {example}, or -f FILE (-f - reads stdin)")
    return clean_program(expr)


# --- output: -o - and the format from the extension --------------------------------------------------

EXTENSIONS = {
    ".json": "json",
    ".md": "md",
    ".markdown": "md",
    ".tex": "latex",
    ".latex": "latex",
    ".pdf": "pdf",
}


def stdout_or_file(output: Optional[Path]) -> Optional[Path]:
    """`-o -` is stdout (None)."""
    return None if output is None or str(output) == STDIO else output


def output_format(fmt: Optional[str], output: Optional[Path], formats: tuple[str, ...]) -> tuple[str, Optional[Path]]:
    """The format and the file (None: stdout). Without --format, -o FILE's extension decides
    (.json, .md, .tex, .pdf; any other, .txt included, is text); a --format that contradicts a
    known extension is a UsageError."""
    path = stdout_or_file(output)
    implied = EXTENSIONS.get(path.suffix.lower()) if path is not None else None
    if fmt is None:
        fmt = implied if implied in formats else "text"
        if implied is not None and implied not in formats:
            raise UsageError(
                f"-o {path}: the extension {path.suffix} means {implied}, which this command does not write "
                f"(it writes {', '.join(formats)}: add --format, or choose another file name)"
            )
    elif implied is not None and implied != fmt:
        raise UsageError(
            f"--format {fmt} -o {path}: the extension {path.suffix} means {implied}; "
            f"drop --format, or name the file for {fmt}"
        )
    if fmt == "pdf" and path is None:
        raise UsageError("--format pdf writes a file: add -o FILE.pdf" + (" (not -o -)" if output else ""))
    return fmt, path


# --- numeric options ------------------------------------------------------------------------------------


def number(low: float, high: float, low_open: bool = False):
    """A typer callback: the value is finite and within [low, high] (or (low, high]), else a
    click error (exit 2) that gives the range."""

    def check(ctx: typer.Context, param: typer.CallbackParam, value: Optional[float]):
        if value is None:
            return value
        inside = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not inside:
            left = "(" if low_open else "["
            raise typer.BadParameter(f"{value} is not a finite number in {left}{_show(low)}, {_show(high)}]")
        return value

    return check


def _show(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e18 else repr(x)


# --- streams -----------------------------------------------------------------------------------------------


def setup_streams() -> None:
    """A stdout or stderr that cannot encode a character (PYTHONIOENCODING=ascii, a cp1252
    console) writes it as an escape (\\u2202) instead of raising UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "").replace("_", "")
        if reconfigure is not None and not encoding.startswith("utf"):
            try:
                reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass


def stdout_width(default: int) -> Optional[int]:
    """The width of output on stdout: the terminal's, else COLUMNS when set, else `default`."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else default


def print_rich(renderables, default_width: int) -> None:
    """Print rich renderables on stdout; piped, at COLUMNS (else `default_width`) columns and with
    no spaces at the ends of the lines."""
    from rich.console import Console

    if sys.stdout.isatty():
        console = Console(emoji=False, highlight=False)
        for item in renderables:
            console.print(item)
        return
    import io

    buffer = io.StringIO()
    console = Console(emoji=False, highlight=False, width=stdout_width(default_width), file=buffer, color_system=None)
    for item in renderables:
        console.print(item)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))


def _to_devnull() -> None:
    """Point stdout at /dev/null, so that the interpreter's own last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def finish(code: object) -> int:
    """Flush stdout and return the exit code: a reader that went away (`| head`) ends quietly with
    141 (as a Unix tool killed by SIGPIPE); a failed write (a full disk) is one message, exit 2."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _to_devnull()
        return 141
    except OSError as err:
        _to_devnull()
        sys.stderr.write(f"backstep: cannot write the output: {err.strerror or err}\n")
        return 2
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    sys.stderr.write(f"{code}\n")
    return 1


# --- errors and NAME=VALUE options, shared by every command ------------------------------------------

stderr = Console(emoji=False, stderr=True, highlight=False, soft_wrap=True)
SEMICOLON_LISTS = ("--shape", "--assume")  # values that never hold a `;` themselves


def fail(err: BackstepError, source: str | None = None) -> None:
    """Print a clean error and exit 2: the one way bad input leaves the CLI."""
    if source is not None:
        err.with_source(source)
    stderr.print(err.render(), markup=False)
    raise typer.Exit(2)


def parse_pairs(items: list[str], option: str) -> list[tuple[str, str]]:
    """NAME=VALUE items of a repeatable option; --shape and --assume also take `a=1;b=2`."""
    pairs = []
    for item in items:
        for part in item.split(";") if ";" in item and option in SEMICOLON_LISTS else [item]:
            if "=" not in part:
                raise UsageError(f"{option} {part}: write NAME=VALUE")
            name, value = part.split("=", 1)
            name = name.strip()
            if not name.isidentifier():
                raise UsageError(f"{option} {part}: {name!r} is not a variable name")
            pairs.append((name, value.strip()))
    return pairs
