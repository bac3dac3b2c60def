"""The errors backstep raises for bad input.

Every error a user can cause is a ``BackstepError``: it carries a one-line message and, where
the input has one, the place (line, column) so that the CLI can print the line with a caret
under the spot. The CLI turns any ``BackstepError`` into exit code 2 and never shows a
traceback. Anything else escaping is a bug in backstep.
"""

from __future__ import annotations

from dataclasses import dataclass

from .safetext import printable, split_lines


@dataclass(frozen=True)
class Place:
    """A spot in the user's text: 1-based line and column, with the end column when known."""

    line: int
    col: int
    end_col: int | None = None


class BackstepError(Exception):
    """Bad input: a clear message, optionally with the place in the source text."""

    kind = "error"

    def __init__(self, message: str, place: Place | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.place = place
        self.source = source

    def with_source(self, source: str) -> BackstepError:
        if self.source is None:
            self.source = source
        return self

    def render(self) -> str:
        """The message as the CLI prints it: `kind at line:col: message`, the line, a caret.
        Control characters of the user's text are shown as escapes (`\\x1b`), never sent as is."""
        message = printable(self.message, keep_newlines=True)
        if self.place is None:
            return f"{self.kind}: {message}"
        head = f"{self.kind} at {self.place.line}:{self.place.col}: {message}"
        if not self.source:
            return head
        lines = split_lines(self.source) or [""]  # as Python ends lines: not at U+2028, \x1c…
        if not 1 <= self.place.line <= len(lines):
            return head
        text = lines[self.place.line - 1]
        if len(text) > 200:  # keep the excerpt readable for very long lines
            start = max(0, self.place.col - 100)
            text = text[start : start + 200]
            col = self.place.col - start
        else:
            col = self.place.col
        width = 1
        if self.place.end_col is not None and self.place.end_col > self.place.col:
            width = min(self.place.end_col - self.place.col, max(1, len(text) - col + 1))
        # the caret moves with the escapes written before it, and widens over those under it
        before = len(printable(text[: col - 1]))
        under = len(printable(text[col - 1 : col - 1 + width])) or 1
        caret = " " * before + "^" * under
        return f"{head}\n  {printable(text)}\n  {caret}"

    def __str__(self) -> str:
        return self.render()


class ParseError(BackstepError):
    """The text is not a formula backstep accepts (syntax, unknown name or function)."""

    kind = "syntax error"


class UnsupportedError(BackstepError):
    """Valid Python, but a construct backstep does not accept in a formula."""

    kind = "unsupported"


class ShapeError(BackstepError):
    """Shapes that do not fit together (`x@W1` with 3 != 4)."""

    kind = "shape error"


class DomainError(BackstepError):
    """A value or point outside the domain of a function (log of a negative number)."""

    kind = "domain error"


class UsageError(BackstepError):
    """A command-line option that does not make sense (`--wrt` names no variable)."""

    kind = "error"


# --- internal signals ---------------------------------------------------------------------------
# Not user errors: one part of backstep telling another that it cannot do something for this
# expression, so that the caller can fall back (print named steps, skip a numeric shortcut).
# They are their own types so that a fallback never catches a real TypeError bug.


class InternalSignal(Exception):
    """Base of the signals between backstep's own parts; never shown to a user as is."""


class CannotPrint(InternalSignal):
    """A printer has no rule for this expression (or this op has no printing for the target)."""


class CannotEvaluate(InternalSignal):
    """The numeric evaluator has no rule for this expression."""
