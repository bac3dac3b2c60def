"""Losses and the layers that feed them: onehot, cross_entropy, mse, linear, addmm."""

from __future__ import annotations

from sympy import Expr, S

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch, broadcast
from ..shapes import fmt_shape_plain as fmt
from .einsum import BATCH_LETTERS, einsum_of
from .linalg import matmul_sympy
from .reductions import LogSoftmax, softmax_of
from .registry import register
from .rules import index_tensor, size_of, sum_to
from .spec import CLASS_INDEX, ONE_HOT_ROWS, TARGETS_DOMAIN, Ctx, HandWritten, Op, Param, Printing


class OneHot(sb.TensorOp):
    """onehot(t, c): the rows of the c×c identity picked by integer class indices t."""

    param_names = ("classes",)


def onehot_shape(env: ShapeEnv, shapes, params) -> Shape:
    return env.resolve(shapes[0]) + (params["classes"],)


register(
    Op(
        name="onehot",
        targets=(0,),
        makes=ONE_HOT_ROWS,  # (its rows can be cross_entropy's targets: see HandWritten)
        example="t: (n,); Z: (n, c)\nsum(onehot(t, c) * Z)",
        syntax="onehot",
        arity=1,
        shape=onehot_shape,
        sympy=lambda args, shapes, p: OneHot.build(args, shapes, classes=p["classes"]),
        backward=(lambda c: S.Zero,),
        torch=lambda torch, args, p: torch.nn.functional.one_hot(
            index_tensor(torch, args[0], p["classes"], "onehot", "classes"), p["classes"]
        ).to(torch.float64),
        grad_fn=None,
        summary="onehot(t, c): rows of the c×c identity picked by integer class indices t (no gradient)",
        title={"en": "one-hot", "zh": "独热编码"},
        parameters=(Param("classes", "size", required=True),),
        domains=(CLASS_INDEX,),
        sympy_class=OneHot,
        printing=Printing(
            text="onehot({0})",
            latex=r"\operatorname{{onehot}}\left({0}\right)",
            lang="onehot({0}, {classes})",
            torch="torch.nn.functional.one_hot({0}.long(), {classes}).to(torch.float64)",
            code="torch.nn.functional.one_hot({0}.long(), {classes}).to({to})",
        ),
    )
)


class CrossEntropy(sb.TensorOp):
    n_operands = 2
    param_names = ("reduction",)


def cross_entropy_shape(env: ShapeEnv, shapes, params) -> Shape:
    z, t = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(z) != 2:
        raise ShapeMismatch(f"cross_entropy needs logits of shape (batch, classes), got {fmt(z)}")
    if len(t) == 1:
        env.unify(z[0], t[0])
    elif len(t) == 2:
        try:  # probabilities: one row per example, exactly as the logits (torch does not broadcast)
            env.unify(z[0], t[0])
            env.unify(z[1], t[1])
        except ShapeMismatch:
            raise ShapeMismatch(f"targets {fmt(t)} do not match logits {fmt(z)}") from None
    else:
        raise ShapeMismatch(f"targets must be class indices {fmt(z[:1])} or probabilities {fmt(z)}, got {fmt(t)}")
    if params.get("reduction") not in ("mean", "sum"):
        raise ShapeMismatch('reduction must be "mean" or "sum"')
    return ()


def ce_scale(c: Ctx) -> Expr:
    """1/N for the mean over the batch, 1 for the sum."""
    return 1 / size_of(c.shapes[0], 0) if c.params["reduction"] == "mean" else S.One


def ce_grad_logits(c: Ctx) -> Expr:
    z_shape, t_shape = c.shapes
    target = c.b if len(t_shape) == 2 else OneHot.build([c.b], [t_shape], classes=z_shape[1])
    # (softmax(z) − onehot(t)) / N: the closed form, exact for class indices and one-hot or
    # probability targets (rows that sum to 1, the targets' declared domain).
    return c.g * ce_scale(c) * (softmax_of(c.a, z_shape, 1) - target)


def ce_grad_targets(c: Ctx) -> Expr:
    return -c.g * ce_scale(c) * LogSoftmax.build([c.a], [c.shapes[0]], axis=1)


def cross_entropy_torch(torch, args, p):
    z, t = args
    if t.dim() == 1:  # class indices: whole numbers below the number of classes, never truncated
        t = index_tensor(torch, t.detach(), z.shape[-1], "cross_entropy", "classes")
    return torch.nn.functional.cross_entropy(z, t, reduction=p["reduction"])


def cross_entropy_grad_fn(ranks, consts, params) -> str:
    if ranks[1] == 1:
        return "NllLossBackward0"
    return "DivBackward1" if params.get("reduction") == "mean" else "NegBackward0"


register(
    Op(
        name="cross_entropy",
        targets=(1,),
        # softmax, log and a pick (or onehot, or logsumexp) written out by hand: z̄ = (softmax(z) − onehot(t)) / N
        hand_written=HandWritten(
            frozenset({"log", "log_softmax", "logsumexp", "softmax"}),
            lambda ranks, constants: ({"reduction": r} for r in ("mean", "sum")),
        ),
        example="Z: (n, c); t: (n,)\ncross_entropy(Z, t)",
        syntax="cross_entropy",
        arity=2,
        shape=cross_entropy_shape,
        sympy=lambda args, shapes, p: CrossEntropy.build(args, shapes, reduction=p["reduction"]),
        backward=(ce_grad_logits, ce_grad_targets),
        torch=cross_entropy_torch,
        torch_aliases=("torch.nn.functional.cross_entropy", "torch.nn.CrossEntropyLoss"),
        grad_fn=cross_entropy_grad_fn,
        summary="cross_entropy(z, t): −Σ log softmax(z)[t] / N, t class indices (N,) or probabilities (N, C); "
        "z̄ = (softmax(z) − onehot(t)) / N",
        title={"en": "cross-entropy", "zh": "交叉熵"},
        arg_names=("z", "t"),
        out_name="L",
        parameters=(Param("reduction", "choice", "mean", choices=("mean", "sum")),),
        domains=(None, TARGETS_DOMAIN),
        sympy_class=CrossEntropy,
        printing=Printing(
            text="cross_entropy({0}, {1}{reduction_kw})",
            latex=r"\operatorname{{CE}}\left({0}, {1}\right)",
            lang="cross_entropy({0}, {1}{reduction_kw})",
            torch="torch.nn.functional.cross_entropy({0}, {1}{t_long}{reduction_kw})",
        ),
    )
)


def same_shape_pair(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) != len(b):
        raise ShapeMismatch(f"needs two arrays of the same shape, got {fmt(a)} and {fmt(b)}")
    for da, db in zip(a, b):
        env.unify(da, db)
    return ()


register(
    Op(
        name="mse",
        targets=(1,),
        example="a: (n, d); b: (n, d)\nmse(a, b)",
        syntax="mse",
        arity=2,
        shape=same_shape_pair,
        sympy=lambda args, shapes, p: sb.MeanOp.build([(args[0] - args[1]) ** 2], [shapes[0]]),
        backward=(
            lambda c: 2 * c.g * (c.a - c.b) / size_of(c.shapes[0]),
            lambda c: -2 * c.g * (c.a - c.b) / size_of(c.shapes[0]),
        ),
        torch=lambda torch, args, p: torch.nn.functional.mse_loss(args[0], args[1]),
        torch_aliases=("torch.nn.functional.mse_loss", "torch.nn.MSELoss"),
        grad_fn="MseLossBackward0",
        summary="mse(a, b) = mean((a − b)²); ā = 2 (a − b) / N",
        title={"en": "mean squared error", "zh": "均方误差"},
        arg_names=("a", "b"),
        out_name="L",
    )
)


def linear_shape(env: ShapeEnv, shapes, params) -> Shape:
    x, w, b = (env.resolve(s) for s in shapes)
    if len(w) != 2 or not 1 <= len(x) <= 2 + len(BATCH_LETTERS) or len(b) != 1:
        raise ShapeMismatch(f"linear(x, W, b) needs x (…, in), W (out, in), b (out,); got {fmt(x)}, {fmt(w)}, {fmt(b)}")
    try:
        env.unify(x[-1], w[1])
        env.unify(w[0], b[0])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"linear: x {fmt(x)}, W {fmt(w)}, b {fmt(b)} do not fit ({err})") from None
    return env.resolve(x[:-1] + (w[0],))


def linear_meaning(args, shapes, p) -> Expr:
    x, w, b = args
    wt = sb.TransposeOp.build([w], [shapes[1]])
    return matmul_sympy([x, wt], [shapes[0], tuple(reversed(shapes[1]))], {}) + b  # batched for x of rank 3+


def linear_grad_input(c: Ctx) -> Expr:
    return matmul_sympy([c.g, c.b], [c.out_shape, c.shapes[1]], {})


def linear_grad_weight(c: Ctx) -> Expr:
    x_shape = c.shapes[0]
    if len(x_shape) == 1:
        return sb.OuterProduct.build([c.g, c.a], [c.out_shape, x_shape])
    if len(x_shape) > 2:  # W̄ = Σ over every leading axis of ȳᵀ x: einsum("noj,noi->ji", ȳ, x)
        batch = BATCH_LETTERS[: len(x_shape) - 1]
        return einsum_of([c.g, c.a], [c.out_shape, x_shape], f"{batch}j,{batch}i->ji")
    gt = sb.TransposeOp.build([c.g], [c.out_shape])
    return sb.MatrixProduct.build([gt, c.a], [tuple(reversed(c.out_shape)), x_shape])


register(
    Op(
        name="linear",
        hand_written=HandWritten(frozenset({"matmul", "einsum"})),  # x @ W.T + b
        example="x: (n, i); W: (o, i); b: (o,)\nlinear(x, W, b)",
        syntax="linear",
        arity=3,
        shape=linear_shape,
        sympy=linear_meaning,
        # torch.nn.functional.linear: y = x Wᵀ + b;  x̄ = ȳ W,  W̄ = ȳᵀ x,  b̄ = Σ_batch ȳ
        backward=(
            linear_grad_input,
            linear_grad_weight,
            lambda c: sum_to(c.g, c.out_shape, c.shapes[2]),
        ),
        torch=lambda torch, args, p: torch.nn.functional.linear(*args),
        torch_aliases=("torch.nn.functional.linear", "torch.nn.Linear"),
        grad_fn=lambda ranks, consts, params: "AddmmBackward0" if ranks[0] == 2 else "ViewBackward0",
        summary="linear(x, W, b) = x Wᵀ + b (torch.nn.functional.linear, x of any rank: (…, in)); b̄ = ȳ summed "
        "over the batch",
        title={"en": "linear layer", "zh": "线性层"},
        arg_names=("x", "W", "b"),
    )
)


def addmm_shape(env: ShapeEnv, shapes, params) -> Shape:
    b, x, w = (env.resolve(s) for s in shapes)
    if len(x) != 2 or len(w) != 2 or len(b) > 2:
        raise ShapeMismatch(
            f"addmm(b, x, W) needs x (n, i), W (i, o), b (o,) or (n, o); got {fmt(b)}, {fmt(x)}, {fmt(w)}"
        )
    try:
        env.unify(x[1], w[0])
        out = env.resolve((x[0], w[1]))
        if broadcast(env, out, b) != out:  # (torch.addmm: b broadcasts to x W's shape, not beyond it)
            raise ShapeMismatch(f"b {fmt(b)} does not broadcast to x W's {fmt(out)}")
        return out
    except ShapeMismatch as err:
        raise ShapeMismatch(f"addmm: b {fmt(b)}, x {fmt(x)}, W {fmt(w)} do not fit ({err})") from None


def addmm_meaning(args, shapes, p) -> Expr:
    b, x, w = args
    return b + sb.MatrixProduct.build([x, w], [shapes[1], shapes[2]])


def addmm_grad_input(c: Ctx) -> Expr:
    wt = sb.TransposeOp.build([c.args[2]], [c.shapes[2]])
    return sb.MatrixProduct.build([c.g, wt], [c.out_shape, tuple(reversed(c.shapes[2]))])


def addmm_grad_weight(c: Ctx) -> Expr:
    xt = sb.TransposeOp.build([c.args[1]], [c.shapes[1]])
    return sb.MatrixProduct.build([xt, c.g], [tuple(reversed(c.shapes[1])), c.out_shape])


register(
    Op(
        name="addmm",
        hand_written=HandWritten(frozenset({"matmul", "einsum"})),  # X @ W + b
        example="b: (o,); x: (n, i); W: (i, o)\naddmm(b, x, W)",
        syntax="addmm",
        arity=3,
        shape=addmm_shape,
        sympy=addmm_meaning,
        # torch.addmm(b, x, W) = b + x W, the affine layer as written by hand (X @ W + b), which
        # --compact shows as this one layer: x̄ = ȳ Wᵀ, W̄ = xᵀ ȳ, b̄ = ȳ summed over the batch
        backward=(
            lambda c: sum_to(c.g, c.out_shape, c.shapes[0]),
            addmm_grad_input,
            addmm_grad_weight,
        ),
        torch=lambda torch, args, p: torch.addmm(torch.as_tensor(args[0], dtype=args[1].dtype), args[1], args[2]),
        grad_fn="AddmmBackward0",
        summary="addmm(b, x, W) = b + x W (torch.addmm: the affine layer x @ W + b); b̄ = ȳ summed over the batch",
        title={"en": "affine map", "zh": "仿射变换"},
        arg_names=("b", "x", "W"),
    )
)
