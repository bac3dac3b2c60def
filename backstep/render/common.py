"""What every renderer needs: printing with the derivation's symbols, notation, numbers."""

from __future__ import annotations

import sympy

from ..model import Derivation
from ..printing import Printer, bar_text
from ..shapes import format_shape


class Notation:
    """Prints the expressions of one derivation, and names its gradients."""

    def __init__(self, derivation: Derivation):
        self.d = derivation
        self.text = Printer("text", derivation.symbols)
        self.latex = Printer("latex", derivation.symbols)
        self.lang = Printer("lang", derivation.symbols)

    def sym(self, name: str) -> sympy.Symbol:
        return sympy.Symbol(name, real=True)

    def loss_name(self) -> str:
        """∂z/∂x for a scalar output z; ∂L/∂x for a non-scalar one (L: the loss downstream)."""
        if self.d.seed.is_one:
            return self.d.output
        return "L" if self.d.output != "L" else "ℓ"

    def partial(self, name: str) -> str:
        return f"∂{self.loss_name()}/∂{name}"

    def partial_latex(self, name: str) -> str:
        from ..printing import latex_name

        return rf"\frac{{\partial {latex_name(self.loss_name())}}}{{\partial {latex_name(name)}}}"

    def seed_text(self) -> str:
        if self.d.seed.is_one:
            return f"{bar_text(self.d.output)} = ∂{self.d.output}/∂{self.d.output} = 1"
        return f"{bar_text(self.d.output)} = {self.partial(self.d.output)}  ({format_shape(self.d.seed.shape)})"


def format_number(x: float) -> str:
    if x == 0:
        return "0"
    if x == int(x) and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.6g}"


def format_value(value, max_entries: int = 12) -> str:
    """A number or a small array as a person writes it; a big array by its shape and norm."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return format_number(value)
    flat = _flatten(value)
    if len(flat) > max_entries:
        norm = sum(v * v for v in flat) ** 0.5
        return f"[{_shape_of(value)} array, ‖·‖ = {format_number(norm)}]"
    return _nested(value)


def _flatten(value) -> list[float]:
    if isinstance(value, list):
        return [x for v in value for x in _flatten(v)]
    return [value]


def _shape_of(value) -> str:
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return "×".join(map(str, dims))


def _nested(value) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_nested(v) for v in value) + "]"
    return format_number(value)
