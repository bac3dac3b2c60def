"""User-written text made safe to show: on a terminal, in a rich table, in a spreadsheet.

Anything a user hands backstep (a comment, a submission's lines, a folder name) is shown only
through `printable` (control characters made visible, so an ANSI escape cannot clear a screen or
forge a line), through `markup_safe` where rich parses markup, and written into a CSV only through
`csv_cell` (no live spreadsheet formula).
"""

from __future__ import annotations

import re
import unicodedata


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
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
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


# --- a program's lines -------------------------------------------------------------------------


def split_lines(text: str) -> list[str]:
    """The lines of a program as Python's tokenizer sees them: split at \\n, \\r\\n and \\r only."""
    return re.split(r"\r\n|\r|\n", text)


def dedent_program(lines: list[str]) -> tuple[str, list[int]]:
    """The program without the indentation its lines share, and how much each line lost.

    `    H = relu(X @ W)` indented in a file or a docstring parses like `H = relu(X @ W)`; places
    stay those of the text as written (the shift is added back). Blank lines and comment lines
    do not count (Python ignores their indentation too). A line indented more than the others is
    still Python's "unexpected indent"."""
    code = [line for line in lines if line.strip(" \t\f") and not line.lstrip(" \t\f").startswith("#")]
    margin = ""
    if code:
        first = code[0]
        margin = first[: len(first) - len(first.lstrip(" \t\f"))]
        for line in code[1:]:
            while margin and not line.startswith(margin):
                margin = margin[:-1]
    out, shifts = [], []
    for line in lines:
        if line.startswith(margin):
            kept = line[len(margin) :]
        elif not line.strip(" \t\f") or line.lstrip(" \t\f").startswith("#"):
            kept = line.lstrip(" \t\f")
        else:  # (cannot happen: every code line starts with the margin)
            kept = line
        out.append(kept)
        shifts.append(len(line.encode("utf-8")) - len(kept.encode("utf-8")))
    return "\n".join(out), shifts
