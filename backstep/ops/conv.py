"""Convolution (4-d NCHW): conv2d and its two gradient ops, and the image geometry that pooling
shares (pool.py).

Images are NCHW, x (N, C, H, W); kernels are (F, C, kh, kw). N, C and F may be symbolic; the
spatial sizes must be known integers (the output size depends on them through a floor division).
stride, padding and kernel_size are an int or an (h, w) pair, as torch takes them. Each op's
backward is an op of this family or of pooling, written as the CNN literature writes it:
  conv2d      y = x ⋆ K       K̄ = x ⋆ ȳ  (conv2d_grad_weight),  x̄ = ȳ ∗ rot180(K)  (conv2d_grad_input)
  max_pool2d  y = maxpool(x)  x̄ = route(ȳ → argmax x)  (maxpool_route; its adjoint is maxpool_gather)
  avg_pool2d  y = avgpool(x)  x̄ = spread(ȳ) / k²  (avgpool_spread; its adjoint is k² avgpool)
The torch functions of the gradient ops compute the printed formulas literally (dilate, pad,
flip and cross-correlate; unfold, pick the arg-max, fold), never with torch's own backward
kernels, so that verification compares two independent computations.

Each gradient op is linear in its gradient operand, so its own backward rules are the other ops
of the family (the double backward of a convolution is again a convolution). Printing: the
literature's notation where the parameters are the plain ones (stride 1, no padding: x ⋆ K), and
where they are not, the same notation with pad/dilate/crop written out.
"""

from __future__ import annotations

from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .registry import register
from .rules import unify_or
from .spec import PREC_POSTFIX, ByParams, Ctx, Op, Param, Printing

PREC_CONV = 15  # x ⋆ K: tighter than +, looser than ⊙ (a product around it adds parentheses)
SUBSCRIPT = str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋")


def hw_pair(params: dict, name: str, minimum: int, default=None) -> tuple[int, int]:
    """An int-or-pair parameter as an (h, w) pair, checked against its least value."""
    value = params.get(name)
    if value is None:
        value = default
    if value is None:
        raise ShapeMismatch(f"{name} is required (an integer or a pair (h, w))")
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if not (isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value)):
        raise ShapeMismatch(f"{name} must be an integer or a pair of integers (h, w), not {value!r}")
    if min(value) < minimum:
        raise ShapeMismatch(f"{name} must be at least {minimum}, not {value!r}")
    return value


def nchw(env: ShapeEnv, shape: Shape, what: str, op: str) -> Shape:
    """A 4-d NCHW shape whose last two (spatial) sizes are known integers."""
    s = env.resolve(shape)
    if len(s) != 4:
        raise ShapeMismatch(f"{op} needs a 4-d {what}, got {fmt(s)}")
    if not all(isinstance(d, int) for d in s[2:]):
        raise ShapeMismatch(
            f"{op}: the spatial sizes of the {what} must be known integers, got {fmt(s)} "
            "(annotate them, e.g. x: (N, 3, 12, 12), or give --shape x=N,3,12,12)"
        )
    return s


def conv_out(size: int, kernel: int, stride: int, padding: int, op: str) -> int:
    if size + 2 * padding < kernel:
        raise ShapeMismatch(f"{op}: a window of {kernel} does not fit in {size} (padded by {padding})")
    return (size + 2 * padding - kernel) // stride + 1


def conv_geometry(params: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    return hw_pair(params, "stride", 1, 1), hw_pair(params, "padding", 0, 0)


def given_size(params: dict, smallest: tuple[int, int], op: str, what: str = "input") -> tuple[int, int]:
    """The spatial size a gradient op produces: its `size` parameter, or the smallest that fits."""
    if params.get("size") is None:
        if min(smallest) < 1:
            raise ShapeMismatch(f"{op}: no {what} size fits these shapes, stride and padding")
        return smallest
    return hw_pair(params, "size", 1)


def size_param(actual: Shape, smallest: tuple[int, int]) -> tuple[int, int] | None:
    """The `size` a gradient op needs to give `actual` (None where the smallest fitting size is it)."""
    actual = tuple(actual)
    return None if actual == smallest else actual


def check_fits(image_size, kernel, s, p, out, op: str) -> None:
    got = tuple(conv_out(image_size[i], kernel[i], s[i], p[i], op) for i in (0, 1))
    if got != tuple(out):
        raise ShapeMismatch(
            f"{op}: a {image_size[0]}×{image_size[1]} image and a {kernel[0]}×{kernel[1]} window give a "
            f"{got[0]}×{got[1]} output, not {out[0]}×{out[1]}"
        )


def smallest_input(g: Shape, k: Shape, s, p) -> tuple[int, int]:
    return tuple((g[2 + i] - 1) * s[i] - 2 * p[i] + k[2 + i] for i in (0, 1))


def smallest_kernel(x: Shape, g: Shape, s, p) -> tuple[int, int]:
    return tuple(x[2 + i] + 2 * p[i] - (g[2 + i] - 1) * s[i] for i in (0, 1))


# printing: sizes as subscripts, and a parameter that is not the plain one written out


def sub_text(value) -> str:
    """2 -> ₂, (2, 3) -> ₂ₓ₃: a size as a Unicode subscript."""
    if isinstance(value, tuple):
        if value[0] == value[1]:
            value = value[0]
        else:
            return "ₓ".join(str(v).translate(SUBSCRIPT) for v in value)
    return str(value).translate(SUBSCRIPT)


def sub_latex(value) -> str:
    if isinstance(value, tuple):
        value = value[0] if value[0] == value[1] else rf"{value[0]} \times {value[1]}"
    return f"{value}"


def is_plain(value, plain: int) -> bool:
    return value is None or value == plain or value == (plain, plain)


def wrap_text(name: str, value, inner: str, plain: int) -> str:
    return inner if is_plain(value, plain) else f"{name}{sub_text(value)}({inner})"


def wrap_latex(name: str, value, inner: str, plain: int) -> str:
    if is_plain(value, plain):
        return inner
    return rf"\operatorname{{{name}}}_{{{sub_latex(value)}}}\left({inner}\right)"


# backward rules


def conv_params(c: Ctx) -> dict:
    return {"stride": c.params.get("stride", 1), "padding": c.params.get("padding", 0)}


def grad_input(g, g_shape, k, k_shape, x_shape, params) -> Expr:
    s, p = conv_geometry(params)
    size = size_param(x_shape[2:], smallest_input(g_shape, k_shape, s, p))
    return Conv2dGradInput.build([g, k], [g_shape, k_shape], **params, size=size)


def grad_weight(x, x_shape, g, g_shape, k_shape, params) -> Expr:
    s, p = conv_geometry(params)
    size = size_param(k_shape[2:], smallest_kernel(x_shape, g_shape, s, p))
    return Conv2dGradWeight.build([x, g], [x_shape, g_shape], **params, size=size)


def conv_of(x, x_shape, k, k_shape, params) -> Expr:
    return Conv2d.build([x, k], [x_shape, k_shape], **params)


CONV_PARAMS = (Param("stride", "pair", 1), Param("padding", "pair", 0))
CONV_GRAD_PARAMS = (*CONV_PARAMS, Param("size", "pair"))

# --- conv2d --------------------------------------------------------------------------------------


class Conv2d(sb.TensorOp):
    """conv2d(x, K): the cross-correlation x ⋆ K of NCHW images with (F, C, kh, kw) kernels."""

    n_operands = 2
    param_names = ("stride", "padding")


def conv2d_shape(env: ShapeEnv, shapes, params) -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", "conv2d")
    k = nchw(env, shapes[1], "kernel K (F, C, kh, kw)", "conv2d")
    s, p = conv_geometry(params)
    unify_or(env, x[1], k[1], f"conv2d: x {fmt(x)} has {x[1]} channels, the kernel {fmt(k)} expects {k[1]}")
    return (x[0], k[0]) + tuple(conv_out(x[2 + i], k[2 + i], s[i], p[i], "conv2d") for i in (0, 1))


def conv_torch(torch, args, p):
    return torch.nn.functional.conv2d(args[0], args[1], stride=p["stride"], padding=p["padding"])


def conv2d_text(o, p):
    if is_plain(p["stride"], 1) and is_plain(p["padding"], 0):
        return f"{o[0]} ⋆ {o[1]}"
    return f"conv2d({o[0]}, {o[1]}{p['params_kw']})"


def conv2d_latex(o, p):
    notes = []
    if not is_plain(p["stride"], 1):
        notes.append(f"s={sub_latex(p['stride'])}")
    if not is_plain(p["padding"], 0):
        notes.append(f"p={sub_latex(p['padding'])}")
    sep = r",\,"
    star = rf"\star_{{{sep.join(notes)}}}" if notes else r"\star"
    return f"{o[0]} {star} {o[1]}"


register(
    Op(
        name="conv2d",
        syntax="conv2d",
        arity=2,
        shape=conv2d_shape,
        sympy=lambda args, shapes, p: conv_of(args[0], shapes[0], args[1], shapes[1], p),
        backward=(
            lambda c: grad_input(c.g, c.out_shape, c.b, c.shapes[1], c.shapes[0], conv_params(c)),
            lambda c: grad_weight(c.a, c.shapes[0], c.g, c.out_shape, c.shapes[1], conv_params(c)),
        ),
        torch=conv_torch,
        torch_aliases=("torch.nn.functional.conv2d", "torch.nn.Conv2d"),
        grad_fn="ConvolutionBackward0",
        summary="conv2d(x, K, stride=s, padding=p), NCHW: y[n,f,i,j] = Σ_c,a,b x[n,c,s·i+a−p, s·j+b−p] K[f,c,a,b], "
        "the cross-correlation x ⋆ K (zero padding); K̄ = x ⋆ ȳ, x̄ = ȳ ∗ rot180(K); add a bias b: (F, 1, 1)",
        title={"en": "convolution", "zh": "卷积"},
        example="x: (N, 3, 8, 6); K: (4, 3, 3, 2)\nconv2d(x, K)",
        arg_names=("x", "K"),
        parameters=CONV_PARAMS,
        sympy_class=Conv2d,
        input_ranks=(4, 4),
        printing=Printing(
            text=ByParams(conv2d_text),
            latex=ByParams(conv2d_latex),
            lang="conv2d({0}, {1}{params_kw})",
            torch="torch.nn.functional.conv2d({0}, {1}, stride={stride}, padding={padding})",
            prec=PREC_CONV,
            operand_prec=PREC_POSTFIX,
        ),
    )
)

# --- conv2d_grad_input ---------------------------------------------------------------------------


class Conv2dGradInput(sb.TensorOp):
    """conv2d_grad_input(ȳ, K) = ȳ ∗ rot180(K): the full convolution with the flipped kernel."""

    n_operands = 2
    param_names = ("stride", "padding", "size")


def conv2d_grad_input_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, F, oh, ow)", "conv2d_grad_input")
    k = nchw(env, shapes[1], "kernel K (F, C, kh, kw)", "conv2d_grad_input")
    s, p = conv_geometry(params)
    unify_or(env, g[1], k[0], f"conv2d_grad_input: the gradient {fmt(g)} and the kernel {fmt(k)} differ in F")
    size = given_size(params, smallest_input(g, k, s, p), "conv2d_grad_input")
    check_fits(size, k[2:], s, p, g[2:], "conv2d_grad_input")
    return (g[0], k[1]) + size


def conv2d_grad_input_torch(torch, args, p):
    """ȳ ∗ rot180(K), literally: ȳ dilated by the stride, padded fully (k − 1, less the forward
    padding, and at the end up to x's size), cross-correlated with the flipped kernel."""
    g, k = args
    s, pad = hw_pair(p, "stride", 1, 1), hw_pair(p, "padding", 0, 0)
    gs, ks = tuple(g.shape), tuple(k.shape)
    size = given_size(p, smallest_input(gs, ks, s, pad), "conv2d_grad_input")
    dilated = g.new_zeros(gs[:2] + tuple((gs[2 + i] - 1) * s[i] + 1 for i in (0, 1)))
    dilated[:, :, :: s[0], :: s[1]] = g
    lead = [ks[2 + i] - 1 - pad[i] for i in (0, 1)]
    tail = [lead[i] + size[i] - smallest_input(gs, ks, s, pad)[i] for i in (0, 1)]
    padded = torch.nn.functional.pad(dilated, (lead[1], tail[1], lead[0], tail[0]))
    return torch.nn.functional.conv2d(padded, k.flip(2, 3).transpose(0, 1))


def grad_input_text(o, p):
    return wrap_text("crop", p["padding"], f"{wrap_text('dilate', p['stride'], o[0], 1)} ∗ rot180({o[1]})", 0)


def grad_input_latex(o, p):
    full = rf"{wrap_latex('dilate', p['stride'], o[0], 1)} * \operatorname{{rot}}_{{180}}\left({o[1]}\right)"
    return wrap_latex("crop", p["padding"], full, 0)


def grad_input_code(o, p):
    kw = f"stride={p['stride']}, padding={p['padding']}"
    if p["size"] is None:
        return f"torch.nn.functional.conv_transpose2d({o[0]}, {o[1]}, {kw})"
    h, w = hw_pair(p, "size", 1)
    return f"torch.nn.grad.conv2d_input(({o[0]}.shape[0], {o[1]}.shape[1], {h}, {w}), {o[1]}, {o[0]}, {kw})"


register(
    Op(
        name="conv2d_grad_input",
        syntax="conv2d_grad_input",
        arity=2,
        shape=conv2d_grad_input_shape,
        sympy=lambda args, shapes, p: Conv2dGradInput.build(args, shapes, **p),
        backward=(
            lambda c: conv_of(c.g, c.out_shape, c.b, c.shapes[1], conv_params(c)),
            lambda c: grad_weight(c.g, c.out_shape, c.a, c.shapes[0], c.shapes[1], conv_params(c)),
        ),
        torch=conv2d_grad_input_torch,
        grad_fn="ConvolutionBackward0",
        summary="conv2d's x̄ = ȳ ∗ rot180(K), the full convolution of ȳ (dilated by the stride) with the flipped "
        "kernel, cropped by the padding: x̄[n,c,s·i+a−p, s·j+b−p] += ȳ[n,f,i,j] K[f,c,a,b]; size=(H, W) where "
        "the stride leaves x's size open",
        title={"en": "transposed convolution", "zh": "转置卷积"},
        example="g: (N, 4, 6, 5); K: (4, 3, 3, 2)\nconv2d_grad_input(g, K)",
        arg_names=("g", "K"),
        parameters=CONV_GRAD_PARAMS,
        sympy_class=Conv2dGradInput,
        input_ranks=(4, 4),
        printing=Printing(
            text=ByParams(grad_input_text),
            latex=ByParams(grad_input_latex),
            lang="conv2d_grad_input({0}, {1}{params_kw})",
            torch=ByParams(grad_input_code),
            prec=PREC_CONV,
            operand_prec=PREC_POSTFIX,
        ),
    )
)

# --- conv2d_grad_weight --------------------------------------------------------------------------


class Conv2dGradWeight(sb.TensorOp):
    """conv2d_grad_weight(x, ȳ) = x ⋆ ȳ: the cross-correlation of the input with the gradient."""

    n_operands = 2
    param_names = ("stride", "padding", "size")


def conv2d_grad_weight_shape(env: ShapeEnv, shapes, params) -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", "conv2d_grad_weight")
    g = nchw(env, shapes[1], "upstream gradient (N, F, oh, ow)", "conv2d_grad_weight")
    s, p = conv_geometry(params)
    unify_or(env, x[0], g[0], f"conv2d_grad_weight: the input {fmt(x)} and the gradient {fmt(g)} differ in N")
    size = given_size(params, smallest_kernel(x, g, s, p), "conv2d_grad_weight", "kernel")
    check_fits(x[2:], size, s, p, g[2:], "conv2d_grad_weight")
    return (g[1], x[1]) + size


def conv2d_grad_weight_torch(torch, args, p):
    """x ⋆ ȳ, literally: for each (f, c), the padded input cross-correlated with ȳ dilated by the
    stride, summed over the batch (the batch axis plays the part of the channels)."""
    x, g = args
    s, pad = hw_pair(p, "stride", 1, 1), hw_pair(p, "padding", 0, 0)
    size = given_size(p, smallest_kernel(tuple(x.shape), tuple(g.shape), s, pad), "conv2d_grad_weight")
    padded = torch.nn.functional.pad(x, (pad[1], pad[1], pad[0], pad[0]))
    full = torch.nn.functional.conv2d(padded.transpose(0, 1), g.transpose(0, 1), dilation=s)
    return full[:, :, : size[0], : size[1]].transpose(0, 1)


def grad_weight_text(o, p):
    return f"{wrap_text('pad', p['padding'], o[0], 0)} ⋆ {wrap_text('dilate', p['stride'], o[1], 1)}"


def grad_weight_latex(o, p):
    return rf"{wrap_latex('pad', p['padding'], o[0], 0)} \star {wrap_latex('dilate', p['stride'], o[1], 1)}"


def grad_weight_code(o, p):
    code = (
        f"torch.nn.functional.conv2d({o[0]}.transpose(0, 1), {o[1]}.transpose(0, 1), padding={p['padding']}, "
        f"dilation={p['stride']}).transpose(0, 1)"
    )
    if p["size"] is None:
        return code
    h, w = hw_pair(p, "size", 1)
    return f"{code}[:, :, :{h}, :{w}]"


register(
    Op(
        name="conv2d_grad_weight",
        syntax="conv2d_grad_weight",
        arity=2,
        shape=conv2d_grad_weight_shape,
        sympy=lambda args, shapes, p: Conv2dGradWeight.build(args, shapes, **p),
        backward=(
            lambda c: grad_input(c.b, c.shapes[1], c.g, c.out_shape, c.shapes[0], conv_params(c)),
            lambda c: conv_of(c.a, c.shapes[0], c.g, c.out_shape, conv_params(c)),
        ),
        torch=conv2d_grad_weight_torch,
        grad_fn="TransposeBackward0",
        summary="conv2d's K̄ = x ⋆ ȳ, the cross-correlation of the input with the upstream gradient (dilated by "
        "the stride), summed over the batch: K̄[f,c,a,b] = Σ_n,i,j x[n,c,s·i+a−p, s·j+b−p] ȳ[n,f,i,j]; "
        "size=(kh, kw) where the stride leaves it open",
        title={"en": "kernel gradient", "zh": "卷积核梯度"},
        example="x: (N, 3, 8, 6); g: (N, 4, 6, 5)\nconv2d_grad_weight(x, g)",
        arg_names=("x", "g"),
        out_name="K",
        parameters=CONV_GRAD_PARAMS,
        sympy_class=Conv2dGradWeight,
        input_ranks=(4, 4),
        printing=Printing(
            text=ByParams(grad_weight_text),
            latex=ByParams(grad_weight_latex),
            lang="conv2d_grad_weight({0}, {1}{params_kw})",
            torch=ByParams(grad_weight_code),
            prec=PREC_CONV,
            operand_prec=PREC_POSTFIX,
        ),
    )
)
