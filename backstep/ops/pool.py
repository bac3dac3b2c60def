"""Pooling (4-d NCHW): max_pool2d and avg_pool2d, and the ops their gradients are written with:
maxpool_route and its adjoint maxpool_gather, avgpool_spread.

kernel_size and stride are an int or an (h, w) pair (the stride defaults to the window); the
geometry and the subscript notation are shared with convolution (conv.py).
"""

from __future__ import annotations

from sympy import Expr, S

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .conv import check_fits, conv_out, given_size, hw_pair, nchw, size_param, sub_latex, sub_text
from .registry import register
from .rules import unify_or
from .spec import PREC_ATOM, PREC_POSTFIX, ByParams, Ctx, Op, Param, Printing

POOL_PARAMS = (Param("kernel_size", "pair"), Param("stride", "pair"))


def pool_geometry(params: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    k = hw_pair(params, "kernel_size", 1)
    return k, hw_pair(params, "stride", 1, k)


def pool_shape(env: ShapeEnv, shapes, params, op: str = "pooling") -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", op)
    k, s = pool_geometry(params)
    return x[:2] + tuple(conv_out(x[2 + i], k[i], s[i], 0, op) for i in (0, 1))


def same_batch_and_channels(env: ShapeEnv, a: Shape, b: Shape, op: str) -> None:
    for i, what in ((0, "N"), (1, "C")):
        unify_or(env, a[i], b[i], f"{op}: {fmt(a)} and {fmt(b)} differ in {what}")


def pool_windows(torch, x, k, s):
    """Every pooling window of x as a column: (N, C, kh·kw, number of windows)."""
    n, c = x.shape[:2]
    return torch.nn.functional.unfold(x, k, stride=s).reshape(n, c, k[0] * k[1], -1)


def argmax_index(torch, x, k, s):
    """Where in its window each maximum is (the first of equal maxima, as torch's max_pool2d)."""
    return pool_windows(torch, x.detach(), k, s).argmax(dim=2, keepdim=True)


def pool_torch(name: str):
    def run(torch, args, p):
        return getattr(torch.nn.functional, name)(args[0], p["kernel_size"], stride=p.get("stride"))

    return run


def pool_params(c: Ctx) -> dict:
    return {"kernel_size": c.params["kernel_size"], "stride": c.params.get("stride")}


def window_area(params: dict) -> int:
    k = hw_pair(params, "kernel_size", 1)
    return k[0] * k[1]


# printing: the window (and a stride other than it) as a subscript


def default_stride(p) -> bool:
    return p["stride"] is None or hw_pair(p, "stride", 1) == hw_pair(p, "kernel_size", 1)


def pool_sub_text(p) -> str:
    k = p["kernel_size"]
    if default_stride(p):
        return sub_text(k)
    return f"{sub_text(k)},ₛ{sub_text(p['stride'])}"


def pool_sub_latex(p) -> str:
    k = p["kernel_size"]
    if default_stride(p):
        return sub_latex(k)
    return rf"{sub_latex(k)},\,s={sub_latex(p['stride'])}"


def pool_printing(name: str, text: str, latex: str, lang: str, torch, prec: int = PREC_ATOM) -> Printing:
    """`text`/`latex` with {0}, {1} the operands and {k} the window (and stride) subscript."""
    return Printing(
        text=ByParams(lambda o, p: text.format(*o, k=pool_sub_text(p))),
        latex=ByParams(lambda o, p: latex.format(*o, k=pool_sub_latex(p))),
        lang=lang,
        torch=ByParams(torch),
        prec=prec,
        operand_prec=PREC_POSTFIX,
    )


def pool_code(name: str, x: str, p, extra: str = "") -> str:
    k, s = pool_geometry(p)
    return f"torch.nn.functional.{name}({x}, {k}, stride={s}{extra})"


def argmax_code(x: str, p) -> str:
    return pool_code("max_pool2d", x, p, ", return_indices=True") + "[1]"


# --- max_pool2d ----------------------------------------------------------------------------------


class MaxPool2d(sb.TensorOp):
    param_names = ("kernel_size", "stride")


register(
    Op(
        name="max_pool2d",
        syntax="max_pool2d",
        arity=1,
        shape=lambda env, shapes, p: pool_shape(env, shapes, p, "max_pool2d"),
        sympy=lambda args, shapes, p: MaxPool2d.build(args, shapes, **p),
        backward=(lambda c: MaxPoolRoute.build([c.g, c.a], [c.out_shape, c.shapes[0]], **pool_params(c)),),
        torch=pool_torch("max_pool2d"),
        torch_aliases=("torch.nn.functional.max_pool2d", "torch.nn.MaxPool2d"),
        grad_fn="MaxPool2DWithIndicesBackward0",
        summary="max_pool2d(x, k, stride=k): y[n,c,i,j] = max_a,b<k x[n,c,s·i+a, s·j+b]; x̄ = route(ȳ → argmax x), "
        "each ȳ to the arg-max of its window (the first of tied maxima, as torch)",
        title={"en": "max pooling", "zh": "最大池化"},
        example="x: (N, C, 6, 4)\nmax_pool2d(x, 2)",
        parameters=POOL_PARAMS,
        sympy_class=MaxPool2d,
        input_ranks=(4,),
        printing=pool_printing(
            "max_pool2d",
            "maxpool{k}({0})",
            r"\operatorname{{maxpool}}_{{{k}}}\left({0}\right)",
            "max_pool2d({0}{params_kw})",
            lambda o, p: pool_code("max_pool2d", o[0], p),
        ),
    )
)

# --- maxpool_route -------------------------------------------------------------------------------


class MaxPoolRoute(sb.TensorOp):
    """maxpool_route(ȳ, x): each entry of ȳ sent to the arg-max of its window of x."""

    n_operands = 2
    param_names = ("kernel_size", "stride")


def maxpool_route_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, C, oh, ow)", "maxpool_route")
    x = nchw(env, shapes[1], "input x (N, C, H, W)", "maxpool_route")
    same_batch_and_channels(env, g, x, "maxpool_route")
    pooled = pool_shape(env, [x], params, "maxpool_route")
    if pooled[2:] != g[2:]:
        raise ShapeMismatch(f"maxpool_route: pooling x {fmt(x)} gives {fmt(pooled)}, not the gradient's {fmt(g)}")
    return env.resolve(x)


def maxpool_route_torch(torch, args, p):
    g, x = args
    k, s = pool_geometry(p)
    n, c = x.shape[:2]
    index = argmax_index(torch, x, k, s)
    cols = torch.zeros(index.shape[:2] + (k[0] * k[1], index.shape[3]), dtype=g.dtype)
    cols = cols.scatter(2, index, g.reshape(n, c, 1, -1))
    return torch.nn.functional.fold(cols.reshape(n, c * k[0] * k[1], -1), tuple(x.shape[2:]), k, stride=s)


def route_code(o, p):
    g, x = o
    return (
        f"torch.zeros_like({x}).flatten(2).scatter_add(2, {argmax_code(x, p)}.flatten(2), {g}.flatten(2)).view_as({x})"
    )


register(
    Op(
        name="maxpool_route",
        syntax="maxpool_route",
        arity=2,
        shape=maxpool_route_shape,
        sympy=lambda args, shapes, p: MaxPoolRoute.build(args, shapes, **p),
        backward=(
            lambda c: MaxPoolGather.build([c.g, c.b], [c.out_shape, c.shapes[1]], **pool_params(c)),
            lambda c: S.Zero,
        ),
        torch=maxpool_route_torch,
        grad_fn="Col2ImBackward0",
        summary="max_pool2d's x̄ = route(ȳ → argmax x): x̄[n,c,h,w] = Σ_i,j ȳ[n,c,i,j] 1[(h, w) is the arg-max of "
        "window (i, j) of x]; linear in ȳ (its adjoint is maxpool_gather), constant in x",
        title={"en": "max-pooling routing", "zh": "最大池化路由"},
        example="g: (N, C, 3, 2); x: (N, C, 6, 4)\nmaxpool_route(g, x, 2)",
        arg_names=("g", "x"),
        parameters=POOL_PARAMS,
        sympy_class=MaxPoolRoute,
        input_ranks=(4, 4),
        printing=pool_printing(
            "maxpool_route",
            "route{k}({0} → argmax {1})",
            r"\operatorname{{route}}_{{{k}}}\left({0} \to \operatorname{{argmax}} {1}\right)",
            "maxpool_route({0}, {1}{params_kw})",
            route_code,
        ),
    )
)

# --- maxpool_gather ------------------------------------------------------------------------------


class MaxPoolGather(sb.TensorOp):
    """maxpool_gather(u, x): u read at the arg-max of each window of x (the adjoint of the route)."""

    n_operands = 2
    param_names = ("kernel_size", "stride")


def maxpool_gather_shape(env: ShapeEnv, shapes, params) -> Shape:
    u = nchw(env, shapes[0], "array u (N, C, H, W)", "maxpool_gather")
    x = nchw(env, shapes[1], "input x (N, C, H, W)", "maxpool_gather")
    same_batch_and_channels(env, u, x, "maxpool_gather")
    if u[2:] != x[2:]:
        raise ShapeMismatch(f"maxpool_gather: u {fmt(u)} and x {fmt(x)} must have the same shape")
    return pool_shape(env, [x], params, "maxpool_gather")


def maxpool_gather_torch(torch, args, p):
    u, x = args
    k, s = pool_geometry(p)
    out = pool_shape(ShapeEnv(), [tuple(x.shape)], p)
    return pool_windows(torch, u, k, s).gather(2, argmax_index(torch, x, k, s)).view(out)


def gather_code(o, p):
    u, x = o
    return f"{u}.flatten(2).gather(2, {argmax_code(x, p)}.flatten(2)).view_as({argmax_code(x, p)})"


register(
    Op(
        name="maxpool_gather",
        syntax="maxpool_gather",
        arity=2,
        shape=maxpool_gather_shape,
        sympy=lambda args, shapes, p: MaxPoolGather.build(args, shapes, **p),
        backward=(
            lambda c: MaxPoolRoute.build([c.g, c.b], [c.out_shape, c.shapes[1]], **pool_params(c)),
            lambda c: S.Zero,
        ),
        torch=maxpool_gather_torch,
        grad_fn="ViewBackward0",
        summary="u[argmax x]: u read where each window of x has its maximum, y[n,c,i,j] = u[n,c,s·i+a*, s·j+b*] "
        "with (a*, b*) the arg-max of window (i, j) of x (max_pool2d(x) = u[argmax x] at u = x); the adjoint of "
        "maxpool_route",
        title={"en": "max-pooling gather", "zh": "最大池化取值"},
        example="u: (N, C, 6, 4); x: (N, C, 6, 4)\nmaxpool_gather(u, x, 2)",
        arg_names=("u", "x"),
        parameters=POOL_PARAMS,
        sympy_class=MaxPoolGather,
        input_ranks=(4, 4),
        printing=pool_printing(
            "maxpool_gather",
            "{0}[argmax{k} {1}]",
            r"{0}\left[\operatorname{{argmax}}_{{{k}}} {1}\right]",
            "maxpool_gather({0}, {1}{params_kw})",
            gather_code,
            prec=PREC_POSTFIX,
        ),
    )
)

# --- avg_pool2d ----------------------------------------------------------------------------------


class AvgPool2d(sb.TensorOp):
    param_names = ("kernel_size", "stride")


def spread_of(g, g_shape, x_shape, params) -> Expr:
    k, s = pool_geometry(params)
    smallest = tuple((g_shape[2 + i] - 1) * s[i] + k[i] for i in (0, 1))
    return AvgPoolSpread.build([g], [g_shape], **params, size=size_param(x_shape[2:], smallest))


def avgpool_grad(c: Ctx) -> Expr:
    return spread_of(c.g, c.out_shape, c.shapes[0], pool_params(c)) / window_area(c.params)


register(
    Op(
        name="avg_pool2d",
        syntax="avg_pool2d",
        arity=1,
        shape=lambda env, shapes, p: pool_shape(env, shapes, p, "avg_pool2d"),
        sympy=lambda args, shapes, p: AvgPool2d.build(args, shapes, **p),
        backward=(avgpool_grad,),
        torch=pool_torch("avg_pool2d"),
        torch_aliases=("torch.nn.functional.avg_pool2d", "torch.nn.AvgPool2d"),
        grad_fn="AvgPool2DBackward0",
        summary="avg_pool2d(x, k, stride=k): y[n,c,i,j] = (1/k²) Σ_a,b<k x[n,c,s·i+a, s·j+b]; "
        "x̄ = spread(ȳ) / k², each ȳ shared equally by its window",
        title={"en": "average pooling", "zh": "平均池化"},
        example="x: (N, C, 6, 4)\navg_pool2d(x, 2)",
        parameters=POOL_PARAMS,
        sympy_class=AvgPool2d,
        input_ranks=(4,),
        printing=pool_printing(
            "avg_pool2d",
            "avgpool{k}({0})",
            r"\operatorname{{avgpool}}_{{{k}}}\left({0}\right)",
            "avg_pool2d({0}{params_kw})",
            lambda o, p: pool_code("avg_pool2d", o[0], p),
        ),
    )
)

# --- avgpool_spread ------------------------------------------------------------------------------


class AvgPoolSpread(sb.TensorOp):
    """avgpool_spread(ȳ): each entry of ȳ copied over its window (the adjoint of sum-pooling)."""

    param_names = ("kernel_size", "stride", "size")


def avgpool_spread_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, C, oh, ow)", "avgpool_spread")
    k, s = pool_geometry(params)
    smallest = tuple((g[2 + i] - 1) * s[i] + k[i] for i in (0, 1))
    size = given_size(params, smallest, "avgpool_spread")
    check_fits(size, k, s, (0, 0), g[2:], "avgpool_spread")
    return g[:2] + size


def avgpool_spread_torch(torch, args, p):
    g = args[0]
    k, s = pool_geometry(p)
    n, c = g.shape[:2]
    size = tuple(avgpool_spread_shape(ShapeEnv(), [tuple(g.shape)], p)[2:])
    cols = g.reshape(n, c, 1, -1).expand(n, c, k[0] * k[1], g.shape[2] * g.shape[3])
    return torch.nn.functional.fold(cols.reshape(n, c * k[0] * k[1], -1), size, k, stride=s)


def spread_code(o, p):
    (g,), (k, s) = o, pool_geometry(p)
    extra = ""
    if p["size"] is not None:
        h, w = hw_pair(p, "size", 1)
        extra = (
            f", output_padding=({h} - ({g}.shape[2] - 1) * {s[0]} - {k[0]}, {w} - ({g}.shape[3] - 1) * {s[1]} - {k[1]})"
        )
    ones = f"{g}.new_ones({g}.shape[1], 1, {k[0]}, {k[1]})"
    return f"torch.nn.functional.conv_transpose2d({g}, {ones}, stride={s}, groups={g}.shape[1]{extra})"


register(
    Op(
        name="avgpool_spread",
        syntax="avgpool_spread",
        arity=1,
        shape=avgpool_spread_shape,
        sympy=lambda args, shapes, p: AvgPoolSpread.build(args, shapes, **p),
        backward=(lambda c: window_area(c.params) * AvgPool2d.build([c.g], [c.out_shape], **pool_params(c)),),
        torch=avgpool_spread_torch,
        grad_fn="Col2ImBackward0",
        summary="spread(g): each entry copied over its window, y[n,c,s·i+a, s·j+b] += g[n,c,i,j] for a, b < k "
        "(the adjoint of sum-pooling: avg_pool2d's x̄ = spread(ȳ) / k²); size=(H, W) where the stride leaves it open",
        title={"en": "average-pooling spread", "zh": "平均池化展开"},
        example="g: (N, C, 3, 2)\navgpool_spread(g, 2)",
        arg_names=("g",),
        parameters=(*POOL_PARAMS, Param("size", "pair")),
        sympy_class=AvgPoolSpread,
        input_ranks=(4,),
        printing=pool_printing(
            "avgpool_spread",
            "spread{k}({0})",
            r"\operatorname{{spread}}_{{{k}}}\left({0}\right)",
            "avgpool_spread({0}{params_kw})",
            spread_code,
        ),
    )
)
