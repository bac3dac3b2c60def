"""Files and text that come from users, and the files backstep writes for them.

Everything a user hands backstep (a program, a submission, a folder name, a comment) is untrusted:
it is shown only through `printable` (control characters made visible, so an ANSI escape cannot
clear a screen or forge a line) and written into a CSV only through `csv_cell` (no live
spreadsheet formula). Every file backstep writes goes through `write_output`: never through a
symbolic link, never over one of the command's own input files, and by a temporary file beside the
target renamed over it, so a failed write never destroys the previous PDF, CSV or JSON.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import UsageError

# --- text shown to a person -------------------------------------------------------------------


def printable(text: object, keep_newlines: bool = False) -> str:
    """`text` with every control or format character written as a visible escape (`\\x1b`,
    `\\u202e`): shown on a terminal or in a table, it can move no cursor, clear no screen and
    reorder no letters. Newlines and tabs stay when `keep_newlines` is set."""
    out = []
    for ch in str(text):
        if keep_newlines and ch in "\n\t":
            out.append(ch)
            continue
        category = unicodedata.category(ch)
        if category in ("Cc", "Cf", "Zl", "Zp") or ch == "\x7f":
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def markup_safe(text: object, keep_newlines: bool = False) -> str:
    """`printable(text)` with rich's markup escaped, for a string that rich will parse as markup."""
    from rich.markup import escape

    return escape(printable(text, keep_newlines=keep_newlines))


# OWASP's list: a cell that begins with one of these is read by a spreadsheet as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(value: object) -> object:
    """A value made safe for a CSV cell that a spreadsheet will open: text that a spreadsheet
    would read as a formula gets a leading `'` (OWASP's advice). Numbers stay numbers."""
    if not isinstance(value, str):
        return value
    if value.startswith(_FORMULA_START):
        return "'" + value
    return value


# --- files written ------------------------------------------------------------------------------


def check_output_path(path: Path | str, inputs: Iterable[Path | str | None] = ()) -> Path:
    """`path` as an output: refused (UsageError) when it is a symbolic link, not a regular file,
    or the same file as one of `inputs`."""
    path = Path(path)
    if path.is_symlink():
        raise UsageError(f"will not write {path}: it is a symbolic link (write to the file itself, or elsewhere)")
    if path.exists():
        if not path.is_file():
            raise UsageError(f"will not write {path}: it is not a regular file")
        for source in inputs:
            if source is None:
                continue
            with contextlib.suppress(OSError):
                if os.path.samefile(path, source):
                    raise UsageError(f"will not write {path}: it is an input of this command (choose another -o)")
    return path


@contextlib.contextmanager
def open_output(
    path: Path | str, inputs: Iterable[Path | str | None] = (), binary: bool = False, newline: str | None = None
) -> Iterator[IO]:
    """A file to write `path` through: a temporary file beside it, renamed over `path` when the
    block ends without an error, removed when it fails (the previous `path` stays as it was)."""
    path = check_output_path(path, inputs)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        mode = "wb" if binary else "w"
        encoding = None if binary else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _keep_mode(path, temporary)
        os.replace(temporary, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise UsageError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def write_output(path: Path | str, data: str | bytes, inputs: Iterable[Path | str | None] = ()) -> Path:
    """Write `data` to `path` safely (see `open_output`); returns the path."""
    with open_output(path, inputs, binary=isinstance(data, bytes)) as f:
        f.write(data)
    return Path(path)


def _keep_mode(path: Path, temporary: str) -> None:
    """The new file gets the old one's permissions, or the usual ones (mkstemp makes it 0600)."""
    try:
        mode = path.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(temporary, mode)
