"""The torch printer of `backstep codegen`: derivation expressions as lines of torch code.

backstep's torch printer (backstep.printing.torch), with what generated code needs on top: names that
clash with the module's own renamed, operands laid out to the shapes the ops recorded (Fit),
numbers of plain sizes as `math.*`, constants (`eye`, `onehot`) in the dtype and on the device of
a tensor in scope, and every line within ruff's default 88 columns (long parts named `t1 = ...`).
"""

from __future__ import annotations

import re

from sympy import Expr, Function

from ..errors import UnsupportedError
from ..model import Symbols
from ..ops import OP_OF_CLASS, PREC_ADD, PREC_ATOM, PREC_MUL, PREC_POSTFIX, PREC_POW
from ..printing.torch import TorchPrinter
from ..shapes import ShapeEnv
from ..symbolic import Dim, TensorOp, shape_from_sympy, shape_to_sympy

LINE = 88  # ruff's default line length: the module is clean under the defaults and under ours
INDENT = 4

# Names the generated module uses itself: a user's name equal to one of these gets a suffix.
RESERVED = {
    "torch",
    "math",
    "ctx",
    "self",
    "generator",
    "draw",
    "inputs",
    "seed",
    "gradcheck",
    "staticmethod",
    "None",
    "True",
    "False",
}
SIMPLE_POW_OPERAND = re.compile(r"-?([A-Za-z_]\w*(\.[A-Za-z_]\w*)*|\d+(\.\d*)?(e[-+]?\d+)?)")


class CodegenError(UnsupportedError):
    """A derivation that backstep cannot write as torch code (an op without a torch template)."""

    kind = "codegen"


class Fit(Function):
    """`x` laid out to `shape`: what backstep's evaluator does by broadcasting, written as code
    (`x.expand(n, d)`, or `grad.new_full((n, d), c)` for a number)."""

    is_commutative = True

    @classmethod
    def eval(cls, x, shape):
        return None


# --- shapes of expressions -------------------------------------------------------------------------


def broadcast_plain(a: tuple, b: tuple) -> tuple:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def is_number(expr: Expr) -> bool:
    """No array in it: numbers and dimension names only (a Python number in generated code)."""
    if isinstance(expr, Fit):
        return False
    return all(isinstance(s, Dim) for s in expr.free_symbols) and not expr.has(TensorOp)


class ShapeOf:
    """The shape an expression has when it is evaluated as written (before any broadcast)."""

    def __init__(self, shapes: dict[str, tuple]):
        self.shapes = shapes
        self.memo: dict[Expr, tuple] = {}

    def __call__(self, expr: Expr) -> tuple:
        if expr in self.memo:
            return self.memo[expr]
        if isinstance(expr, Fit):
            out = shape_from_sympy(expr.args[1])
        elif isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            out = ()
        elif expr.is_Symbol:
            out = tuple(self.shapes[expr.name])
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            out = tuple(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
        else:
            out = ()
            for a in expr.args:
                out = broadcast_plain(out, self(a))
        self.memo[expr] = out
        return out


def fit(expr: Expr, shape: tuple, shape_of: ShapeOf) -> Expr:
    """`expr` with `shape` exactly: wrapped in Fit where it relies on broadcasting to get there."""
    have = shape_of(expr)
    if tuple(have) == tuple(shape):
        return expr
    if len(have) > len(shape) or broadcast_plain(have, shape) != tuple(shape):
        raise CodegenError(f"internal: an expression of shape {have} cannot be laid out as {shape}")
    return Fit(expr, shape_to_sympy(shape))


# --- the printer -------------------------------------------------------------------------------------


class CodePrinter(TorchPrinter):
    """backstep's torch printer, with what generated code needs on top:

    - names renamed where they would clash with the module's own (`ctx`, `torch`, …);
    - operands of shape-dependent ops laid out to the shape the op recorded (as the evaluator
      does), and Fit printed as `.expand(...)` / `.new_full(...)`;
    - `**` and `/` spaced as ruff formats them, and `-(x**2)` for a negated power;
    - composite parts of a long expression named (`t1 = ...`), so that every line fits.
    """

    def __init__(self, symbols: Symbols, dims: dict[str, str], shape_of: ShapeOf, like: str, like_code: str = ""):
        super().__init__(symbols)
        self.dim_names = dims
        self.shape_of = shape_of
        self.like = like  # a tensor in scope whose dtype and device new numbers and constants take
        self.like_code = like_code or like  # its name in the code
        self.like_dtype = f"{self.like_code}.dtype"  # its dtype (torch.get_default_dtype() if no input is a float)
        self.used: set[str] = set()  # symbols and dimensions the printed code reads
        self.taken: set[str] = set()
        self.budget: int | None = None
        self.hoisted: dict[Expr, str] = {}
        self.pending: list[tuple[str, str]] = []
        self._count = 0

    # Statements ------------------------------------------------------------------------------

    def statement(self, target: str, expr: Expr, indent: int) -> list[str]:
        """`target = expr` as lines of code (named parts first), each within LINE columns."""
        budget = LINE - indent - len(target) - 3
        while True:
            self.hoisted, self.pending = {}, []
            used_before = set(self.used)
            self.budget = max(budget, 8)
            try:
                body = self(expr)
            finally:
                self.budget = None
            pending = list(self.pending)
            # a part named, then printed differently after all (a sign pulled out): drop it
            while True:
                later = " ".join(code for _, code in pending) + " " + body
                unused = [p for p in pending if not re.search(rf"\b{p[0]}\b", later)]
                if not unused:
                    break
                pending = [p for p in pending if p not in unused]
            lines = [f"{name} = {code}" for name, code in pending] + [f"{target} = {body}"]
            if all(indent + len(line) <= LINE for line in lines):
                return lines
            if budget < 12:
                # one op's torch template is longer than a line: its call split as ruff splits it,
                # else (a chain of calls) the line left long
                out = []
                for line in lines:
                    if indent + len(line) <= LINE:
                        out.append(line)
                        continue
                    name, _, code = line.partition(" = ")
                    split = split_call(name, code, indent)
                    out += split if split else [line + "  # noqa: E501, RUF100  # fmt: skip"]
                return out
            self.used = used_before
            budget = budget * 2 // 3

    def temp(self) -> str:
        while True:
            self._count += 1
            name = f"t{self._count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    # Dispatch --------------------------------------------------------------------------------

    def print(self, expr: Expr) -> tuple[str, int]:
        if expr in self.hoisted:
            return self.hoisted[expr], PREC_ATOM
        if isinstance(expr, Fit):
            s, prec = self._fit(expr)
        elif isinstance(expr, TensorOp):
            s, prec = super().print(self._laid_out(expr))
        else:
            s, prec = super().print(expr)
        if self.budget is not None and len(s) > self.budget and expr.args and not isinstance(expr, Dim):
            parts = [p for p in _parts(expr) if p.args and not isinstance(p, Dim) and not p.is_Number]
            parts = [p for p in parts if p not in self.hoisted]  # named already: printing again gains nothing
            for part in parts:
                self._hoist(part)
            if parts:
                s, prec = self.print(expr)
        return s, prec

    def _hoist(self, expr: Expr) -> None:
        if expr in self.hoisted:
            return
        code = self.print(expr)[0]
        name = self.temp()
        self.pending.append((name, code))
        self.hoisted[expr] = name

    def _laid_out(self, expr: TensorOp) -> Expr:
        """A shape-dependent op whose operands are broadcast to the shapes it recorded."""
        n = expr.n_operands
        if n == 0:
            return expr
        operands = [fit(a, s, self.shape_of) for a, s in zip(expr.operands, expr.in_shapes)]
        if all(a is b for a, b in zip(operands, expr.operands)):
            return expr
        return type(expr)(*operands, *expr.args[n:])

    def _fit(self, expr: Fit) -> tuple[str, int]:
        inner, shape = expr.args[0], shape_from_sympy(expr.args[1])
        sizes = [self._size(d) for d in shape]
        if is_number(inner):
            self.used.add(self.like)
            shape_s = "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
            if inner == 0:
                return f"{self.like_code}.new_zeros({shape_s})", PREC_POSTFIX
            return f"{self.like_code}.new_full({shape_s}, {self.print(inner)[0]})", PREC_POSTFIX
        if not shape:
            return self.print(inner)
        return f"{self.wrap(inner, PREC_POSTFIX)}.expand({', '.join(sizes)})", PREC_POSTFIX

    def _size(self, d) -> str:
        if isinstance(d, int):
            return str(d)
        self.used.add(d)
        return self.dim_names.get(d, d)

    def _symbol(self, expr) -> str:
        self.used.add(expr.name)
        return super()._symbol(expr)

    def _dim(self, expr) -> str:
        self.used.add(expr.name)
        return self.dim_names.get(expr.name, expr.name)

    def _op(self, op, operands, params: dict, in_shapes: tuple = ()) -> tuple[str, int]:
        template = op.printing.torch if op.printing else ""
        if op.param("keepdims") and params.get("axis") is None and params.get("keepdims"):
            # a reduction over every axis that keeps them: torch needs the axes spelled out
            dims_ = tuple(range(len(in_shapes[0])))
            text = template.format(self.print(operands[0])[0], **params, dim_kw=f", dim={dims_}, keepdim=True")
            return text, PREC_ATOM
        if isinstance(template, str) and "{reduce_dims}" in template and params.get("axis") is not None:
            # a reduction over one axis (logsumexp): the operand as it is
            return template.format(self.print(operands[0])[0], reduce_dims=params["axis"]), PREC_ATOM
        params = {k: self._sizes(v) for k, v in params.items()}  # dimension names: onehot's classes, a shape
        if op.printing and op.printing.code_with_number and sum(is_number(a) for a in operands) == 1:
            # with a number: a clamp, never torch.as_tensor(number) (a CPU tensor of torch's default dtype)
            x, c = (operands[1], operands[0]) if is_number(operands[0]) else operands
            return op.printing.code_with_number.format(x=self.print(x)[0], c=self.print(c)[0]), PREC_ATOM
        if op.printing and op.printing.code:
            return self._code(op.printing.code, operands, params), op.printing.prec
        if not getattr(op.printing, "torch", ""):
            raise CodegenError(
                f"the op {op.name} has no torch code template yet (backstep/ops/: its Printing lacks torch=...), "
                "so backstep cannot write this derivation as code"
            )
        return super()._op(op, operands, params, in_shapes)

    def _code(self, code: str, operands, params: dict) -> str:
        """An op's own template for generated code (Printing.code): constants in the dtype and on the
        device of a tensor in scope, never float64 on the CPU (the table's `torch` templates, written
        for backstep's float64 checks, say torch.float64)."""
        if any(f"{{{k}}}" in code for k in ("dtype", "device", "to")):
            self.used.add(self.like)
        # .to(X): X's dtype and device (onehot's indices are on X's device already)
        to = self.like_code if self.like_dtype == f"{self.like_code}.dtype" else self.like_dtype
        printed = [
            self.wrap(a, PREC_POSTFIX) if f"{{{i}}}." in code else self.print(a)[0] for i, a in enumerate(operands)
        ]
        return code.format(*printed, dtype=self.like_dtype, device=f"{self.like_code}.device", to=to, **params)

    def _sizes(self, value):
        """A parameter that names dimensions, with those names as the code has them (and marked used)."""
        if isinstance(value, tuple):
            return tuple(self._sizes(v) for v in value)
        if isinstance(value, str) and value in self.dim_names:
            self.used.add(value)
            return self.dim_names[value]
        return value

    # Formatting as ruff does -------------------------------------------------------------------

    def _power(self, base: Expr, exp: Expr) -> tuple[str, int]:
        base_s = self.wrap(base, PREC_POW + 1)
        exp_s = self.wrap(exp, PREC_ATOM)
        simple = SIMPLE_POW_OPERAND.fullmatch(base_s) and SIMPLE_POW_OPERAND.fullmatch(exp_s)
        return base_s + ("**" if simple else " ** ") + exp_s, PREC_POW

    def _rational(self, p: int, q: int) -> tuple[str, int]:
        return f"{p} / {q}", PREC_MUL

    def _negated(self, expr: Expr) -> str:
        """`-expr` as ruff writes it: -(x**2) and -(x**2) / 2, never -x**2."""
        if expr.is_Pow and not (expr.exp.is_Number and expr.exp.is_negative) and expr not in self.hoisted:
            return "-" + self.paren(self.print(expr)[0])
        s, prec = self.print(expr)
        return "-" + (s if prec > PREC_ADD else self.paren(s))

    _negating = False  # a product after a minus sign of -1 or -1/q: a power leading it gets parentheses

    def _negated_product(self, coeff, factors) -> tuple[str, int]:
        self._negating = coeff.is_Rational and coeff.p == 1
        try:
            return super()._negated_product(coeff, factors)
        finally:
            self._negating = False

    def _product(self, factors: list[Expr]) -> tuple[str, int]:
        first_pow = self._negating and factors and factors[0].is_Pow and factors[0] not in self.hoisted
        self._negating = False
        if not first_pow:
            return super()._product(factors)
        parts = [self.paren(self.print(factors[0])[0])] + [self._factor(f, len(factors)) for f in factors[1:]]
        return " * ".join(parts), (PREC_MUL if len(parts) > 1 else PREC_ATOM)


def split_call(target: str, code: str, indent: int) -> list[str] | None:
    """`target = f(a, b, k=c)` over lines, one argument a line with a trailing comma (as ruff keeps
    it at any line length), for a call of a dotted name."""
    import ast

    try:
        call = ast.parse(code, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call) or not _dotted(call.func):
        return None
    segment = ast.get_source_segment
    args = [segment(code, a) for a in call.args]
    args += [f"{kw.arg}={segment(code, kw.value)}" for kw in call.keywords if kw.arg is not None]
    if None in args or len(args) != len(call.args) + len(call.keywords):
        return None
    head = f"{target} = {segment(code, call.func)}("
    pad = " " * INDENT
    if indent + len(head) > LINE:
        return None
    if all(indent + INDENT + len(a) + 1 <= LINE for a in args):  # one a line: stable at any line length
        return [head] + [pad + a + "," for a in args] + [")"]
    return None


def _dotted(node) -> bool:
    import ast

    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _parts(expr: Expr) -> list[Expr]:
    """The operands a long expression can be split into (a denominator's base, not its power)."""
    if isinstance(expr, Fit):
        return [expr.args[0]]
    if isinstance(expr, TensorOp):
        return list(expr.operands)
    if expr.is_Mul:
        out = []
        for a in expr.args:
            out.append(a.base if a.is_Pow and a.exp.is_Number and a.exp.is_negative else a)
        return out
    if expr.is_Add:
        return [-a if a.could_extract_minus_sign() else a for a in expr.args]
    return list(expr.args)
