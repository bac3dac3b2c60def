"""Views and shape ops: flatten, unflatten, reshape (each one's gradient is the inverse
reshape), broadcast_to (whose gradient sums the copies back), and swapaxes and flip (each its
own inverse, so its gradient is the same op applied to the upstream gradient)."""

from __future__ import annotations

from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .registry import register
from .rules import int_product, normalize_axis, sum_to, unify_or
from .spec import ByParams, Ctx, Op, Param, Printing, axis_param


def view_torch(shape_of):
    """A reshape, always as torch's view (grad_fn ViewBackward0) of a contiguous copy."""

    def run(torch, args, p):
        x = args[0]
        return x.contiguous().view(shape_of(tuple(x.shape), p))

    return run


def int_tuple(params: dict, name: str, op: str, allow_fill: bool = False) -> tuple[int, ...]:
    value = params.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    ok = isinstance(value, tuple) and all(isinstance(v, int) and (v >= 1 or (allow_fill and v == -1)) for v in value)
    if not ok or (allow_fill and value.count(-1) > 1):
        fill = " (one of them may be -1)" if allow_fill else ""
        raise ShapeMismatch(f"{op} needs {name} as a tuple of positive integers{fill}, like (6, 4, 4); got {value!r}")
    return value


# --- flatten -------------------------------------------------------------------------------------


class Flatten(sb.TensorOp):
    param_names = ("start_dim", "end_dim")


def flatten_axes(shape: Shape, params: dict) -> tuple[int, int]:
    if len(shape) == 0:
        raise ShapeMismatch("flatten needs an array, not a scalar")
    a = normalize_axis(params.get("start_dim", 1), len(shape))
    b = normalize_axis(params.get("end_dim", -1), len(shape))
    if a > b:
        raise ShapeMismatch(f"flatten: start_dim {params.get('start_dim')} comes after end_dim {params.get('end_dim')}")
    return a, b


def flatten_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    a, b = flatten_axes(s, params)
    merged = s[a : b + 1]
    if len(merged) > 1 and not all(isinstance(d, int) for d in merged):
        raise ShapeMismatch(f"flatten merges the axes {fmt(merged)} of {fmt(s)}: their sizes must be known integers")
    size = merged[0] if len(merged) == 1 else int_product(merged)
    return s[:a] + (size,) + s[b + 1 :]


def flatten_grad(c: Ctx) -> Expr:
    a, b = flatten_axes(c.shapes[0], c.params)
    if a == b:
        return c.g
    return Unflatten.build([c.g], [c.out_shape], axis=a, sizes=tuple(c.shapes[0][a : b + 1]))


register(
    Op(
        name="flatten",
        syntax="flatten",
        arity=1,
        shape=flatten_shape,
        sympy=lambda args, shapes, p: Flatten.build(args, shapes, **p),
        backward=(flatten_grad,),
        torch=view_torch(lambda shape, p: flatten_shape(ShapeEnv(), [shape], p)),
        torch_aliases=("torch.flatten", "torch.Tensor.flatten", "torch.nn.Flatten"),
        grad_fn="ViewBackward0",
        summary="flatten(x, start_dim=1, end_dim=-1): the axes start_dim..end_dim merged into one in row-major "
        "order, (N, C, H, W) → (N, C·H·W), y[n, (c·H + h)·W + w] = x[n,c,h,w], as x.view(N, -1) (start_dim 1 as "
        "nn.Flatten); x̄ = unflatten(ȳ)",
        title={"en": "flatten", "zh": "展平"},
        example="x: (N, 3, 4, 2)\nflatten(x)",
        parameters=(Param("start_dim", "axis", 1), Param("end_dim", "axis", -1)),
        sympy_class=Flatten,
        printing=Printing(
            text="flatten({0}{params_kw})",
            latex=r"\operatorname{{flatten}}\left({0}\right)",
            lang="flatten({0}{params_kw})",
            torch="{0}.flatten({start_dim}, {end_dim})",
        ),
    )
)

# --- unflatten -----------------------------------------------------------------------------------


class Unflatten(sb.TensorOp):
    param_names = ("axis", "sizes")


def unflatten_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("unflatten needs an array, not a scalar")
    k = normalize_axis(params.get("axis", 1), len(s))
    sizes = int_tuple(params, "sizes", "unflatten")
    unify_or(env, s[k], int_product(sizes), f"unflatten: axis {k} of {fmt(s)} cannot be split into {fmt(sizes)}")
    return s[:k] + sizes + env.resolve(s[k + 1 :])


def unflatten_grad(c: Ctx) -> Expr:
    k = normalize_axis(c.params.get("axis", 1), len(c.shapes[0]))
    end = k + len(c.params["sizes"]) - 1
    return Flatten.build([c.g], [c.out_shape], start_dim=k, end_dim=end)


register(
    Op(
        name="unflatten",
        syntax="unflatten",
        arity=1,
        shape=unflatten_shape,
        sympy=lambda args, shapes, p: Unflatten.build(args, shapes, **p),
        backward=(unflatten_grad,),
        torch=view_torch(lambda shape, p: unflatten_shape(ShapeEnv(), [shape], p)),
        grad_fn="ViewBackward0",
        summary="unflatten(x, axis, sizes): one axis split into several, (N, 96) → (N, 6, 4, 4) with sizes "
        "(6, 4, 4), y[n,c,h,w] = x[n, (c·4 + h)·4 + w], as torch.unflatten; x̄ = flatten(ȳ) over those axes",
        title={"en": "unflatten", "zh": "反展平"},
        example="x: (N, 24)\nunflatten(x, 1, (3, 4, 2))",
        parameters=(axis_param(1), Param("sizes", "ints")),
        sympy_class=Unflatten,
        printing=Printing(
            text="unflatten({0}, {axis}, {sizes})",
            latex=r"\operatorname{{unflatten}}_{{{axis}}}\left({0}, {sizes}\right)",
            lang="unflatten({0}, {axis}, {sizes})",
            torch="{0}.unflatten({axis}, {sizes})",
        ),
    )
)

# --- reshape -------------------------------------------------------------------------------------


class Reshape(sb.TensorOp):
    param_names = ("shape",)


def reshape_target(env: ShapeEnv, params: dict) -> tuple:
    """The shape= of reshape: positive integers, dimension names (resolved), and at most one -1."""
    value = params.get("shape")
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    ok = isinstance(value, tuple) and all(
        isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool) and (v >= 1 or v == -1)) for v in value
    )
    if not ok or value.count(-1) > 1:
        raise ShapeMismatch(
            "reshape needs shape as a tuple of positive integers and dimension names (one of them may be -1), "
            f"like (N, -1) or (6, 4, 4); got {value!r}"
        )
    return env.resolve(value)


def reshape_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    target = reshape_target(env, params)
    # The names on both sides cancel (reshape(x, (N, -1)) keeps the batch N); what is left must be
    # numbers, or one name on one side that a number or a name of the other side stands for.
    left = [d for d in s if isinstance(d, str)]
    right = [d for d in target if isinstance(d, str)]
    for d in list(left):
        if d in right:
            left.remove(d)
            right.remove(d)
    known = int_product(d for d in s if isinstance(d, int))
    wanted = int_product(d for d in target if isinstance(d, int) and d != -1)
    names = f" (backstep cannot tell {' * '.join(left + right)} from the other sizes)" if left or right else ""
    if -1 in target:
        unfit = ShapeMismatch(f"reshape: {fmt(s)} does not fit {fmt(target)}{names}")
    else:
        entries = f"the {wanted} entries" if not right else "the entries"
        unfit = ShapeMismatch(
            f"reshape: {fmt(s)} does not have {entries} of {fmt(target)}{names}; -1 may stand for a size"
        )
    if -1 in target:
        if right:
            raise unfit
        if not left and known % wanted == 0:
            fill = known // wanted
        elif len(left) == 1 and known == wanted:
            fill = left[0]  # the symbolic axis (the batch) is what -1 stands for
        else:
            raise unfit
        return tuple(fill if d == -1 else d for d in target)
    if not left and not right and known == wanted:
        return target
    if len(left) == 1 and not right and wanted % known == 0:
        env.unify(left[0], wanted // known)
    elif len(right) == 1 and not left and known % wanted == 0:
        env.unify(right[0], known // wanted)
    elif len(left) == 1 and len(right) == 1 and known == wanted:
        try:
            env.unify(left[0], right[0])
        except ShapeMismatch:
            raise unfit from None
    else:
        raise unfit
    return env.resolve(target)


def reshape_grad(c: Ctx) -> Expr:
    symbolic = [d for d in c.shapes[0] if isinstance(d, str)]
    if len(symbolic) > 1:  # names, which the numbers' evaluation turns into sizes
        return Reshape.build([c.g], [c.out_shape], shape=tuple(c.shapes[0]))
    shape = tuple(d if isinstance(d, int) else -1 for d in c.shapes[0])
    return Reshape.build([c.g], [c.out_shape], shape=shape)


register(
    Op(
        name="reshape",
        syntax="reshape",
        arity=1,
        shape=reshape_shape,
        sympy=lambda args, shapes, p: Reshape.build(args, shapes, **p),
        backward=(reshape_grad,),
        torch=view_torch(lambda shape, p: reshape_target(ShapeEnv(), p)),  # (names are sizes by now)
        torch_aliases=("torch.reshape", "torch.Tensor.reshape", "torch.Tensor.view"),
        grad_fn="ViewBackward0",
        summary="reshape(x, (a, b, …)): the same entries in row-major order under a new shape, one size may be -1 "
        "(x.view(-1, 96)), y[i, j] = x[k, l] where i·b + j is the row-major position of [k, l]; "
        "x̄ = reshape(ȳ, shape of x)",
        title={"en": "reshape", "zh": "重塑形状"},
        example="x: (N, 3, 8)\nreshape(x, (-1, 4, 6))",
        parameters=(Param("shape", "shape"),),
        sympy_class=Reshape,
        printing=Printing(
            text="reshape({0}, {shape})",
            latex=r"\operatorname{{reshape}}\left({0}, {shape}\right)",
            lang="reshape({0}, {shape})",
            torch="{0}.reshape({shape})",
        ),
    )
)

# --- broadcast_to --------------------------------------------------------------------------------


class BroadcastTo(sb.TensorOp):
    param_names = ("shape",)


def broadcast_to_shape(env: ShapeEnv, shapes, params) -> Shape:
    target = params.get("shape")
    if not isinstance(target, tuple):
        raise ShapeMismatch("broadcast_to needs the shape to broadcast to: broadcast_to(x, (n, d))")
    s = env.resolve(shapes[0])
    if len(s) > len(target):
        raise ShapeMismatch(f"broadcast_to cannot lower the rank: {fmt(s)} to {fmt(target)}")
    for have, want in zip(reversed(s), reversed(target)):
        if have != 1:
            try:
                env.unify(have, want)
            except ShapeMismatch:
                raise ShapeMismatch(f"broadcast_to: {fmt(s)} does not broadcast to {fmt(target)}") from None
    return env.resolve(target)


register(
    Op(
        name="broadcast_to",
        syntax="broadcast_to",
        arity=1,
        shape=broadcast_to_shape,
        sympy=lambda args, shapes, p: BroadcastTo.build(args, shapes, **p),
        # the copies' gradients add up: summed back over the axes the broadcast created
        backward=(lambda c: sum_to(c.g, c.out_shape, c.shapes[0]),),
        torch=lambda torch, args, p: torch.broadcast_to(args[0], p["shape"]),
        grad_fn="ExpandBackward0",
        summary="broadcast_to(x, (n, d)): x repeated along new leading axes and its size-1 axes, as NumPy "
        "broadcasting does implicitly (sizes are numbers or dimension names); x̄ = ȳ summed over those axes. "
        "backstep writes it where a gradient relies on broadcasting inside @ or a reduction",
        title={"en": "broadcast", "zh": "广播"},
        example="b: (d,); X: (n, d)\nsum(broadcast_to(b, (n, d)) * X)",
        parameters=(Param("shape", "shape"),),
        sympy_class=BroadcastTo,
        printing=Printing(
            text="broadcast_to({0}, {shape})",
            latex=r"\operatorname{{broadcast}}_{{{shape}}}\left({0}\right)",
            lang="broadcast_to({0}, {shape})",
            torch="torch.broadcast_to({0}, {shape})",
        ),
    )
)

# --- swapaxes ------------------------------------------------------------------------------------


class SwapAxes(sb.TensorOp):
    param_names = ("axis1", "axis2")


def swapaxes_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) < 2:
        raise ShapeMismatch(f"swapaxes needs an array of rank 2 or more, not {fmt(s)}")
    axes = []
    for name in ("axis1", "axis2"):
        axis = params.get(name)
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise ShapeMismatch(f"swapaxes needs {name} as an integer, like swapaxes(x, -1, -2); got {axis!r}")
        if not -len(s) <= axis < len(s):
            raise ShapeMismatch(f"swapaxes: {name} {axis} is out of range for {fmt(s)} (rank {len(s)})")
        axes.append(axis % len(s))
    out = list(s)
    out[axes[0]], out[axes[1]] = s[axes[1]], s[axes[0]]
    return tuple(out)


register(
    Op(
        name="swapaxes",
        syntax="swapaxes",
        arity=1,
        positive_through=True,
        shape_passes_rank=True,
        input_ranks=(2,),  # an unannotated operand is a matrix (swapaxes(A, -1, -2) @ B)
        shape=swapaxes_shape,
        sympy=lambda args, shapes, p: SwapAxes.build(args, shapes, **p),
        # a swap undoes itself: the gradient's entries go back to the places they came from
        backward=(lambda c: SwapAxes.build([c.g], [c.out_shape], **c.params),),
        torch=lambda torch, args, p: torch.swapaxes(args[0], p["axis1"], p["axis2"]),
        # torch.transpose(x, d0, d1) is this op unless it swaps the axes 0 and 1, which is .T's
        # (trace/adapters.py); the aliases have an adapter (trace/einsum_adapters.py): the op has parameters
        torch_aliases=("torch.swapaxes", "torch.swapdims", "torch.Tensor.swapaxes", "torch.Tensor.swapdims"),
        grad_fn="TransposeBackward0",
        summary="swapaxes(x, axis1, axis2): x with two axes exchanged, y[…, j, …, i, …] = x[…, i, …, j, …], as "
        "np.swapaxes and torch.swapaxes / torch.transpose(x, d0, d1); swapaxes(x, -1, -2) transposes each matrix "
        "of a stack (.T reverses all the axes); x̄ = swapaxes(ȳ, axis1, axis2)",
        title={"en": "swap axes", "zh": "交换轴"},
        example="X: (2, 3, 4); Y: (4, 3, 2)\nsum(swapaxes(X, 0, 2) * Y)",
        parameters=(
            Param("axis1", "axis", aliases=("dim0",), required=True),
            Param("axis2", "axis", aliases=("dim1",), required=True),
        ),
        sympy_class=SwapAxes,
        printing=Printing(
            text="swapaxes({0}, {axis1}, {axis2})",
            latex=r"\operatorname{{swapaxes}}_{{{axis1},{axis2}}}\left({0}\right)",
            lang="swapaxes({0}, {axis1}, {axis2})",
            torch="torch.swapaxes({0}, {axis1}, {axis2})",
        ),
    )
)

# --- flip ----------------------------------------------------------------------------------------


class Flip(sb.TensorOp):
    param_names = ("axis",)


def flip_axes(shape: Shape, params: dict) -> tuple[int, ...]:
    """flip's axes, each counted from the start (None: all of them, as np.flip); an axis out of
    range or given twice is refused."""
    given = params.get("axis")
    if given is None:
        return tuple(range(len(shape)))
    axes = (given,) if isinstance(given, int) and not isinstance(given, bool) else given
    if not isinstance(axes, tuple) or not axes or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
        raise ShapeMismatch(f"flip needs axis as an integer or a tuple of integers, like flip(x, 0); got {given!r}")
    seen: dict[int, int] = {}
    for axis in axes:
        if not -len(shape) <= axis < len(shape):
            raise ShapeMismatch(f"flip: axis {axis} is out of range for {fmt(shape)} (rank {len(shape)})")
        if axis % len(shape) in seen:
            raise ShapeMismatch(f"flip: axis {axis} is given twice (as {seen[axis % len(shape)]} and {axis})")
        seen[axis % len(shape)] = axis
    return tuple(seen)


def flip_of(args, shapes, params) -> Expr:
    """flip as a SymPy term; axis=None is written out as every axis, which torch.flip needs."""
    axis = params.get("axis")
    return Flip.build(args, shapes, axis=flip_axes(shapes[0], params) if axis is None else axis)


def flip_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("flip needs an array, not a scalar")
    flip_axes(s, params)
    return s


def flip_torch_code(operands, params) -> str:
    """torch.flip takes its dims as a tuple, one axis too."""
    axis = params["axis"]
    dims = (axis,) if isinstance(axis, int) else axis
    return f"torch.flip({operands[0]}, {fmt(dims)})"


register(
    Op(
        name="flip",
        syntax="flip",
        arity=1,
        positive_through=True,
        shape_passes_rank=True,
        shape=flip_shape,
        sympy=flip_of,
        # a flip undoes itself: the gradient's entries go back to the places they came from
        backward=(lambda c: flip_of([c.g], [c.out_shape], c.params),),
        torch=lambda torch, args, p: torch.flip(args[0], flip_axes(tuple(args[0].shape), p)),
        # torch.flip has parameters: tracing it needs an adapter of its own in trace/adapters.py
        grad_fn="FlipBackward0",
        summary="flip(x, axis): x with the order of its entries reversed along one axis or a tuple of axes "
        "(all of them where no axis is given), y[i] = x[n − 1 − i] along each, as np.flip and "
        "torch.flip(x, dims); x̄ = flip(ȳ, axis)",
        title={"en": "flip", "zh": "翻转"},
        example="x: (N, 3, 4)\nflip(x, (0, -1))",
        parameters=(Param("axis", "ints", aliases=("dims", "dim")),),
        sympy_class=Flip,
        printing=Printing(
            text="flip({0}, {axis})",
            latex=r"\operatorname{{flip}}_{{{axis}}}\left({0}\right)",
            lang="flip({0}, {axis})",
            torch=ByParams(flip_torch_code),
        ),
    )
)

# --- transpose with axes (NumPy's np.transpose(x, axes), torch's permute) -------------------------


class Permute(sb.TensorOp):
    param_names = ("axes",)


def permutation(shape: Shape, params: dict) -> tuple[int, ...]:
    """The axes in their new order, each counted from the start (None: all reversed, as .T)."""
    rank = len(shape)
    given = params.get("axes")
    if given is None:
        return tuple(reversed(range(rank)))
    axes = (given,) if isinstance(given, int) else tuple(given)
    if len(axes) != rank:
        raise ShapeMismatch(f"transpose: axes {axes} name {len(axes)} axes, but {fmt(shape)} has {rank}")
    for a in axes:
        if not -rank <= a < rank:
            raise ShapeMismatch(f"transpose: axis {a} is out of range for {fmt(shape)} (rank {rank})")
    counted = tuple(a % rank for a in axes)
    if len(set(counted)) != rank:
        twice = next(a for a in counted if counted.count(a) > 1)
        raise ShapeMismatch(f"transpose: axis {twice} is given twice in {axes}")
    return counted


def permute_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    return tuple(s[a] for a in permutation(s, params))


def permute_back(c: Ctx) -> Expr:
    """x̄ = ȳ with the inverse permutation: the axis that went to place k comes back from it."""
    order = permutation(c.shapes[0], c.params)
    inverse = tuple(order.index(k) for k in range(len(order)))
    return Permute.build([c.g], [c.out_shape], axes=inverse)


register(
    Op(
        name="permute",
        syntax="transpose",
        arity=1,
        positive_through=True,
        shape_passes_rank=True,
        shape=permute_shape,
        sympy=lambda args, shapes, p: Permute.build(args, shapes, axes=permutation(shapes[0], p)),
        backward=(permute_back,),
        torch=lambda torch, args, p: args[0].permute(permutation(tuple(args[0].shape), p)),
        torch_aliases=("torch.permute", "torch.Tensor.permute"),
        grad_fn="PermuteBackward0",
        summary="transpose(x, axes): x with its axes reordered, axis k of y is axis axes[k] of x, as np.transpose "
        "and torch's permute (no axes: all reversed, as .T); x̄ = transpose(ȳ, the inverse order)",
        title={"en": "axes reordered", "zh": "轴重排"},
        example="X: (2, 3, 4); Y: (2, 4, 3)\nsum(transpose(X, (0, 2, 1)) * Y)",
        parameters=(Param("axes", "ints", aliases=("dims",)),),
        sympy_class=Permute,
        printing=Printing(
            text="transpose({0}, {axes})",
            latex=r"\operatorname{{transpose}}_{{{axes}}}\left({0}\right)",
            lang="transpose({0}, {axes})",
            torch="{0}.permute{axes}",
        ),
    )
)
