"""Python code with torch calls (`torch` and `math` in scope), from each op's torch template.

backstep's checks run it; `backstep codegen` extends it (backstep.codegen.printer.CodePrinter).
"""

from __future__ import annotations

from sympy import Expr

from ..model import Symbols
from ..symbolic import Dim
from .base import PythonSyntaxPrinter


def _is_constant(expr: Expr) -> bool:
    """A number, or an expression of numbers and dimension sizes only."""
    return all(isinstance(s, Dim) for s in expr.free_symbols)


class TorchPrinter(PythonSyntaxPrinter):
    target = "torch"
    e_symbol = "math.e"
    pi_symbol = "math.pi"

    def _template(self, op, operands):
        if op.printing.math_function and all(_is_constant(a) for a in operands):
            return f"{op.printing.math_function}({{0}})"  # torch.sqrt(2) fails: a number takes math.sqrt
        return super()._template(op, operands)


def to_torch(expr, symbols: Symbols | None = None) -> str:
    """Python code with torch calls (`torch` and `math` in scope); dimensions by their names."""
    return TorchPrinter(symbols)(expr)
