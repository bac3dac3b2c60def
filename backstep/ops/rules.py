"""Shape and backward helpers that ops of several families share.

Shape rules take `(env, in_shapes, params)` and return the output shape, raising ShapeMismatch
with a sentence for the user; backward helpers build SymPy expressions of the base tensor algebra
(symbolic.SumOp, UnsqueezeOp) that every family's rules reduce to.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from .. import symbolic as sb
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


def reduce_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    axis = params.get("axis")
    if axis is None:
        return (1,) * len(shape) if params.get("keepdims") else ()
    k = normalize_axis(axis, len(shape))
    if params.get("keepdims"):
        return shape[:k] + (1,) + shape[k + 1 :]
    return shape[:k] + shape[k + 1 :]


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


def size_of(shape: Shape, axis: int | None = None) -> Expr:
    """The number of entries (or the length of one axis) as a SymPy expression of dimensions."""
    dims = shape if axis is None else (shape[axis],)
    return sympy.Mul(*[sympy.Integer(d) if isinstance(d, int) else sb.Dim(d) for d in dims])


def expand_back(g: Expr, in_shape: Shape, params: dict) -> Expr:
    """The upstream gradient of a reduction, laid back out over the reduced axis."""
    axis = params.get("axis")
    if axis is None or params.get("keepdims"):
        return g  # broadcasting lays it out
    k = normalize_axis(axis, len(in_shape))
    if k == 0:
        return g  # a new leading axis is what broadcasting adds
    return sb.UnsqueezeOp.build([g], [in_shape[:k] + in_shape[k + 1 :]], axis=k)


def sum_to(expr: Expr, from_shape: tuple, to_shape: tuple) -> Expr:
    """Sum a broadcast gradient back to an input's shape: over leading axes, then size-1 axes."""
    shape = tuple(from_shape)
    while len(shape) > len(to_shape):
        expr = sb.SumOp.build([expr], [shape], axis=0, keepdims=False)
        shape = shape[1:]
    for k, (have, want) in enumerate(zip(shape, to_shape)):
        if want == 1 and have != 1:
            expr = sb.SumOp.build([expr], [shape], axis=k, keepdims=True)
            shape = shape[:k] + (1,) + shape[k + 1 :]
    return expr


def number(value: float) -> Expr:
    """A parameter as a SymPy number: 1, not 1.0, when it is whole."""
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)
