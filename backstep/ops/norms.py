"""Normalisation layers: layer_norm and batch_norm (training mode), and the two statistics their
backward steps are written in, x̂ (standardize) and σ (norm_std).

Both layers standardise x over some axes, x̂ = (x − μ) / σ with σ = √(var + ε) (the biased
variance, as torch), then scale and shift it: layer_norm over the last axis with w, b of the
last axis's size, batch_norm over the batch, axis 0 of (N, D) or axes (0, 2, 3) of an NCHW image
(spatial batch norm), with γ, β per feature or channel. The backward step is the closed form a
course prints (CS231n's batch norm), over the M entries each statistic is taken over:

  x̄ = γ ⊙ (M ȳ − Σ ȳ − x̂ ⊙ Σ(ȳ ⊙ x̂)) / (M σ),   γ̄ = Σ ȳ ⊙ x̂,   β̄ = Σ ȳ

(layer norm: the same with ȳ ⊙ w in place of γ ⊙ ȳ, since w varies along the axis summed), each Σ
one sum over all the statistic's axes. The torch functions are torch's own
F.layer_norm and F.batch_norm, so that verification compares the closed form with autograd's.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .registry import register
from .rules import int_product, size_of, sum_to, unify_or
from .spec import ByParams, Ctx, HandWritten, Op, Param, Printing
from .views import Reshape

EPS = Param("eps", "number", 1e-5)
OVER = Param("over", "choice", "last", choices=("last", "batch"))  # layer norm's axis, or batch norm's


# --compact: a normalisation written out by hand is made of some of these (its eps among its constants)
STATISTICS = frozenset({"sqrt", "pow", "var", "std", "rsqrt", "norm_std", "standardize"})
WRITTEN_OUT = HandWritten(STATISTICS, lambda ranks, constants: ({"eps": e} for e in constants))


def reduced_axes(rank: int, over: str) -> tuple[int, ...]:
    """The axes a statistic is taken over: the last one, or the batch's (0, and 2, 3 of NCHW)."""
    if over == "last":
        return (rank - 1,)
    return (0,) if rank == 2 else (0, 2, 3)


def count(shape: Shape, over: str) -> Expr:
    """M: the number of entries each mean and variance is taken over (40, not 5 · 4 · 2)."""
    sizes = [shape[k] for k in reduced_axes(len(shape), over)]
    known = int_product(d for d in sizes if isinstance(d, int))
    symbolic = tuple(d for d in sizes if not isinstance(d, int))
    if not symbolic:
        return sympy.Integer(known)
    return size_of(symbolic) if known == 1 else sympy.Integer(known) * size_of(symbolic)


def keeps_dims(shape: Shape, over: str) -> bool:
    """Whether a sum over the axes must keep them to broadcast back: all but the batch axis of (N, D)."""
    return not (over == "batch" and len(shape) == 2)


def over_axes(e: Expr, shape: Shape, over: str, keepdims: bool) -> Expr:
    """Σ e over the statistic's axes, in one sum (Σ over n, h, w for an NCHW batch norm)."""
    axes = reduced_axes(len(shape), over)
    return sb.SumOp.build([e], [tuple(shape)], axis=axes[0] if len(axes) == 1 else tuple(axes), keepdims=keepdims)


def standardized(x: Expr, shape: Shape, over: str, eps: float) -> Expr:
    return Standardized.build([x], [shape], over=over, eps=eps)


def sigma(x: Expr, shape: Shape, over: str, eps: float) -> Expr:
    return NormStd.build([x], [shape], over=over, eps=eps)


def closed_form(g: Expr, x: Expr, shape: Shape, over: str, eps: float) -> Expr:
    """x̄ of x̂ = (x − μ) / σ for the upstream gradient g: (M g − Σ g − x̂ ⊙ Σ(g ⊙ x̂)) / (M σ)."""
    m, keep = count(shape, over), keeps_dims(shape, over)
    xh = standardized(x, shape, over, eps)
    total = over_axes(g, shape, over, keep)
    projection = over_axes(g * xh, shape, over, keep)
    return (m * g - total - xh * projection) / (m * sigma(x, shape, over, eps))


def check_statistic(env: ShapeEnv, shape: Shape, over: str, eps: float, name: str) -> Shape:
    """x's shape, checked for the statistic: a positive eps, a rank it is taken at, and (over the
    batch) more than one entry per feature, as torch demands when training."""
    s = env.resolve(shape)
    if not eps > 0:
        raise ShapeMismatch(f"{name}: eps must be positive, not {eps!r} (it keeps √(var + eps) away from 0)")
    if over == "last" and len(s) == 0:
        raise ShapeMismatch(f"{name} needs an array of rank at least 1, not a scalar")
    if over == "batch":
        if len(s) not in (2, 4):
            raise ShapeMismatch(f"{name} needs x of rank 2 (N, D) or 4 (N, C, H, W), got {fmt(s)}")
        sizes = [s[k] for k in reduced_axes(len(s), over)]
        if all(isinstance(d, int) for d in sizes) and int_product(sizes) == 1:
            raise ShapeMismatch(
                f"{name} over a batch of one value per {'feature' if len(s) == 2 else 'channel'} ({fmt(s)}): "
                "its variance is 0 and torch refuses it in training mode"
            )
    return s


def statistic_shape(env: ShapeEnv, shapes, params) -> Shape:
    return check_statistic(env, shapes[0], params["over"], params["eps"], "standardize")


def sigma_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = check_statistic(env, shapes[0], params["over"], params["eps"], "norm_std")
    axes = reduced_axes(len(s), params["over"])
    return tuple(1 if k in axes else d for k, d in enumerate(s))


def torch_standardize(torch, x, over: str, eps: float):
    if over == "last":
        return torch.nn.functional.layer_norm(x, x.shape[-1:], eps=eps)
    return torch.nn.functional.batch_norm(x, None, None, training=True, eps=eps)


def norm_grad_fn(over: str) -> str:
    return "NativeLayerNormBackward0" if over == "last" else "NativeBatchNormBackward0"


def eps_kw(p: dict) -> str:
    return "" if p.get("eps") in (None, EPS.default) else f", eps={p['eps']!r}"


def eps_latex(p: dict) -> str:
    return "" if p.get("eps") in (None, EPS.default) else rf";\, \epsilon={p['eps']!r}"


def is_name(operand: str) -> bool:
    """A printed operand that a hat or a subscript can sit on (a name, not an expression)."""
    return bool(operand) and not any(ch in operand for ch in " ()[],+-*/@")


def unwrapped(operand: str, left: str = "(", right: str = ")") -> str:
    """The operand without the parentheses the printer put around it: a hat or a subscript groups it."""
    if not (operand.startswith(left) and operand.endswith(right)):
        return operand
    inner, depth = operand[len(left) : -len(right)], 0
    for ch in inner:  # (a) + (b) is not wrapped as a whole
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0:
            return operand
    return inner


def latex_group(operand: str) -> str:
    return unwrapped(operand, r"\left(", r"\right)")


# --- x̂: standardize ------------------------------------------------------------------------------


class Standardized(sb.TensorOp):
    """x̂ = (x − μ) / √(var + ε) over the last axis or over the batch."""

    param_names = ("over", "eps")


def hat_text(o, p) -> str:
    return o[0][0] + "\u0302" + o[0][1:] if is_name(o[0]) else f"hat({unwrapped(o[0])})"


def hat_latex(o, p) -> str:
    return rf"\hat{{{o[0]}}}" if is_name(o[0]) else rf"\widehat{{{latex_group(o[0])}}}"


def standardize_code(o, p) -> str:
    if p["over"] == "last":
        return f"torch.nn.functional.layer_norm({o[0]}, {o[0]}.shape[-1:], eps={p['eps']!r})"
    return f"torch.nn.functional.batch_norm({o[0]}, None, None, training=True, eps={p['eps']!r})"


register(
    Op(
        name="standardize",
        hand_written=HandWritten(  # (x - mean) / sqrt(var + eps), over the last axis or the batch's
            STATISTICS, lambda ranks, constants: ({"over": o, "eps": e} for o in ("last", "batch") for e in constants)
        ),
        syntax="standardize",
        arity=1,
        shape=statistic_shape,
        sympy=lambda args, shapes, p: standardized(args[0], shapes[0], p["over"], p["eps"]),
        backward=(lambda c: closed_form(c.g, c.a, c.shapes[0], c.params["over"], c.params["eps"]),),
        torch=lambda torch, args, p: torch_standardize(torch, args[0], p["over"], p["eps"]),
        grad_fn=lambda ranks, consts, p: norm_grad_fn(p["over"]),
        summary='x̂ = (x − μ) / √(var + eps), over the last axis (over="last": layer norm without w, b) or the '
        'batch (over="batch": axis 0 of (N, D), axes 0, 2, 3 of NCHW); over the M entries, '
        "x̄ = (M ȳ − Σ ȳ − x̂ ⊙ Σ(ȳ ⊙ x̂)) / (M σ)",
        title={"en": "standardization", "zh": "标准化"},
        example='x: (N, 5)\nstandardize(x, over="batch")',
        parameters=(OVER, EPS),
        sympy_class=Standardized,
        printing=Printing(
            text=ByParams(hat_text),
            latex=ByParams(hat_latex),
            lang="standardize({0}{params_kw})",
            torch=ByParams(standardize_code),
        ),
    )
)

# --- σ: norm_std ---------------------------------------------------------------------------------


class NormStd(sb.TensorOp):
    """σ = √(var + ε), the biased variance over the statistic's axes, kept so that it broadcasts."""

    param_names = ("over", "eps")


def sigma_text(o, p) -> str:
    return f"σ_{o[0]}" if is_name(o[0]) else f"σ_({unwrapped(o[0])})"


def sigma_code(o, p) -> str:
    dims = "-1" if p["over"] == "last" else f"[0, *range(2, {o[0]}.dim())]"
    return f"torch.sqrt(torch.var({o[0]}, dim={dims}, correction=0, keepdim=True) + {p['eps']!r})"


def sigma_torch(torch, args, p):
    x = args[0]
    dims = reduced_axes(x.dim(), p["over"])
    return torch.sqrt(torch.var(x, dim=dims, correction=0, keepdim=True) + p["eps"])


register(
    Op(
        name="norm_std",
        syntax="norm_std",
        arity=1,
        shape=sigma_shape,
        sympy=lambda args, shapes, p: sigma(args[0], shapes[0], p["over"], p["eps"]),
        # ∂σ/∂x = (x − μ) / (M σ) = x̂ / M
        backward=(
            lambda c: (
                c.g
                * standardized(c.a, c.shapes[0], c.params["over"], c.params["eps"])
                / count(c.shapes[0], c.params["over"])
            ),
        ),
        torch=sigma_torch,
        grad_fn="SqrtBackward0",
        summary="σ = √(var + eps) of a normalisation (biased variance, over the axes of standardize's over=), "
        "the reduced axes kept; x̄ = σ̄ ⊙ x̂ / M",
        title={"en": "normalization scale", "zh": "归一化标准差"},
        example="x: (N, 5)\nnorm_std(x) * x",
        parameters=(OVER, EPS),
        sympy_class=NormStd,
        printing=Printing(
            text=ByParams(sigma_text),
            latex=ByParams(lambda o, p: rf"\sigma_{{{latex_group(o[0])}}}"),
            lang="norm_std({0}{params_kw})",
            torch=ByParams(sigma_code),
        ),
    )
)

# --- the layers ----------------------------------------------------------------------------------


def affine_shape(env: ShapeEnv, shape: Shape, size, what: str, name: str, layer: str) -> None:
    """A scale or shift: a scalar, or a vector of the normalised feature's size."""
    s = env.resolve(shape)
    if len(s) == 0:
        return
    if len(s) != 1:
        raise ShapeMismatch(f"{layer}: {name} must have the shape ({size},) of {what}, not {fmt(s)}")
    unify_or(env, s[0], size, f"{layer}: {name} must have the shape ({env.find(size)},) of {what}, not {fmt(s)}")


def layer_norm_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = check_statistic(env, shapes[0], "last", params["eps"], "layer_norm")
    for shape, name in zip(shapes[1:], ("w", "b")):
        affine_shape(env, shape, s[-1], "x's last axis", name, "layer_norm")
    return env.resolve(s)


def batch_norm_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = check_statistic(env, shapes[0], "batch", params["eps"], "batch_norm")
    what = "x's features (axis 1)" if len(s) == 2 else "x's channels (axis 1)"
    for shape, name in zip(shapes[1:], ("gamma", "beta")):
        affine_shape(env, shape, s[1], what, name, "batch_norm")
    return env.resolve(s)


def full(torch, v, x, size: int):
    """A scale or shift as the vector torch's function takes (a number or a scalar broadcast), in
    memory of its own: torch's CPU batch norm reads an expanded (stride-0) weight wrongly."""
    return torch.broadcast_to(torch.as_tensor(v, dtype=x.dtype), (size,)).contiguous()


def layer_norm_torch(torch, args, p):
    x, w, b = args
    d = x.shape[-1]
    return torch.nn.functional.layer_norm(x, (d,), full(torch, w, x, d), full(torch, b, x, d), eps=p["eps"])


def batch_norm_torch(torch, args, p):
    x, g, b = args
    c = x.shape[1]
    return torch.nn.functional.batch_norm(
        x, None, None, full(torch, g, x, c), full(torch, b, x, c), training=True, eps=p["eps"]
    )


def per_channel(v: Expr, v_shape: Shape, x_shape: Shape) -> Expr:
    """γ laid along axis 1 of an NCHW image, reshape(γ, (C, 1, 1)) as a conv bias is; as it is for
    (N, D) or a scalar."""
    if len(x_shape) != 4 or len(v_shape) != 1:
        return v
    size = v_shape[0] if isinstance(v_shape[0], int) else -1
    return Reshape.build([v], [v_shape], shape=(size, 1, 1))


def affine_grad(e: Expr, x_shape: Shape, v_shape: Shape, over: str) -> Expr:
    """Σ e over every axis but the affine parameter's (a scalar parameter: over all of them)."""
    if over == "last":
        return sum_to(e, x_shape, v_shape)
    out = over_axes(e, x_shape, over, keepdims=False)
    return out if v_shape else sb.SumOp.build([out], [(x_shape[1],)], axis=None, keepdims=False)


def ln_x(c: Ctx) -> Expr:
    return closed_form(c.g * c.b, c.a, c.shapes[0], "last", c.params["eps"])


def bn_x(c: Ctx) -> Expr:
    x_shape = c.shapes[0]
    return per_channel(c.b, c.shapes[1], x_shape) * closed_form(c.g, c.a, x_shape, "batch", c.params["eps"])


def scale_grad(over: str):
    def rule(c: Ctx) -> Expr:
        xh = standardized(c.a, c.shapes[0], over, c.params["eps"])
        return affine_grad(c.g * xh, c.shapes[0], c.shapes[1], over)

    return rule


def shift_grad(over: str):
    return lambda c: affine_grad(c.g, c.shapes[0], c.shapes[2], over)


def layer_text(name: str):
    return lambda o, p: f"{name}({o[0]}, {o[1]}, {o[2]}{eps_kw(p)})"


def layer_latex(short: str):
    return lambda o, p: rf"\operatorname{{{short}}}\left({o[0]};\, {o[1]}, {o[2]}{eps_latex(p)}\right)"


def affine_code(v: str, x: str, size: str) -> str:
    """A scale or shift as torch's function takes it: a number or a scalar made a vector."""
    try:
        float(v)
    except ValueError:
        return f"{v}.expand({size}).contiguous()"
    return f"torch.full({size}, {v}, dtype={x}.dtype, device={x}.device)"


def layer_norm_code(o, p) -> str:
    size = f"{o[0]}.shape[-1:]"
    w, b = affine_code(o[1], o[0], size), affine_code(o[2], o[0], size)
    return f"torch.nn.functional.layer_norm({o[0]}, {size}, {w}, {b}, eps={p['eps']!r})"


def batch_norm_code(o, p) -> str:
    size = f"{o[0]}.shape[1:2]"
    g, b = affine_code(o[1], o[0], size), affine_code(o[2], o[0], size)
    return f"torch.nn.functional.batch_norm({o[0]}, None, None, {g}, {b}, training=True, eps={p['eps']!r})"


class LayerNorm(sb.TensorOp):
    """layer_norm(x, w, b) = x̂ ⊙ w + b, x̂ standardised over the last axis."""

    n_operands = 3
    param_names = ("eps",)


register(
    Op(
        name="layer_norm",
        hand_written=WRITTEN_OUT,
        syntax="layer_norm",
        arity=3,
        shape=layer_norm_shape,
        sympy=lambda args, shapes, p: LayerNorm.build(args, shapes, **p),
        backward=(ln_x, scale_grad("last"), shift_grad("last")),
        torch=layer_norm_torch,
        torch_aliases=("torch.nn.functional.layer_norm", "torch.nn.LayerNorm"),
        grad_fn="NativeLayerNormBackward0",
        summary="layer_norm(x, w, b, eps=1e-5) = x̂ ⊙ w + b, x̂ = (x − μ) / √(var + eps) over the last axis (D "
        "entries), as F.layer_norm(x, (D,), w, b); x̄ = (D ȳ ⊙ w − Σ ȳ ⊙ w − x̂ ⊙ Σ(ȳ ⊙ w ⊙ x̂)) / (D σ), "
        "w̄ = Σ ȳ ⊙ x̂, b̄ = Σ ȳ over the leading axes; without w, b: layer_norm(x, 1, 0)",
        title={"en": "layer normalization", "zh": "层归一化"},
        example="x: (N, 3, 5); w: (5,); b: (5,)\nlayer_norm(x, w, b)",
        arg_names=("x", "w", "b"),
        parameters=(EPS,),
        sympy_class=LayerNorm,
        input_ranks=(2, 1, 1),
        printing=Printing(
            text=ByParams(layer_text("layer_norm")),
            latex=ByParams(layer_latex("LN")),
            lang=ByParams(layer_text("layer_norm")),
            torch=ByParams(layer_norm_code),
        ),
    )
)


class BatchNorm(sb.TensorOp):
    """batch_norm(x, γ, β) = x̂ ⊙ γ + β, x̂ standardised over the batch (and the image's positions)."""

    n_operands = 3
    param_names = ("eps",)


register(
    Op(
        name="batch_norm",
        hand_written=WRITTEN_OUT,
        syntax="batch_norm",
        arity=3,
        shape=batch_norm_shape,
        sympy=lambda args, shapes, p: BatchNorm.build(args, shapes, **p),
        backward=(bn_x, scale_grad("batch"), shift_grad("batch")),
        torch=batch_norm_torch,
        torch_aliases=(
            "torch.nn.functional.batch_norm",
            "torch.nn.BatchNorm1d",
            "torch.nn.BatchNorm2d",
        ),
        grad_fn="NativeBatchNormBackward0",
        summary="batch_norm(x, gamma, beta, eps=1e-5) in training mode = x̂ ⊙ γ + β, x̂ = (x − μ) / √(var + eps) "
        "over the batch (axis 0 of (N, D); axes 0, 2, 3 of (N, C, H, W)), biased variance, as "
        "F.batch_norm(x, None, None, γ, β, training=True); over the M entries per feature, "
        "x̄ = γ ⊙ (M ȳ − Σ ȳ − x̂ ⊙ Σ(ȳ ⊙ x̂)) / (M σ), γ̄ = Σ ȳ ⊙ x̂, β̄ = Σ ȳ",
        title={"en": "batch normalization", "zh": "批归一化"},
        example="x: (N, 3); gamma: (3,); beta: (3,)\nbatch_norm(x, gamma, beta)",
        arg_names=("x", "gamma", "beta"),
        parameters=(EPS,),
        sympy_class=BatchNorm,
        input_ranks=(2, 1, 1),
        printing=Printing(
            text=ByParams(layer_text("batch_norm")),
            latex=ByParams(layer_latex("BN")),
            lang=ByParams(layer_text("batch_norm")),
            torch=ByParams(batch_norm_code),
        ),
    )
)
