"""Printing SymPy expressions as text, LaTeX, or backstep's own input language.

One printer, three targets. It dispatches on the expression's class: SymPy's own algebra
(``Add``, ``Mul``, ``Pow``, numbers, symbols) by structure, and every function by the
``Printing`` rule declared for its op in the op table. Renderers never build math by hand; they
call ``to_text``, ``to_latex`` or ``to_lang``.

Products of two arrays are elementwise (Hadamard) and print as ``⊙``; a scalar factor prints
by juxtaposition. To know which is which the printer asks ``Symbols`` for the shape of each
symbol.
"""

from __future__ import annotations

import re

import sympy
from sympy import Expr

from .model import SymbolInfo, Symbols  # noqa: F401  (they live in the model; re-exported)
from .ops import OP_OF_CLASS, OPS, PREC_ADD, PREC_ATOM, PREC_MATMUL, PREC_MUL, PREC_POSTFIX, PREC_POW, PREC_UNARY
from .shapes import fmt_shape_plain
from .symbolic import Dim, InverseOp, MatrixProduct, OuterProduct, TensorOp, TransposeOp

MATH_FUNCTIONS = {"sqrt", "exp", "log", "sin", "cos", "tan", "tanh", "erf"}


def _is_constant(expr: Expr) -> bool:
    """A number, or an expression of numbers and dimension sizes only."""
    return all(isinstance(s, Dim) for s in expr.free_symbols)


SUPERSCRIPTS = str.maketrans("0123456789-()", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁽⁾")
GREEK = {
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "pi",
    "rho",
    "sigma",
    "tau",
    "phi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Pi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
}


def latex_name(name: str) -> str:
    """`W1` -> `W_{1}`, `x_hat` -> `x_{hat}`, `alpha` -> `\\alpha`, `fc1.weight` -> `\\mathit{fc1.weight}`."""
    m = re.fullmatch(r"([A-Za-z]+?)_?(\d+)", name)
    if m and (len(m.group(1)) == 1 or m.group(1) in GREEK):
        return f"{latex_name(m.group(1))}_{{{m.group(2)}}}"
    if name in GREEK:
        return "\\" + name
    if len(name) == 1:
        return name
    m = re.fullmatch(r"([A-Za-z])_([A-Za-z0-9]+)", name)
    if m:
        return f"{m.group(1)}_{{\\mathrm{{{m.group(2)}}}}}"
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def bar_text(name: str) -> str:
    """`W1` -> `W̄1`: the macron over the first letter, as a hand-written adjoint."""
    return name[0] + "\u0304" + name[1:]


def bar_latex(name: str) -> str:
    latex = latex_name(name)
    m = re.fullmatch(r"(\\?[A-Za-z]+)(_\{.*\})?", latex)
    if m and (len(m.group(1)) == 1 or m.group(1).startswith("\\")):
        return rf"\bar{{{m.group(1)}}}{m.group(2) or ''}"
    return rf"\overline{{{latex}}}"


class Printer:
    def __init__(self, target: str, symbols: Symbols | None = None):
        if target not in ("text", "latex", "lang", "torch"):
            raise ValueError(f"unknown print target {target!r}")
        self.target = target
        self.code = target in ("lang", "torch")  # Python syntax: * and @ share a precedence
        self.symbols = symbols or Symbols()
        self._rank_memo: dict = {}
        self._shape_memo: dict = {}

    def __call__(self, expr) -> str:
        return self.print(sympy.sympify(expr, strict=True))[0]  # numbers and expressions, never text

    # Each _print_* returns (string, precedence).
    def print(self, expr: Expr) -> tuple[str, int]:
        if isinstance(expr, Dim):
            return self._dim(expr), PREC_ATOM
        if expr.is_Symbol:
            return self._symbol(expr), PREC_ATOM
        if expr.is_Number:
            return self._number(expr)
        if expr is sympy.E:
            return {"text": "e", "latex": "e", "lang": "exp(1)", "torch": "math.e"}[self.target], PREC_ATOM
        if expr is sympy.pi:
            return {"text": "π", "latex": r"\pi", "lang": repr(float(sympy.pi)), "torch": "math.pi"}[
                self.target
            ], PREC_ATOM
        inverse_transposed = isinstance(expr, TransposeOp) and isinstance(expr.operands[0], InverseOp)
        if inverse_transposed and self.target in ("text", "latex"):
            # X⁻ᵀ, as the Matrix Cookbook writes the inverse transposed
            base = self.wrap(expr.operands[0].operands[0], PREC_POSTFIX)
            return (base + "⁻ᵀ" if self.target == "text" else base + r"^{-\top}"), PREC_POSTFIX
        if expr.is_Add:
            return self._add(expr)
        if expr.is_Mul:
            return self._mul(expr)
        if expr.is_Pow:
            return self._pow(expr)
        op = OP_OF_CLASS.get(type(expr))
        if op is None:
            raise TypeError(f"backstep cannot print {type(expr).__name__} ({expr})")
        if isinstance(expr, TensorOp):
            return self._op(op, expr.operands, expr.params, expr.in_shapes)
        return self._op(op, expr.args, {})

    def wrap(self, expr: Expr, min_prec: int) -> str:
        s, prec = self.print(expr)
        return self.paren(s) if prec < min_prec else s

    def paren(self, s: str) -> str:
        return r"\left(" + s + r"\right)" if self.target == "latex" else "(" + s + ")"

    def _rank(self, expr: Expr) -> int:
        return self.symbols.rank(expr, self._rank_memo)

    def _symbol(self, expr) -> str:
        info = self.symbols.table.get(expr.name)
        if info is None:
            return latex_name(expr.name) if self.target == "latex" else expr.name
        return info.lang if self.target == "torch" else getattr(info, self.target)

    def _dim(self, expr) -> str:
        return latex_name(expr.name) if self.target == "latex" else expr.name

    def _number(self, expr) -> tuple[str, int]:
        if expr.is_Integer:
            return str(expr), (PREC_UNARY if expr < 0 else PREC_ATOM)
        if expr.is_Rational:
            p, q = expr.p, expr.q
            if self.target == "latex":
                s = rf"\frac{{{abs(p)}}}{{{q}}}"
                return ("-" + s if p < 0 else s), (PREC_UNARY if p < 0 else PREC_ATOM)
            return f"{p}/{q}", PREC_MUL
        s = repr(float(expr))
        if self.target == "latex" and "e" in s:
            mant, exp = s.split("e")
            s = rf"{mant} \cdot 10^{{{int(exp)}}}"
        return s, (PREC_UNARY if float(expr) < 0 else PREC_ATOM)

    def _add(self, expr) -> tuple[str, int]:
        # Numbers last (`x² + 3`), and lead with a positive term (`v2 - Y`, not `-Y + v2`).
        terms = [t for t in expr.args if not t.is_Number] + [t for t in expr.args if t.is_Number]
        first = next((i for i, t in enumerate(terms) if not t.could_extract_minus_sign()), 0)
        terms.insert(0, terms.pop(first))
        out = ""
        for i, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            body = self.wrap(-term if negative else term, PREC_ADD + 1 if i else PREC_ADD)
            if i == 0:
                out = ("-" + self.wrap(-term, PREC_MUL)) if negative else body
            else:
                out += (" - " if negative else " + ") + body
        return out, PREC_ADD

    def _mul(self, expr) -> tuple[str, int]:
        coeff, factors = expr.as_coeff_mul()
        # An unevaluated product (an applied rule) may nest: show it flat, numbers first.
        flat = []
        for f in factors:
            flat.extend(sympy.Mul.make_args(f))
        numbers = [f for f in flat if f.is_Number]
        factors = tuple(numbers + [f for f in flat if not f.is_Number])
        if coeff.is_negative:
            s, prec = self._mul_positive(-coeff, factors)
            return "-" + (s if prec > PREC_ADD else self.paren(s)), PREC_UNARY
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
        if self.target == "latex":
            return rf"\frac{{{num_s}}}{{{den_s}}}", PREC_MUL
        num_s = num_s if num_prec >= PREC_MUL else f"({num_s})"
        den_s = den_s if den_prec > PREC_MUL else f"({den_s})"
        return f"{num_s} / {den_s}", PREC_MUL

    def _product(self, factors: list[Expr]) -> tuple[str, int]:
        if len(factors) == 1:
            return self.print(factors[0])
        parts = []
        symbolic = [f for f in factors if not f.is_Number]
        for i, f in enumerate(factors):
            if isinstance(f, (MatrixProduct, OuterProduct)) and (len(symbolic) > 1 or self.code):
                # A matrix product beside other factors gets parentheses: `(x W) ⊙ m`, not `x W ⊙ m`.
                s = self.paren(self.print(f)[0])
            else:
                s = self.wrap(f, PREC_MUL + 1 if self.code else PREC_MUL)
            if i:
                times = self._times(factors[i - 1], f)
                if times == " " and s[:1].isdigit():
                    times = r" \cdot " if self.target == "latex" else " · "  # 2 · 1[x > 0], not 2 1[x > 0]
                parts.append(times)
            parts.append(s)
        return "".join(parts), PREC_MUL

    def _times(self, left: Expr, right: Expr) -> str:
        if self.code:
            return " * "
        hadamard = self._rank(left) > 0 and self._rank(right) > 0
        if self.target == "latex":
            return r" \odot " if hadamard else (r" \cdot " if right.is_Number or left == right else " ")
        return " ⊙ " if hadamard else (" · " if right.is_Number or left == right else " ")

    def _pow(self, expr) -> tuple[str, int]:
        base, exp = expr.base, expr.exp
        if exp == sympy.S.Half:
            return self._op(OPS["sqrt"], [base], {})
        if exp.is_Number and exp.is_negative:
            return self._mul_positive(sympy.S.One, [expr])
        if base is sympy.E:
            return self._op(OPS["exp"], [exp], {})
        base_s = self.wrap(base, PREC_POW + 1)
        if isinstance(base, TensorOp) and not self.code:
            base_s = self.paren(base_s)  # never a double superscript: (xᵀ)² not xᵀ²
        if self.code:
            return f"{base_s}**{self.wrap(exp, PREC_ATOM)}", PREC_POW
        if self.target == "latex":
            exp_s = self.print(exp)[0]
            return f"{base_s}^{{{exp_s}}}", PREC_POW
        if exp.is_Integer:
            return base_s + str(exp).translate(SUPERSCRIPTS), PREC_POW
        return f"{base_s}^{self.wrap(exp, PREC_ATOM)}", PREC_POW

    def _op(self, op, operands, params: dict, in_shapes: tuple = ()) -> tuple[str, int]:
        rule = op.printing
        template = getattr(rule, self.target)
        if self.target == "torch" and op.name in MATH_FUNCTIONS and all(_is_constant(a) for a in operands):
            template = f"math.{op.name}({{0}})"  # torch.sqrt(2) fails: a number takes math.sqrt
        if not template:
            raise TypeError(f"op {op.name} has no {self.target} printing")
        # Operands of a prefix function need no parentheses; infix/postfix ones might.
        printed = []
        for i, a in enumerate(operands):
            need = rule.operand_prec + (1 if (i and op.name == "matmul" and self.code) else 0)
            if self.code and op.name == "matmul" and self._is_mul(a):
                need = PREC_MATMUL + 1
            if f"{{{i}}}." in template:
                need = max(need, PREC_POSTFIX)  # `(x @ W).dtype`, never `x @ W.dtype`
            if i < len(in_shapes) and self._is_broadcast(a, in_shapes[i]):
                # SymPy's cancellations can leave a smaller operand that the op broadcasts
                # (inv(A)ᵀ 1 1ᵀ → a column): say so, or the shapes would not agree on paper
                # and the code would not parse back
                printed.append(self._op(OPS["broadcast_to"], [a], {"shape": tuple(in_shapes[i])})[0])
                continue
            printed.append(self.wrap(a, need))
        extra = {k: ("" if v is None else v) for k, v in params.items()}
        if isinstance(template, str):  # (n, d), not ('n', 'd'); a ByParams template takes the values
            extra = {k: fmt_shape_plain(v) if isinstance(v, tuple) else v for k, v in extra.items()}
        extra.update(axis_kw="", axis_sub="", params_kw="", reduction_kw="")
        if params.get("axis") is not None:
            extra["axis_kw"] = f", axis={params['axis']}"
            extra["axis_sub"] = f"_{{{params['axis']}}}"
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
        if params.get("reduction", "mean") != "mean":
            extra["reduction_kw"] = f', reduction="{params["reduction"]}"'
        shown = {k: v for k, v in params.items() if k not in ("axis", "keepdims", "reduction", "classes", "n")}
        extra["params_kw"] = "".join(f", {k}={v!r}" for k, v in shown.items() if v is not None and v != op.params[k])
        return template.format(*printed, **extra), rule.prec

    def _is_broadcast(self, operand: Expr, shape: tuple) -> bool:
        actual = self.symbols.shape(operand, self._shape_memo)
        return actual is not None and tuple(actual) != tuple(shape)

    @staticmethod
    def _is_mul(expr: Expr) -> bool:
        return expr.is_Mul or (expr.is_Pow and expr.exp.is_negative)


def to_text(expr, symbols: Symbols | None = None) -> str:
    return Printer("text", symbols)(expr)


def to_latex(expr, symbols: Symbols | None = None) -> str:
    return Printer("latex", symbols)(expr)


def to_lang(expr, symbols: Symbols | None = None) -> str:
    return Printer("lang", symbols)(expr)


def to_torch(expr, symbols: Symbols | None = None) -> str:
    """Python code with torch calls (`torch` and `math` in scope); dimensions by their names."""
    return Printer("torch", symbols)(expr)
