"""LaTeX math: names as `W_{1}` and `\\alpha`, fractions, `\\odot` between arrays, `\\left( \\right)`."""

from __future__ import annotations

from sympy import Expr

from ..model import Symbols
from ..ops import PREC_ATOM, PREC_MUL, PREC_UNARY
from .base import NotationPrinter
from .names import latex_name


class LatexPrinter(NotationPrinter):
    target = "latex"
    symbol_spelling = "latex"
    pi_symbol = r"\pi"
    inverse_transposed = r"^{-\top}"
    hadamard = r" \odot "
    dot = r" \cdot "

    def paren(self, s: str) -> str:
        return r"\left(" + s + r"\right)"

    def _name(self, name: str) -> str:
        return latex_name(name)

    def _rational(self, p: int, q: int) -> tuple[str, int]:
        s = rf"\frac{{{abs(p)}}}{{{q}}}"
        return ("-" + s if p < 0 else s), (PREC_UNARY if p < 0 else PREC_ATOM)

    def _float(self, s: str) -> str:
        if "e" in s:
            mant, exp = s.split("e")
            s = rf"{mant} \cdot 10^{{{int(exp)}}}"
        return s

    def _quotient(self, num_s: str, num_prec: int, den_s: str, den_prec: int) -> tuple[str, int]:
        return rf"\frac{{{num_s}}}{{{den_s}}}", PREC_MUL

    def _superscript(self, base_s: str, exp: Expr) -> str:
        return f"{base_s}^{{{self.print(exp)[0]}}}"


def to_latex(expr, symbols: Symbols | None = None) -> str:
    return LatexPrinter(symbols)(expr)
