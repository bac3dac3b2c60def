"""What every renderer needs: printing with the derivation's symbols, notation, numbers.

``Notation`` prints one derivation's expressions in one notation for adjoints (``bar``: W̄,
``partial``: ∂L/∂W, ``delta``: δ_W) and one language. The notation is a renamed copy of the
derivation's symbol table: which symbol is the adjoint of which is read from the model
(``Derivation.adjoint_of``, and each backward step's ``partial``).
"""

from __future__ import annotations

import sympy

from ..model import Derivation, SymbolInfo, Symbols
from ..printing import Printer, latex_name
from ..shapes import format_shape
from .i18n import Messages

NOTATIONS = ("bar", "partial", "delta")

SUPERSCRIPT_DIGITS = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


def adjoints_of(d: Derivation) -> dict[str, tuple[str, int | None]]:
    """Each adjoint symbol -> (the symbol it is the adjoint of, k for a k-th partial contribution)."""
    partial = {s.target: s.partial for s in d.backward}
    return {symbol: (of, partial.get(symbol)) for symbol, of in d.adjoint_of.items()}


def notation_symbols(d: Derivation, notation: str, loss: str) -> Symbols:
    """The derivation's symbol table with adjoints renamed for `notation` (a copy; bar: the table itself)."""
    if notation not in NOTATIONS:
        raise ValueError(f"unknown notation {notation!r} (known: {', '.join(NOTATIONS)})")
    if notation == "bar":
        return d.symbols
    table = dict(d.symbols.table)
    loss_latex = latex_name(loss) if loss != "ℓ" else r"\ell"
    for name, (primal, k) in adjoints_of(d).items():
        info, of = d.symbols.table.get(name), d.symbols.table.get(primal)
        if info is None or of is None:
            continue
        mark_text = f"⁽{k}⁾".translate(SUPERSCRIPT_DIGITS) if k else ""
        mark_latex = f"^{{({k})}}" if k else ""
        if notation == "partial":
            text = f"∂{loss}/∂{of.text}{mark_text}"
            latex = rf"\frac{{\partial {loss_latex}}}{{\partial {of.latex}}}"
            latex = f"{{{latex}{mark_latex}}}" if k else latex
        else:
            text = f"δ{of.text}{mark_text}"
            latex = rf"{{\delta_{{{of.latex}}}{mark_latex}}}" if k else rf"\delta_{{{of.latex}}}"
        table[name] = SymbolInfo(text, latex, info.lang, info.shape)
    return Symbols(table)


class Notation:
    """Prints the expressions of one derivation, names its gradients, and speaks its language."""

    def __init__(self, derivation: Derivation, notation: str = "bar", lang: str = "en"):
        self.d = derivation
        self.style = notation
        self.msg = Messages(lang)
        self.symbols = notation_symbols(derivation, notation, self.loss_name())
        self.text = Printer("text", self.symbols)
        self.latex = Printer("latex", self.symbols)
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

    def loss_latex(self) -> str:
        loss = self.loss_name()
        if loss == "ℓ":
            return r"\ell"
        info = self.d.symbols.table.get(loss)
        return info.latex if info else latex_name(loss)

    def name_latex(self, name: str) -> str:
        """A variable or intermediate as LaTeX (`W1` -> `W_{1}`)."""
        info = self.d.symbols.table.get(name)
        return info.latex if info else latex_name(name)

    def partial_latex(self, name: str) -> str:
        return rf"\frac{{\partial {self.loss_latex()}}}{{\partial {self.name_latex(name)}}}"

    def seed_text(self) -> str:
        seed = self.text(self.sym(self.d.seed.name))
        if self.d.seed.is_one:
            defined = f"∂{self.d.output}/∂{self.d.output}"
            return f"{seed} = 1" if seed == defined else f"{seed} = {defined} = 1"
        defined = self.partial(self.d.output)
        lhs = seed if seed == defined else f"{seed} = {defined}"
        return f"{lhs}  ({self.shape_text(self.d.seed.shape)})"

    def seed_latex(self) -> str:
        """The seed as an equation: `\\bar{y} = \\frac{∂L}{∂y}` (`= 1` for a scalar output)."""
        seed = self.latex(self.sym(self.d.seed.name))
        defined = self.partial_latex(self.d.output)
        parts = [seed] if seed == defined else [seed, defined]
        if self.d.seed.is_one:
            parts.append("1")
        return " = ".join(parts)

    def adjoint_text(self, name: str) -> str:
        """The adjoint of a variable or intermediate as this notation writes it (W̄1, ∂L/∂W1, δW1)."""
        return self.text(self.sym(self.adjoint_symbol(name)))

    def adjoint_latex(self, name: str) -> str:
        return self.latex(self.sym(self.adjoint_symbol(name)))

    def adjoint_symbol(self, name: str) -> str:
        """The symbol of `name`'s adjoint: the step that defines it last (a sum after partials)."""
        if name == self.d.output:
            return self.d.seed.name
        step = self.d.adjoint_step(name)
        if step is None:
            raise KeyError(f"{name} has no adjoint in this derivation")
        return step.target

    def shape_text(self, shape: tuple) -> str:
        return self.msg("scalar") if len(shape) == 0 else format_shape(shape)

    def shape_latex(self, shape: tuple) -> str:
        """`n \\times d` for a matrix, `\\text{scalar}` (in the language) for a 0-d value."""
        if len(shape) == 0:
            return rf"\text{{{self.msg('scalar')}}}"
        return r" \times ".join(latex_name(str(dim)) for dim in shape)

    def array_text(self, expr, shape: tuple) -> str:
        """`expr` as text; a bare number standing for an array of `shape` (a broadcast seed or adjoint)
        as the array it is: 𝟏 (ones), 𝟎, or c 𝟏. The symbolic value is the number, unchanged."""
        if not shape or not getattr(expr, "is_Number", False):
            return self.text(expr)
        return "𝟎" if expr == 0 else "𝟏" if expr == 1 else f"{self.text(expr)} 𝟏"

    def array_latex(self, expr, shape: tuple) -> str:
        """`expr` as LaTeX; a bare number standing for an array as `\\mathbf{1}_{N \\times D}` (see array_text)."""
        if not shape or not getattr(expr, "is_Number", False):
            return self.latex(expr)
        size = self.shape_latex(shape)
        if expr == 0:
            return rf"\mathbf{{0}}_{{{size}}}"
        ones = rf"\mathbf{{1}}_{{{size}}}"
        return ones if expr == 1 else rf"{self.latex(expr)}\,{ones}"

    def step_shape(self, step) -> tuple:
        """The shape of a backward step's target."""
        info = self.d.symbols.table.get(step.target)
        return info.shape if info is not None else ()

    def variable_space_latex(self, v) -> str:
        """Where a variable lives: class labels as the set they are drawn from, `\\{0,\\dots,C-1\\}^{N}`
        (an index array `ix: (N, T) in range(V)` too); any other, `\\mathbb{R}^{…}`."""
        kind, _, classes = v.domain.partition(":")
        if kind != "class_index" or not classes or classes == "None":
            return self.space_latex(v.shape)
        last = str(int(classes) - 1) if classes.isdigit() else f"{self.name_latex(classes)}-1"
        power = f"^{{{self.shape_latex(v.shape)}}}" if v.shape else ""
        return rf"\{{0,\dots,{last}\}}{power}"

    def space_latex(self, shape: tuple) -> str:
        """`\\mathbb{R}^{n \\times d}`, or `\\mathbb{R}` for a scalar."""
        if len(shape) == 0:
            return r"\mathbb{R}"
        return rf"\mathbb{{R}}^{{{self.shape_latex(shape)}}}"


def format_error(x: float) -> str:
    """An error as the verification report shows it: `0`, `3e-16`."""
    return "0" if not x else f"{x:.1g}"


def latex_scientific(s: str) -> str:
    """A formatted number in LaTeX: `3e-16` as `3 \\cdot 10^{-16}`, anything else as it is."""
    if "e" in s:
        mantissa, exponent = s.split("e")
        return rf"{mantissa} \cdot 10^{{{int(exponent)}}}"
    return s


def latex_number(x: float) -> str:
    """A number in LaTeX: `4`, `0.25`, `3 \\cdot 10^{-16}`."""
    return latex_scientific(format_number(x))


def latex_error(x: float) -> str:
    """An error size in LaTeX, as format_error writes it."""
    return latex_scientific(format_error(x))


def latex_value(value, max_entries: int = 12) -> str:
    """A value of --at in LaTeX math: a number, a small matrix or vector, or a big array's norm."""
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        return latex_number(value)
    flat = _flatten(value)
    rank = len(_shape_of(value).split("×"))
    if len(flat) > max_entries or rank > 2:
        norm = sum(v * v for v in flat) ** 0.5
        dims = r" \times ".join(_shape_of(value).split("×"))
        return rf"\left[{dims}\right],\ \lVert\cdot\rVert = {latex_number(norm)}"
    rows = value if rank == 2 else [value]
    body = r" \\ ".join(" & ".join(latex_number(x) for x in row) for row in rows)
    return rf"\begin{{bmatrix}} {body} \end{{bmatrix}}"


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
