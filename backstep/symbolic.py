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

Which op a class belongs to, how it prints and how it evaluates is declared in ``ops.py``.
"""

from __future__ import annotations

import sympy
from sympy import Expr, Function, Integer, S, Symbol, Tuple


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


# --- elementwise functions that SymPy lacks -------------------------------------------------


class Relu(Function):
    """max(x, 0); its derivative is Step (1[x > 0]), 0 at the kink as in torch."""

    @classmethod
    def eval(cls, x):
        if x is S.NaN:  # (0/0 of constants): stays NaN, for derive to refuse; never a comparison error
            return S.NaN
        if x.is_Number:
            return x if x > 0 else S.Zero
        return None

    def fdiff(self, argindex=1):
        return Step(self.args[0])


class Step(Function):
    """The indicator 1[x > 0]: torch's derivative of relu (0 at x = 0, unlike Heaviside(0) = ½)."""

    @classmethod
    def eval(cls, x):
        if x is S.NaN:
            return S.NaN
        if x.is_Number:
            return S.One if x > 0 else S.Zero
        if isinstance(x, (Step, StepGE)):
            return x  # an indicator is positive exactly where it holds
        return None

    def fdiff(self, argindex=1):
        return S.Zero


class Sigmoid(Function):
    """1 / (1 + exp(-x))."""

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return S.Half
        return None

    def fdiff(self, argindex=1):
        return self * (1 - self)


# --- ops that are not elementwise ------------------------------------------------------------


class TensorOp(Function):
    """An array op that is not elementwise. Args: operands, then params, then operand shapes."""

    n_operands = 1
    param_names: tuple[str, ...] = ()
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
        return {name: _param_from_sympy(v) for name, v in zip(self.param_names, raw)}

    @property
    def in_shapes(self) -> tuple[tuple, ...]:
        return tuple(shape_from_sympy(s) for s in self.args[self.n_operands + len(self.param_names) :])

    @classmethod
    def build(cls, operands, in_shapes, **params):
        raw = [_param_to_sympy(params.get(name)) for name in cls.param_names]
        return cls(*operands, *raw, *[shape_to_sympy(s) for s in in_shapes])

    def _eval_derivative(self, s):
        # backstep differentiates with its own rules (ops.py); SymPy must not try.
        raise NotImplementedError("TensorOp derivatives come from backstep's op table")


def _param_to_sympy(value):
    """Op parameters as SymPy args: None, bools, ints, floats, and names (a dimension or a choice)."""
    if value is None:
        return Tuple()
    if isinstance(value, bool):
        return Integer(int(value))
    if isinstance(value, int):
        return Tuple(Integer(value))
    if isinstance(value, float):
        return Tuple(sympy.Float(value))
    if isinstance(value, str):
        return Tuple(Symbol(value))
    if isinstance(value, tuple) and all(isinstance(v, (int, str)) and not isinstance(v, bool) for v in value):
        # a pair (stride=(2, 1)) or a shape, whose sizes may be dimension names: (n, 3)
        return Tuple(Tuple(*[Symbol(v) if isinstance(v, str) else Integer(v) for v in value]))
    raise TypeError(f"unsupported op parameter {value!r}")


def _param_from_sympy(value):
    if isinstance(value, Tuple):
        if not value.args:
            return None
        v = value.args[0]
        if isinstance(v, Tuple):
            return tuple(d.name if d.is_Symbol else int(d) for d in v.args)
        if v.is_Symbol:
            return v.name
        return int(v) if v.is_Integer else float(v)
    return bool(int(value))


class MatrixProduct(TensorOp):
    n_operands = 2

    @classmethod
    def eval(cls, a, b, sa, sb):
        # The simplifications a textbook makes without comment: I A = A, (c A) B = c (A B),
        # and a row vector times a matrix written as a matrix times a column vector (xᵀA = (Aᵀx)ᵀ).
        if isinstance(a, Eye):
            return b
        if isinstance(b, Eye):
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
    """How many entries a reduction over `axis` (all when empty) adds up."""
    dims = shape.args if not axis.args else (shape.args[int(axis.args[0])],)
    return sympy.Mul(*dims)


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


class Softmax(TensorOp):
    param_names = ("axis",)


class LogSoftmax(TensorOp):
    param_names = ("axis",)


class LogSumExp(TensorOp):
    param_names = ("axis",)


class OneHot(TensorOp):
    """onehot(t, c): the rows of the c×c identity picked by integer class indices t."""

    param_names = ("classes",)


class CrossEntropy(TensorOp):
    n_operands = 2
    param_names = ("reduction",)


class NormOp(TensorOp):
    """The 2-norm of a vector, the Frobenius norm of a matrix."""


class TraceOp(TensorOp):
    pass


class DetOp(TensorOp):
    pass


class LogDetOp(TensorOp):
    pass


class InverseOp(TensorOp):
    @classmethod
    def eval(cls, x, shape):
        if isinstance(x, InverseOp):
            return x.operands[0]
        return None


class DiagOp(TensorOp):
    """torch.diag: the diagonal of a matrix, or the diagonal matrix of a vector."""

    @classmethod
    def eval(cls, x, shape):
        if x.is_Number and len(shape.args) == 1:
            return x * Eye.build([], [], n=shape_from_sympy(shape)[0])  # diag(c 𝟏) = c I
        return None


class Eye(TensorOp):
    """eye(n): the identity matrix."""

    n_operands = 0
    param_names = ("n",)


# --- elementwise functions with parameters ------------------------------------------------------


class StepGE(Function):
    """The indicator 1[x ≥ 0]: the derivative of clamp(x, min=0), 1 at 0 as in torch."""

    @classmethod
    def eval(cls, x):
        if x is S.NaN:
            return S.NaN
        if x.is_Number:
            return S.One if x >= 0 else S.Zero
        return None

    def fdiff(self, argindex=1):
        return S.Zero


class LeakyRelu(TensorOp):
    param_names = ("negative_slope",)


class Elu(TensorOp):
    param_names = ("alpha",)


class Gelu(Function):
    nargs = 1


class Softplus(Function):
    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])


class Clamp(TensorOp):
    param_names = ("min", "max")


class Maximum(Function):
    nargs = 2


class Minimum(Function):
    nargs = 2


class Where(Function):
    """where(c, a, b): a where the indicator c is 1, b where it is 0."""

    nargs = 3


# SymPy's own elementwise functions that backstep uses, by the names of its input language.
sin, cos, tan, exp, log, sqrt, tanh = sympy.sin, sympy.cos, sympy.tan, sympy.exp, sympy.log, sympy.sqrt, sympy.tanh
Abs, sign = sympy.Abs, sympy.sign


# --- convolution and pooling (4-d NCHW) --------------------------------------------------------------
# Parameters are ints or (h, w) pairs, as torch takes them; `size` is the spatial size a gradient
# op must produce where the stride leaves it ambiguous (None: the smallest that fits).


class Conv2d(TensorOp):
    """conv2d(x, K): the cross-correlation x ⋆ K of NCHW images with (F, C, kh, kw) kernels."""

    n_operands = 2
    param_names = ("stride", "padding")


class Conv2dGradInput(TensorOp):
    """conv2d_grad_input(ȳ, K) = ȳ ∗ rot180(K): the full convolution with the flipped kernel."""

    n_operands = 2
    param_names = ("stride", "padding", "size")


class Conv2dGradWeight(TensorOp):
    """conv2d_grad_weight(x, ȳ) = x ⋆ ȳ: the cross-correlation of the input with the gradient."""

    n_operands = 2
    param_names = ("stride", "padding", "size")


class MaxPool2d(TensorOp):
    param_names = ("kernel_size", "stride")


class MaxPoolRoute(TensorOp):
    """maxpool_route(ȳ, x): each entry of ȳ sent to the arg-max of its window of x."""

    n_operands = 2
    param_names = ("kernel_size", "stride")


class MaxPoolGather(TensorOp):
    """maxpool_gather(u, x): u read at the arg-max of each window of x (the adjoint of the route)."""

    n_operands = 2
    param_names = ("kernel_size", "stride")


class AvgPool2d(TensorOp):
    param_names = ("kernel_size", "stride")


class AvgPoolSpread(TensorOp):
    """avgpool_spread(ȳ): each entry of ȳ copied over its window (the adjoint of sum-pooling)."""

    param_names = ("kernel_size", "stride", "size")


class BroadcastTo(TensorOp):
    param_names = ("shape",)


class Flatten(TensorOp):
    param_names = ("start_dim", "end_dim")


class Unflatten(TensorOp):
    param_names = ("axis", "sizes")


class Reshape(TensorOp):
    param_names = ("shape",)
