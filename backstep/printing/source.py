"""backstep's own input language: what a derivation prints as so that it parses back (`x @ W`, `x**2`)."""

from __future__ import annotations

import sympy

from ..model import Symbols
from .base import PythonSyntaxPrinter


class SourcePrinter(PythonSyntaxPrinter):
    target = "lang"
    e_symbol = "exp(1)"
    pi_symbol = repr(float(sympy.pi))


def to_lang(expr, symbols: Symbols | None = None) -> str:
    return SourcePrinter(symbols)(expr)
