"""The printer every target shares: SymPy expressions as strings, by the expression's class.

SymPy's own algebra (``Add``, ``Mul``, ``Pow``, numbers, symbols) prints by structure, and every
function by the ``Printing`` rule declared for its op in the op table. Each ``_print``-like method
returns ``(string, precedence)``; an operand below the precedence its place needs gets parentheses.

What differs between targets is a handful of hooks (a product's sign, a power, a quotient, names),
filled in by two syntax families and one small subclass per target:

- ``NotationPrinter``: math as a person writes it (text, LaTeX): juxtaposition, ⊙ between arrays;
- ``PythonSyntaxPrinter``: Python expressions (backstep's language, torch code): ``*`` and ``@``
  share a precedence, ``**`` for powers.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from ..errors import CannotPrint
from ..model import Symbols
from ..ops import (
    BROADCAST_TO,
    EXP,
    OP_OF_CLASS,
    PREC_ADD,
    PREC_ATOM,
    PREC_MATMUL,
    PREC_MUL,
    PREC_POSTFIX,
    PREC_POW,
    PREC_UNARY,
    SQRT,
)
from ..shapes import fmt_shape_plain
from ..symbolic import Dim, InverseOp, MatrixProduct, OuterProduct, TensorOp, TransposeOp

PRINTERS: dict[str, type[Printer]] = {}  # target name -> its printer class (filled in as they are defined)


def printer_for(target: str, symbols: Symbols | None = None) -> Printer:
    """The printer of one target ("text", "latex", "lang" or "torch") over these symbols."""
    cls = PRINTERS.get(target)
    if cls is None:
        raise ValueError(f"unknown print target {target!r}")
    return cls(symbols)


class _ByTarget(type):
    """`Printer("latex", symbols)`, the call from before the printers were split by target, still
    builds that target's printer; a subclass is built as any class is."""

    def __call__(cls, *args, **kwargs):
        if cls is Printer:
            return printer_for(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class Printer(metaclass=_ByTarget):
    target = ""  # the Printing template an op prints with; a subclass that names one is registered
    symbol_spelling = "text"  # the SymbolInfo field a known symbol prints as
    e_symbol = "e"
    pi_symbol = "π"
    inverse_transposed = ""  # the suffix of X⁻ᵀ, where the target writes the inverse transposed so

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "target" in cls.__dict__:
            PRINTERS[cls.target] = cls

    def __init__(self, symbols: Symbols | None = None):
        self.symbols = symbols or Symbols()
        self._rank_memo: dict = {}
        self._shape_memo: dict = {}

    def __call__(self, expr) -> str:
        return self.print(sympy.sympify(expr, strict=True))[0]  # numbers and expressions, never text

    def print(self, expr: Expr) -> tuple[str, int]:
        if isinstance(expr, Dim):
            return self._dim(expr), PREC_ATOM
        if expr.is_Symbol:
            return self._symbol(expr), PREC_ATOM
        if expr.is_Number:
            return self._number(expr)
        if expr is sympy.E:
            return self.e_symbol, PREC_ATOM
        if expr is sympy.pi:
            return self.pi_symbol, PREC_ATOM
        inverse_transposed = isinstance(expr, TransposeOp) and isinstance(expr.operands[0], InverseOp)
        if inverse_transposed and self.inverse_transposed:
            # X⁻ᵀ, as the Matrix Cookbook writes the inverse transposed
            return self.wrap(expr.operands[0].operands[0], PREC_POSTFIX) + self.inverse_transposed, PREC_POSTFIX
        if expr.is_Add:
            return self._add(expr)
        if expr.is_Mul:
            return self._mul(expr)
        if expr.is_Pow:
            return self._pow(expr)
        op = OP_OF_CLASS.get(type(expr))
        if op is None:
            raise CannotPrint(f"backstep cannot print {type(expr).__name__} ({expr})")
        if isinstance(expr, TensorOp):
            return self._op(op, expr.operands, expr.params, expr.in_shapes)
        return self._op(op, expr.args, {})

    def wrap(self, expr: Expr, min_prec: int) -> str:
        s, prec = self.print(expr)
        return self.paren(s) if prec < min_prec else s

    def paren(self, s: str) -> str:
        return "(" + s + ")"

    # Names and numbers ------------------------------------------------------------------------

    def _name(self, name: str) -> str:
        """A dimension, or a symbol the table does not know."""
        return name

    def _symbol(self, expr) -> str:
        info = self.symbols.table.get(expr.name)
        if info is None:
            return self._name(expr.name)
        return getattr(info, self.symbol_spelling)

    def _dim(self, expr) -> str:
        return self._name(expr.name)

    def _number(self, expr) -> tuple[str, int]:
        if expr.is_Integer:
            return str(expr), (PREC_UNARY if expr < 0 else PREC_ATOM)
        if expr.is_Rational:
            return self._rational(expr.p, expr.q)
        return self._float(repr(float(expr))), (PREC_UNARY if float(expr) < 0 else PREC_ATOM)

    def _rational(self, p: int, q: int) -> tuple[str, int]:
        return f"{p}/{q}", PREC_MUL

    def _float(self, s: str) -> str:
        """A float's repr, as the target writes it."""
        return s

    # Sums, products, powers -------------------------------------------------------------------

    def _add(self, expr) -> tuple[str, int]:
        # Numbers last (`x² + 3`), and lead with a positive term (`v2 - Y`, not `-Y + v2`).
        terms = [t for t in expr.args if not t.is_Number] + [t for t in expr.args if t.is_Number]
        first = next((i for i, t in enumerate(terms) if not t.could_extract_minus_sign()), 0)
        terms.insert(0, terms.pop(first))
        out = ""
        for i, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            if i == 0:
                out = self._negated(-term) if negative else self.wrap(term, PREC_ADD)
            else:
                out += (" - " if negative else " + ") + self.wrap(-term if negative else term, PREC_ADD + 1)
        return out, PREC_ADD

    def _negated(self, expr: Expr) -> str:
        """`-expr`, as the first term of a sum whose terms are all negative."""
        return "-" + self.wrap(expr, PREC_MUL)

    def _mul(self, expr) -> tuple[str, int]:
        coeff, factors = expr.as_coeff_mul()
        # An unevaluated product (an applied rule) may nest: show it flat, numbers first.
        flat = []
        for f in factors:
            flat.extend(sympy.Mul.make_args(f))
        numbers = [f for f in flat if f.is_Number]
        factors = tuple(numbers + [f for f in flat if not f.is_Number])
        if coeff.is_negative:
            s, prec = self._negated_product(-coeff, factors)
            return "-" + (s if prec > PREC_ADD else self.paren(s)), PREC_UNARY
        return self._mul_positive(coeff, factors)

    def _negated_product(self, coeff, factors) -> tuple[str, int]:
        """The product after a minus sign (`coeff` positive)."""
        return self._mul_positive(coeff, factors)

    def _mul_positive(self, coeff, factors) -> tuple[str, int]:
        num, den = [], []
        if coeff.is_Rational and coeff.q != 1:
            den.append(sympy.Integer(coeff.q))
            coeff = sympy.Integer(coeff.p)
        for f in factors:
            if f.is_Pow and f.exp.is_Number and f.exp.is_negative:
                den.append(f.base ** (-f.exp))
            else:
                num.append(f)
        if coeff != 1 or not num:
            num.insert(0, coeff)
        num_s, num_prec = self._product(num)
        if not den:
            return num_s, num_prec
        den_s, den_prec = self._product(den)
        return self._quotient(num_s, num_prec, den_s, den_prec)

    def _quotient(self, num_s: str, num_prec: int, den_s: str, den_prec: int) -> tuple[str, int]:
        num_s = num_s if num_prec >= PREC_MUL else f"({num_s})"
        den_s = den_s if den_prec > PREC_MUL else f"({den_s})"
        return f"{num_s} / {den_s}", PREC_MUL

    def _product(self, factors: list[Expr]) -> tuple[str, int]:
        if len(factors) == 1:
            return self.print(factors[0])
        parts = []
        symbolic = [f for f in factors if not f.is_Number]
        for i, f in enumerate(factors):
            s = self._factor(f, len(symbolic))
            if i:
                parts.append(self._times(factors[i - 1], f, s))
            parts.append(s)
        return "".join(parts), PREC_MUL

    def _factor(self, factor: Expr, symbolic: int) -> str:
        """One factor of a product of `symbolic` non-number factors, parenthesised as it needs."""
        raise NotImplementedError

    def _times(self, left: Expr, right: Expr, right_s: str) -> str:
        """What stands between two factors (`right_s` is the right one printed)."""
        raise NotImplementedError

    def _pow(self, expr) -> tuple[str, int]:
        base, exp = expr.base, expr.exp
        if exp == sympy.S.Half:
            return self._op(SQRT, [base], {})
        if exp.is_Number and exp.is_negative:
            return self._mul_positive(sympy.S.One, [expr])
        if base is sympy.E:
            return self._op(EXP, [exp], {})
        return self._power(base, exp)

    def _power(self, base: Expr, exp: Expr) -> tuple[str, int]:
        """`base` to the `exp` (neither a square root, a reciprocal, nor e to a power)."""
        raise NotImplementedError

    # Ops, by their Printing templates ---------------------------------------------------------

    def _template(self, op, operands):
        """The op's template for this target ("" where it has none)."""
        return getattr(op.printing, self.target)

    def _operand_prec(self, op, i: int, operand: Expr) -> int:
        """The precedence operand `i` needs not to get parentheses."""
        return op.printing.operand_prec

    def _op(self, op, operands, params: dict, in_shapes: tuple = ()) -> tuple[str, int]:
        rule = op.printing
        template = self._template(op, operands)
        if not template:
            raise CannotPrint(f"op {op.name} has no {self.target} printing")
        # Operands of a prefix function need no parentheses; infix/postfix ones might.
        printed = []
        for i, a in enumerate(operands):
            need = self._operand_prec(op, i, a)
            if f"{{{i}}}." in template:
                need = max(need, PREC_POSTFIX)  # `(x @ W).dtype`, never `x @ W.dtype`
            if i < len(in_shapes) and self._is_broadcast(a, in_shapes[i]):
                # SymPy's cancellations can leave a smaller operand that the op broadcasts
                # (inv(A)ᵀ 1 1ᵀ → a column): say so, or the shapes would not agree on paper
                # and the code would not parse back
                printed.append(self._op(BROADCAST_TO, [a], {"shape": tuple(in_shapes[i])})[0])
                continue
            printed.append(self.wrap(a, need))
        extra = {k: ("" if v is None else v) for k, v in params.items()}
        if isinstance(template, str):  # (n, d), not ('n', 'd'); a ByParams template takes the values
            extra = {k: fmt_shape_plain(v) if isinstance(v, tuple) else v for k, v in extra.items()}
        extra.update(axis_kw="", axis_sub="", params_kw="", reduction_kw="")
        if params.get("axis") is not None:
            extra["axis_kw"] = f", axis={params['axis']}"
            axis = params["axis"]  # Σ₀,₂,₃: a tuple of axes as a subscript list, not "(0, 2, 3)"
            extra["axis_sub"] = f"_{{{','.join(map(str, axis)) if isinstance(axis, tuple) else axis}}}"
        if params.get("keepdims"):
            extra["axis_kw"] += ", keepdims=True"
        extra["dim_kw"] = extra["axis_kw"].replace("axis=", "dim=").replace("keepdims=", "keepdim=")
        if in_shapes:
            every = tuple(range(len(in_shapes[0])))
            # torch names the reduced axes: one, or all of them (keepdim needs them spelled out)
            extra["reduce_dims"] = params["axis"] if params.get("axis") is not None else every
            if params.get("axis") is None and params.get("keepdims"):
                extra["dim_kw"] = f", dim={every}, keepdim=True"
            extra["t_long"] = ".long()" if len(in_shapes) > 1 and len(in_shapes[1]) < len(in_shapes[0]) else ""
        reduction = op.param("reduction")
        if reduction is not None and params.get("reduction", reduction.default) != reduction.default:
            extra["reduction_kw"] = f', reduction="{params["reduction"]}"'
        shown = {k: v for k, v in params.items() if k not in ("axis", "keepdims", "reduction", "classes", "n")}
        extra["params_kw"] = "".join(f", {k}={v!r}" for k, v in shown.items() if v is not None and v != op.params[k])
        return template.format(*printed, **extra), rule.prec

    def _is_broadcast(self, operand: Expr, shape: tuple) -> bool:
        actual = self.symbols.shape(operand, self._shape_memo)
        return actual is not None and tuple(actual) != tuple(shape)


class NotationPrinter(Printer):
    """Math as a person writes it (text, LaTeX): a scalar factor by juxtaposition, ⊙ between
    arrays, powers as superscripts."""

    hadamard = " ⊙ "  # between two arrays: the product is elementwise
    dot = " · "  # where juxtaposition would misread: `x · 2`, `x · x`, `2 · 1[x > 0]`

    def _rank(self, expr: Expr) -> int:
        return self.symbols.rank(expr, self._rank_memo)

    def _factor(self, factor: Expr, symbolic: int) -> str:
        if isinstance(factor, (MatrixProduct, OuterProduct)) and symbolic > 1:
            # A matrix product beside other factors gets parentheses: `(x W) ⊙ m`, not `x W ⊙ m`.
            return self.paren(self.print(factor)[0])
        return self.wrap(factor, PREC_MUL)

    def _times(self, left: Expr, right: Expr, right_s: str) -> str:
        if self._rank(left) > 0 and self._rank(right) > 0:
            return self.hadamard
        if right.is_Number or left == right or right_s[:1].isdigit():  # 2 · 1[x > 0], not 2 1[x > 0]
            return self.dot
        return " "

    def _power(self, base: Expr, exp: Expr) -> tuple[str, int]:
        base_s = self.wrap(base, PREC_POW + 1)
        if isinstance(base, TensorOp):
            base_s = self.paren(base_s)  # never a double superscript: (xᵀ)² not xᵀ²
        return self._superscript(base_s, exp), PREC_POW

    def _superscript(self, base_s: str, exp: Expr) -> str:
        raise NotImplementedError


class PythonSyntaxPrinter(Printer):
    """Python expressions (backstep's own language, torch code): `*` and `@` share a precedence
    and associate to the left, and `**` is a power."""

    symbol_spelling = "lang"

    def _factor(self, factor: Expr, symbolic: int) -> str:
        if isinstance(factor, (MatrixProduct, OuterProduct)):
            return self.paren(self.print(factor)[0])  # `(x @ W) * m`
        return self.wrap(factor, PREC_MUL + 1)

    def _times(self, left: Expr, right: Expr, right_s: str) -> str:
        return " * "

    def _power(self, base: Expr, exp: Expr) -> tuple[str, int]:
        return f"{self.wrap(base, PREC_POW + 1)}**{self.wrap(exp, PREC_ATOM)}", PREC_POW

    def _operand_prec(self, op, i: int, operand: Expr) -> int:
        need = super()._operand_prec(op, i, operand)
        if op.printing.python_operator:
            need += 1 if i else 0  # a @ (b @ c)
            if self._is_mul(operand):
                need = PREC_MATMUL + 1  # (a * b) @ c
        return need

    @staticmethod
    def _is_mul(expr: Expr) -> bool:
        return expr.is_Mul or (expr.is_Pow and expr.exp.is_negative)
