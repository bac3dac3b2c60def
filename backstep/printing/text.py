"""Plain-text math, as the terminal shows it: ⊙ between arrays, powers as superscripts (`x²`), `X⁻ᵀ`."""

from __future__ import annotations

from sympy import Expr

from ..model import Symbols
from ..ops import PREC_ATOM
from .base import NotationPrinter
from .names import text_names

SUPERSCRIPTS = str.maketrans("0123456789-()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁽⁾")


class TextPrinter(NotationPrinter):
    target = "text"
    inverse_transposed = "⁻ᵀ"

    def _symbol(self, expr) -> str:
        return text_names(super()._symbol(expr))  # `gamma` as γ, `y_hat` as ŷ

    def _superscript(self, base_s: str, exp: Expr) -> str:
        if exp.is_Integer:
            return base_s + str(exp).translate(SUPERSCRIPTS)
        return f"{base_s}^{self.wrap(exp, PREC_ATOM)}"


def to_text(expr, symbols: Symbols | None = None) -> str:
    return TextPrinter(symbols)(expr)
