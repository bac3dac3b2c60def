"""Renderers: each turns a Derivation into one output format, reading only the data model.

They are registered by format name; the CLI and the Python API look them up here.
"""

from __future__ import annotations

from collections.abc import Callable

from ..model import Derivation

RENDERERS: dict[str, Callable[..., str]] = {}


def renderer(name: str):
    def register(fn: Callable[..., str]) -> Callable[..., str]:
        RENDERERS[name] = fn
        return fn

    return register


def render(derivation: Derivation, fmt: str, **options) -> str:
    if fmt not in RENDERERS:
        _load()
    if fmt not in RENDERERS:
        raise ValueError(f"unknown format {fmt!r} (known: {', '.join(sorted(RENDERERS))})")
    return RENDERERS[fmt](derivation, **options)


def _load() -> None:
    from . import json, latex, markdown, terminal  # noqa: F401  (each module registers itself)
