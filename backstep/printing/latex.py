"""LaTeX math: names as `W_{1}` and `\\alpha`, fractions, `\\odot` between arrays, `\\left( \\right)`."""

from __future__ import annotations

from sympy import Expr

from ..model import Symbols
from ..ops import PREC_ATOM, PREC_MUL, PREC_UNARY
from .base import NotationPrinter
from .names import latex_name

FRAC = "\\frac{"


class LatexPrinter(NotationPrinter):
    target = "latex"
    symbol_spelling = "latex"
    pi_symbol = r"\pi"
    inverse_transposed = r"^{-\top}"
    hadamard = r" \odot "
    dot = r" \cdot "

    def paren(self, s: str) -> str:
        return r"\left(" + s + r"\right)"

    def print(self, expr: Expr) -> tuple[str, int]:
        s, prec = super().print(expr)
        if expr.is_Symbol and s.startswith(FRAC):
            # ∂L/∂z written as a fraction binds like a quotient: (∂L/∂z)ᵀ, never ∂L/∂z^⊤
            prec = min(prec, PREC_UNARY)
        return s, prec

    def _name(self, name: str) -> str:
        return latex_name(name)

    def _rational(self, p: int, q: int) -> tuple[str, int]:
        s = rf"\frac{{{abs(p)}}}{{{q}}}"
        return ("-" + s if p < 0 else s), (PREC_UNARY if p < 0 else PREC_ATOM)

    def _float(self, s: str) -> str:
        if "e" in s:
            mant, exp = s.split("e")
            # 1e-5 is 10⁻⁵ (as a textbook writes eps), 2.5e-5 is 2.5 · 10⁻⁵
            power = rf"10^{{{int(exp)}}}"
            s = power if float(mant) == 1 else ("-" + power if float(mant) == -1 else rf"{mant} \cdot {power}")
        return s

    def _quotient(self, num_s: str, num_prec: int, den_s: str, den_prec: int) -> tuple[str, int]:
        # a fraction inside a fraction is written with a slash: \frac{∂L/∂y ⊙ γ}{N}
        return rf"\frac{{{slashed(num_s)}}}{{{slashed(den_s)}}}", PREC_MUL

    def _superscript(self, base_s: str, exp: Expr) -> str:
        return f"{base_s}^{{{self.print(exp)[0]}}}"


def slashed(latex: str) -> str:
    """`latex` with every `\\frac{a}{b}` in it written `a/b` (parenthesised where a or b is compound)."""
    out, i = [], 0
    while (start := latex.find(FRAC, i)) >= 0:
        num, after_num = _braced(latex, start + len(FRAC) - 1)
        den, end = _braced(latex, after_num)
        if num is None or den is None:
            break
        out.append(latex[i:start] + f"{_slash_operand(slashed(num))}/{_slash_operand(slashed(den), denominator=True)}")
        i = end
    out.append(latex[i:])
    return "".join(out)


def _braced(latex: str, at: int) -> tuple[str | None, int]:
    """The contents of the brace group opening at `at`, and the index after it."""
    if at >= len(latex) or latex[at] != "{":
        return None, at
    depth = 0
    for j in range(at, len(latex)):
        if latex[j] == "{" and latex[j - 1 : j] != "\\":
            depth += 1
        elif latex[j] == "}" and latex[j - 1 : j] != "\\":
            depth -= 1
            if depth == 0:
                return latex[at + 1 : j], j + 1
    return None, at


def _slash_operand(latex: str, denominator: bool = False) -> str:
    """`a` as one side of `a/b`, parenthesised unless that is plain: a numerator that is a product
    (`x \\sqrt{2}/2` reads as (x √2)/2), a denominator that is one factor (`\\partial y`, `N`)."""
    compound = any(op in latex for op in (" + ", " - ", r"\odot", r"\cdot", "/"))
    if denominator:
        compound = compound or " " in latex.replace("\\partial ", "")
    return rf"\left({latex}\right)" if compound else latex


def to_latex(expr, symbols: Symbols | None = None) -> str:
    return LatexPrinter(symbols)(expr)
