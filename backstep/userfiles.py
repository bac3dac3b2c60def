"""Files that come from users, and the files backstep writes for them.

Every file backstep writes goes through `write_output` (or `open_output`): never through a
symbolic link, never over one of the command's own input files, and by a temporary file beside the
target renamed over it, so a failed write never destroys the previous PDF, CSV or JSON. The
helpers for user-written text (`printable`, `markup_safe`, `csv_cell`) live in `safetext` and are
re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .errors import UsageError
from .safetext import csv_cell, markup_safe, printable  # noqa: F401  (re-exported: the helpers for user text)

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
    if not path.parent.is_dir():
        raise UsageError(f"cannot write {path}: the folder {path.parent} does not exist")
    try:
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


# --- files read -----------------------------------------------------------------------------------


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, from its `st_mode`, for a message ("a FIFO (named pipe)")."""
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def read_text_capped(file: Path, max_chars: int, what: str = "") -> str:
    """The text of `file` (`-`: stdin), at most `max_chars` characters: a longer one, a file that is
    not a regular file, or one that is not UTF-8 is a UsageError, raised before it is read whole."""
    label = f"{what} {file}".strip() if str(file) != "-" else f"{what or 'the program'} from stdin"
    if str(file) == "-":
        try:
            text = sys.stdin.read(max_chars + 1)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise UsageError(f"cannot read {label}: {getattr(err, 'strerror', None) or err}") from None
    else:
        try:
            mode = os.stat(file).st_mode
        except OSError as err:
            raise UsageError(f"cannot read {label}: {err.strerror or err}") from None
        if not stat.S_ISREG(mode):
            raise UsageError(f"cannot read {label}: it is {file_kind(mode)}, not a regular file")
        try:
            with open(file, encoding="utf-8") as f:
                text = f.read(max_chars + 1)
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"cannot read {label}: {getattr(err, 'strerror', None) or err}") from None
    if len(text) > max_chars:
        raise UsageError(f"{label} is longer than {max_chars} characters (--max-chars)")
    return text
