"""Shape and backward helpers that ops of several families share.

Shape rules take `(env, in_shapes, params)` and return the output shape, raising ShapeMismatch
with a sentence for the user; backward helpers build SymPy expressions of the base tensor algebra
(symbolic.SumOp, UnsqueezeOp) that every family's rules reduce to.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..errors import DomainError
from ..shapes import Shape, ShapeEnv, ShapeMismatch, broadcast
from ..shapes import fmt_shape_plain as fmt

# --- shape rules -------------------------------------------------------------------------------


def same_shape(env: ShapeEnv, shapes, params) -> Shape:
    return env.resolve(shapes[0])


def broadcast_shapes(env: ShapeEnv, shapes, params) -> Shape:
    try:
        return broadcast(env, shapes[0], shapes[1])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"cannot broadcast {fmt(shapes[0])} with {fmt(shapes[1])} ({err})") from None


def broadcast_all(env: ShapeEnv, shapes, params) -> Shape:
    out = env.resolve(shapes[0])
    for s in shapes[1:]:
        try:
            out = broadcast(env, out, s)
        except ShapeMismatch as err:
            raise ShapeMismatch(f"cannot broadcast {fmt(out)} with {fmt(s)} ({err})") from None
    return out


def normalize_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ShapeMismatch(f"axis {axis} is out of range for an array of rank {rank}")
    return axis % rank


def reduce_axes(axis, rank: int) -> tuple[int, ...]:
    """A reduction's axes counted from the start, ascending: every axis where `axis` is None, the
    one axis of an integer, or the axes of a tuple (axis=(0, 2, 3)); an axis out of range or given
    twice is refused, naming it."""
    if axis is None:
        return tuple(range(rank))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ShapeMismatch("axis=() names no axis: leave axis out to reduce over every axis")
    seen: dict[int, int] = {}
    for a in axes:
        k = normalize_axis(a, rank)
        if k in seen:
            both = f" (as {seen[k]} and {a})" if seen[k] != a else ""
            raise ShapeMismatch(f"axis {a} is given twice{both} in axis={fmt_axis(axis)}")
        seen[k] = a
    return tuple(sorted(seen))


def fmt_axis(axis) -> str:
    """An axis parameter as a user writes it: 1, or (0, 2, 3)."""
    return (
        str(axis) if isinstance(axis, int) or axis is None else f"({', '.join(map(str, axis))}{',' * (len(axis) == 1)})"
    )


def reduce_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    axes = reduce_axes(params.get("axis"), len(shape))
    if params.get("keepdims"):
        return tuple(1 if k in axes else d for k, d in enumerate(shape))
    return tuple(d for k, d in enumerate(shape) if k not in axes)


def scalar_of_any(env: ShapeEnv, shapes, params) -> Shape:
    return ()


def unify_or(env: ShapeEnv, a, b, message: str) -> None:
    try:
        env.unify(a, b)
    except ShapeMismatch as err:
        raise ShapeMismatch(f"{message} ({err})") from None


def int_product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


# --- helpers for backward rules ------------------------------------------------------------------


def size_of(shape: Shape, axis=None) -> Expr:
    """The number of entries (or the length of one axis, or the product of several) as a SymPy
    expression of dimensions."""
    dims = [shape[k] for k in reduce_axes(axis, len(shape))]
    return sympy.Mul(*[sympy.Integer(d) if isinstance(d, int) else sb.Dim(d) for d in dims])


def expand_back(g: Expr, in_shape: Shape, params: dict) -> Expr:
    """The upstream gradient of a reduction, laid back out over the reduced axes."""
    axis = params.get("axis")
    if axis is None or params.get("keepdims"):
        return g  # broadcasting lays it out
    axes = reduce_axes(axis, len(in_shape))
    leading = next(i for i in range(len(axes) + 1) if i == len(axes) or axes[i] != i)
    # new leading axes are what broadcasting adds; the others are put back, ascending, each where
    # it was in the input (less the leading ones)
    shape = tuple(d for k, d in enumerate(in_shape) if k not in axes)
    for k in axes[leading:]:
        g = sb.UnsqueezeOp.build([g], [shape], axis=k - leading)
        shape = shape[: k - leading] + (1,) + shape[k - leading :]
    return g


def sum_to(expr: Expr, from_shape: tuple, to_shape: tuple) -> Expr:
    """Sum a broadcast gradient back to an input's shape: over leading axes, then size-1 axes."""
    # One sum per kind, over all its axes at once (Σ over n, h, w, as a textbook writes batch norm's β̄),
    # not a sum per axis nested in the next.
    shape = tuple(from_shape)
    leading = len(shape) - len(to_shape)
    if leading > 0:
        axes = tuple(range(leading))
        expr = sb.SumOp.build([expr], [shape], axis=axes[0] if leading == 1 else axes, keepdims=False)
        shape = shape[leading:]
    ones = tuple(k for k, (have, want) in enumerate(zip(shape, to_shape)) if want == 1 and have != 1)
    if ones:
        expr = sb.SumOp.build([expr], [shape], axis=ones[0] if len(ones) == 1 else ones, keepdims=True)
    return expr


def number(value: float) -> Expr:
    """A parameter as a SymPy number: 1, not 1.0, when it is whole."""
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)


def index_tensor(torch, ix, bound: int, what: str, axis: str):
    """`ix` as a LongTensor, refused (DomainError) where an entry is not a whole number in 0 … bound−1
    (`axis` says what the bound counts: "rows of E")."""
    if not torch.is_tensor(ix):
        ix = torch.tensor(ix, dtype=torch.float64 if isinstance(ix, float) else None)
    if ix.is_floating_point() and not bool(torch.isfinite(ix).all()):
        raise DomainError(f"{what}: the index array holds a value that is not finite (an index picks a row: 0, 1, …)")
    if ix.is_floating_point():
        fractional = (ix != ix.round()).nonzero()
        if len(fractional):
            at = tuple(int(k) for k in fractional[0])
            raise DomainError(
                f"{what}: the index array holds {float(ix.detach()[at]):g} at {list(at)}, not a whole number "
                "(an index picks a row: 0, 1, 2, …)"
            )
    outside = ((ix < 0) | (ix >= bound)).nonzero()
    if len(outside):
        at = tuple(int(k) for k in outside[0])
        raise DomainError(
            f"{what}: the index array holds {int(ix[at])} at {list(at)}, outside 0 … {bound - 1} (the {bound} {axis}; "
            "a size that no --at value fixes is a sample size: give it with --shape)"
        )
    return ix.long()
