"""The symbols of one derivation: how each prints in every target, and its shape (for ⊙ and ᵀ)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sympy import Expr

from ..ops import OP_OF_CLASS
from ..shapes import ShapeEnv, ShapeMismatch
from ..symbolic import Dim, TensorOp
from .names import latex_name


@dataclass
class SymbolInfo:
    """How one symbol prints, and its shape."""

    text: str
    latex: str
    lang: str
    shape: tuple


@dataclass
class Symbols:
    """The symbols of one derivation: names for each target, and shapes (for ⊙ and ᵀ)."""

    table: dict[str, SymbolInfo] = field(default_factory=dict)

    def add(self, name: str, shape: tuple, text: str | None = None, latex: str | None = None) -> None:
        self.table[name] = SymbolInfo(text or name, latex or latex_name(name), name, tuple(shape))

    def rank(self, expr: Expr, memo: dict | None = None) -> int:
        memo = {} if memo is None else memo
        if expr in memo:
            return memo[expr]
        if isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            r = 0
        elif expr.is_Symbol:
            info = self.table.get(expr.name)
            r = len(info.shape) if info else 0
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            r = len(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
        else:
            r = max((self.rank(a, memo) for a in expr.args), default=0)
        memo[expr] = r
        return r

    def shape(self, expr: Expr, memo: dict | None = None) -> tuple | None:
        """The shape of an expression over these symbols (None where it cannot be told)."""
        memo = {} if memo is None else memo
        if expr in memo:
            return memo[expr]
        if isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            out = ()
        elif expr.is_Symbol:
            info = self.table.get(expr.name)
            out = info.shape if info else None
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            try:
                out = tuple(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
            except ShapeMismatch:
                out = None
        else:  # elementwise: NumPy broadcasting of the operands' shapes
            shapes = [self.shape(a, memo) for a in expr.args]
            out = None if any(s is None for s in shapes) else _broadcast_plain(shapes)
        memo[expr] = out
        return out


def _broadcast_plain(shapes: list[tuple]) -> tuple:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(1, rank + 1):
        sizes = {s[-i] for s in shapes if i <= len(s)} - {1}
        out.append(sizes.pop() if len(sizes) == 1 else (1 if not sizes else min(sizes, key=str)))
    return tuple(reversed(out))
