"""The formats a derivation is written in, each registered by the module that makes it.

A `Format` says how its output is made (a text, a file it writes itself, a view for the
terminal) and which of the document choices it takes, so that the CLI and the Python API look a
format up instead of knowing each one. The modules register themselves when they are imported;
``backstep.render`` imports one when its format is first asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The choices a document format may take: how adjoints are written, the language of the prose,
# the teacher's own templates, a complete LaTeX document.
DOCUMENT_CHOICES = ("notation", "lang", "template_dir", "standalone")


@dataclass(frozen=True)
class Format:
    name: str
    choices: tuple[str, ...] = ()  # which of DOCUMENT_CHOICES it takes
    render: Callable[..., str] | None = None  # the output as text: render(d, **choices)
    write: Callable[..., None] | None = (
        None  # a format that writes its file itself: write(d, path, inputs=…, **choices)
    )
    show: Callable[..., Any] | None = None  # the view on a terminal, when stdout is the output: show(d, **choices)
    preflight: Callable[[str], None] | None = None  # refuses, before any work, what cannot be made here (by lang)

    def chosen(self, **choices: Any) -> dict[str, Any]:
        """The choices this format takes, of those given."""
        return {k: v for k, v in choices.items() if k in self.choices}


FORMATS: dict[str, Format] = {}


def _register(fmt: Format) -> None:
    unknown = set(fmt.choices) - set(DOCUMENT_CHOICES)
    if unknown:
        raise ValueError(f"format {fmt.name!r}: unknown choices {sorted(unknown)}")
    FORMATS[fmt.name] = fmt


def renderer(name: str, choices: tuple[str, ...] = (), show: Callable[..., Any] | None = None):
    """Register the decorated function as the format that renders `name` as text."""

    def register(fn: Callable[..., str]) -> Callable[..., str]:
        _register(Format(name, choices, render=fn, show=show))
        return fn

    return register


def writer(name: str, choices: tuple[str, ...] = (), preflight: Callable[[str], None] | None = None):
    """Register the decorated function as the format that writes `name` files itself."""

    def register(fn: Callable[..., None]) -> Callable[..., None]:
        _register(Format(name, choices, write=fn, preflight=preflight))
        return fn

    return register
