"""Renderers: each turns a Derivation into one output format, reading only the data model.

Each format is registered by its module (``registry.Format``: how it is made, which choices it
takes); the CLI and the Python API look formats up here. A format's module is imported when the
format is first asked for, so that the JSON output never imports jinja2, nor a document rich.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .registry import FORMATS, Format

if TYPE_CHECKING:
    from ..model import Derivation

# Every format, in the order the CLI lists them, and the module that registers it.
FORMAT_MODULES = {"text": "terminal", "json": "json", "md": "markdown", "latex": "latex", "pdf": "pdf"}


def format_of(name: str) -> Format:
    """The format called `name` (ValueError when there is none)."""
    if name not in FORMATS and name in FORMAT_MODULES:
        import_module(f"{__name__}.{FORMAT_MODULES[name]}")
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r} (known: {', '.join(sorted(FORMAT_MODULES))})")
    return FORMATS[name]


def render(derivation: Derivation, fmt: str, **options) -> str:
    """The derivation in the text format `fmt`, with that renderer's `options`."""
    spec = format_of(fmt)
    if spec.render is None:
        raise ValueError(f"the format {fmt!r} writes a file; it has no text")
    return spec.render(derivation, **options)
