"""The SymPy classes that give backstep's ops their symbolic meaning.

Elementwise algebra (``+ - * / **`` with broadcasting, ``sin``, ``exp``…) is SymPy's own
commutative algebra on symbols that stand for whole arrays: elementwise products commute, so
SymPy's ``Mul`` is exactly the Hadamard product. What is *not* elementwise (matrix product,
transpose, reductions) is a ``TensorOp``: an unevaluated function that SymPy treats as an atom
in that algebra.

A ``TensorOp`` records the shapes of its operands among its arguments. SymPy may cancel
``x*y/x`` to ``y``, which has a smaller broadcast shape; an op that depends on the shape of its
operand (``sum``, ``@``) therefore broadcasts the operand back to the recorded shape before it
acts. Elementwise simplification is then always safe.

This module is the base machinery: dimensions and array symbols, the ``TensorOp`` base and how
it stores op parameters (by their kind), and the classes of the base tensor algebra that the
printers, the checker and every family's backward rules reason about by structure (matrix
product, transpose, outer product, sum, mean, unsqueeze, inverse, identity, sigmoid). The other
SymPy classes are declared in their op's block of the op table (``backstep/ops/``), which also
says how each class prints and evaluates.
"""

from __future__ import annotations

import sys

import sympy
from sympy import Expr, Function, Integer, S, Symbol, Tuple

# backstep's LaTeX printer (backstep.printing.latex). It imports this module, so it is looked up
# when printing, not imported here: any backstep expression exists only once backstep (and so its
# printer) is imported.
LATEX_PRINTER_MODULE = "backstep.printing.latex"


class PrintsAsBackstep:
    r"""A SymPy class that ``sympy.latex()`` and ``init_printing`` print with backstep's own LaTeX
    printer (`x^{\top} W_{1}`, not `\operatorname{MatrixProduct}…`)."""

    def _latex(self, printer) -> str:
        module = sys.modules.get(LATEX_PRINTER_MODULE)
        if module is None:  # (not reachable through backstep's API: its printer is loaded with it)
            return printer._print_Function(self)
        return module.to_latex(self)


class Dim(Symbol):
    """A symbolic dimension (`n`). Inside an expression it stands for that size (`ȳ/n`)."""

    def __new__(cls, name: str):
        return super().__new__(cls, name, positive=True, integer=True)


def var(name: str) -> Symbol:
    """The symbol for a named array (a variable, an intermediate or an adjoint): real entries."""
    return Symbol(name, real=True)


def shape_to_sympy(shape: tuple) -> Tuple:
    return Tuple(*[Integer(d) if isinstance(d, int) else Dim(d) for d in shape])


def shape_from_sympy(shape: Tuple) -> tuple:
    return tuple(int(d) if d.is_Integer else d.name for d in shape.args)


# --- an elementwise function that SymPy lacks ------------------------------------------------


class Sigmoid(PrintsAsBackstep, Function):
    """1 / (1 + exp(-x))."""

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return S.Half
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)


# --- ops that are not elementwise ------------------------------------------------------------


class TensorOp(PrintsAsBackstep, Function):
    """An array op that is not elementwise. Args: operands, then params, then operand shapes.

    `param_names` is declared with the class (its `eval` takes them by position); `param_kinds`,
    one per name, is given by the op table when the class's op is registered (ops/registry.py
    checks that the names agree with the op's parameters)."""

    n_operands = 1
    param_names: tuple[str, ...] = ()
    param_kinds: tuple[str, ...] = ()
    is_commutative = True

    @classmethod
    def eval(cls, *args):
        return None  # never evaluate: the structure is what a derivation shows

    @property
    def operands(self) -> tuple:
        return self.args[: self.n_operands]

    @property
    def params(self) -> dict:
        raw = self.args[self.n_operands : self.n_operands + len(self.param_names)]
        return {name: decode_param(kind, v) for name, kind, v in zip(self.param_names, self._kinds(), raw)}

    @property
    def in_shapes(self) -> tuple[tuple, ...]:
        return tuple(shape_from_sympy(s) for s in self.args[self.n_operands + len(self.param_names) :])

    @classmethod
    def build(cls, operands, in_shapes, **params):
        raw = [encode_param(kind, params.get(name)) for name, kind in zip(cls.param_names, cls._kinds())]
        return cls(*operands, *raw, *[shape_to_sympy(s) for s in in_shapes])

    @classmethod
    def _kinds(cls) -> tuple[str, ...]:
        if len(cls.param_kinds) != len(cls.param_names):
            raise TypeError(f"{cls.__name__} has no parameter kinds: its op is not registered in the op table")
        return cls.param_kinds

    def _eval_derivative(self, s):
        # backstep differentiates with its own rules (the op table); SymPy must not try.
        raise NotImplementedError("TensorOp derivatives come from backstep's op table")


# --- op parameters as SymPy args, by the parameter's kind (ops/spec.py: PARAM_KINDS) ------------
# None is the empty Tuple for every kind; a bool is an Integer 0 or 1; any other value is one item
# in a Tuple: a number, a name (a dimension or a choice) as a Symbol, or a tuple (a pair, sizes, a
# shape whose sizes may be dimension names) as a Tuple.


def _scalar_to_sympy(value):
    if isinstance(value, int) and not isinstance(value, bool):
        return Integer(value)
    if isinstance(value, float):
        return sympy.Float(value)
    if isinstance(value, str):
        return Symbol(value)
    raise TypeError(f"unsupported op parameter {value!r}")


def _tuple_to_sympy(value):
    if isinstance(value, tuple) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        return Tuple(*[Symbol(v) if isinstance(v, str) else Integer(v) for v in value])
    if isinstance(value, int) and not isinstance(value, bool):
        return Integer(value)
    raise TypeError(f"unsupported op parameter {value!r}")


def _kind_values(kind: str, value):
    """`value` if it is of the kind's Python types, else a TypeError."""
    ok = {
        "bool": (bool,),
        "axis": (int,),
        "number": (int, float),
        "choice": (str,),
        "subscripts": (str,),
        "size": (int, str),
    }.get(kind)
    if ok is not None and (not isinstance(value, ok) or (kind != "bool" and isinstance(value, bool))):
        raise TypeError(f"unsupported op parameter {value!r} for a parameter of kind {kind}")
    return value


def encode_param(kind: str, value):
    """An op parameter of this kind as a SymPy arg."""
    if value is None:
        return Tuple()
    if kind == "bool":
        return Integer(int(_kind_values(kind, value)))
    if kind in ("pair", "ints", "shape"):
        return Tuple(_tuple_to_sympy(value))
    if kind in ("axis", "number", "choice", "subscripts", "size"):
        return Tuple(_scalar_to_sympy(_kind_values(kind, value)))
    raise TypeError(f"unknown parameter kind {kind!r}")


def decode_param(kind: str, raw):
    """The parameter `encode_param` stored."""
    if kind == "bool" and not isinstance(raw, Tuple):
        return bool(int(raw))
    if not raw.args:
        return None
    v = raw.args[0]
    if isinstance(v, Tuple):
        return tuple(d.name if d.is_Symbol else int(d) for d in v.args)
    if v.is_Symbol:
        return v.name
    return int(v) if v.is_Integer else float(v)


def _is_identity_of(eye, shape: Tuple) -> bool:
    """Whether eye(n) is an operand of this shape itself (n×n), not one broadcast to it."""
    n = eye.params["n"]
    return len(shape.args) == 2 and all(str(d) == str(n) for d in shape.args)


class MatrixProduct(TensorOp):
    n_operands = 2

    @classmethod
    def eval(cls, a, b, sa, sb):
        # The simplifications a textbook makes without comment: I A = A, (c A) B = c (A B),
        # and a row vector times a matrix written as a matrix times a column vector (xᵀA = (Aᵀx)ᵀ).
        # I A = A only where I is the operand: an identity standing for a broadcast array (the 1×1
        # adjoint of tr(sum(…, keepdims=True)) laid over a 3×2 operand) is a matrix of ones
        if isinstance(a, Eye) and _is_identity_of(a, sa):
            return b
        if isinstance(b, Eye) and _is_identity_of(b, sb):
            return a
        # A number standing for a broadcast array (c 𝟏): 𝟏 B sums the rows of B, B 𝟏 its columns.
        if a.is_Number and len(sa.args) >= 1:
            axis_keep = len(sa.args) == 2
            return a * SumOp.build([b], [shape_from_sympy(sb)], axis=0, keepdims=axis_keep and len(sb.args) == 2)
        if b.is_Number and len(sb.args) >= 1:
            keep = len(sb.args) == 2 and len(sa.args) == 2
            return b * SumOp.build([a], [shape_from_sympy(sa)], axis=len(sa.args) - 1, keepdims=keep)
        for i, operand in enumerate((a, b)):
            coeff, rest = operand.as_coeff_Mul()
            if coeff != 1 and coeff.is_Number:
                ops_ = [a, b]
                ops_[i] = rest
                return coeff * cls(*ops_, sa, sb)
        if len(sa.args) == 1 and len(sb.args) == 2:
            return cls(TransposeOp(b, sb), a, Tuple(sb.args[1], sb.args[0]), sa)
        return None


class TransposeOp(TensorOp):
    @classmethod
    def eval(cls, x, shape):
        if len(shape.args) <= 1 or x.is_Number:
            return x  # a scalar or a 1-d vector is its own transpose
        if isinstance(x, TransposeOp):
            return x.operands[0]  # (Aᵀ)ᵀ = A
        if isinstance(x, Eye):
            return x
        if isinstance(x, OuterProduct):  # (a bᵀ)ᵀ = b aᵀ
            (a, b), (sa, sb) = x.operands, x.in_shapes
            return OuterProduct.build([b, a], [sb, sa])
        if isinstance(x, MatrixProduct) and all(len(s) == 2 for s in x.in_shapes):
            a, b = x.operands
            sa, sb = x.in_shapes
            # (A B)ᵀ = Bᵀ Aᵀ, the form a textbook prints
            return MatrixProduct.build(
                [TransposeOp.build([b], [sb]), TransposeOp.build([a], [sa])],
                [tuple(reversed(sb)), tuple(reversed(sa))],
            )
        return None


class OuterProduct(TensorOp):
    n_operands = 2

    @classmethod
    def eval(cls, a, b, sa, sb):
        # a number stands for a broadcast vector: c 𝟏 bᵀ = c bᵀ (rows), a (c 𝟏)ᵀ = c a (columns)
        if a.is_Number:
            return a * b
        if b.is_Number:
            return b * UnsqueezeOp.build([a], [shape_from_sympy(sa)], axis=1)
        return None


def _count(shape: Tuple, axis: Tuple) -> Expr:
    """How many entries a reduction over `axis` (all when empty; one axis, or a tuple of them) adds up."""
    if not axis.args:
        return sympy.Mul(*shape.args)
    given = axis.args[0]
    axes = given.args if isinstance(given, Tuple) else (given,)
    return sympy.Mul(*[shape.args[int(k)] for k in axes])


class SumOp(TensorOp):
    param_names = ("axis", "keepdims")

    @classmethod
    def eval(cls, x, axis, keepdims, shape):
        if x.is_Number:  # a number stands for a broadcast array: its sum is the number times the count
            return x * _count(shape, axis)
        return None


class MeanOp(TensorOp):
    param_names = ("axis", "keepdims")

    @classmethod
    def eval(cls, x, axis, keepdims, shape):
        return x if x.is_Number else None


class UnsqueezeOp(TensorOp):
    param_names = ("axis",)

    @classmethod
    def eval(cls, x, axis, shape):
        return x if x.is_Number else None


class InverseOp(TensorOp):
    @classmethod
    def eval(cls, x, shape):
        if isinstance(x, InverseOp):
            return x.operands[0]
        return None


class Eye(TensorOp):
    """eye(n): the identity matrix."""

    n_operands = 0
    param_names = ("n",)


# SymPy's own elementwise functions that backstep uses, by the names of its input language.
sin, cos, tan, exp, log, sqrt, tanh = sympy.sin, sympy.cos, sympy.tan, sympy.exp, sympy.log, sympy.sqrt, sympy.tanh
Abs, sign = sympy.Abs, sympy.sign
