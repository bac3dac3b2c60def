"""Reductions and the ops along one axis: sum, mean, unsqueeze (a reduction's adjoint),
softmax, log_softmax, logsumexp, and the spread of entries: var, std.

SumOp, MeanOp and UnsqueezeOp are SymPy classes of the base algebra (symbolic.py): the backward
rules of every family sum and lay gradients back out with them (rules.py).
"""

from __future__ import annotations

import sympy
from sympy import Expr, Function, S

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from .registry import register
from .rules import broadcast_shapes, expand_back, int_product, normalize_axis, reduce_axes, reduce_shape, size_of
from .spec import KEEPDIMS, OFF_TIE, PREC_UNARY, ByParams, Ctx, HandWritten, Op, Param, Printing, axis_param


def axes_param() -> Param:
    """A reduction's `axis`: one axis, a tuple of them (axis=(0, 2, 3)) or None for all, as torch's dim=."""
    return Param("axis", "ints", None, aliases=("dim",))


def reduce_torch(method: str):
    def run(torch, args, p):
        x = args[0]
        if p.get("axis") is None:
            out = getattr(x, method)()
            return out.reshape((1,) * x.dim()) if p.get("keepdims") else out
        return getattr(x, method)(dim=p["axis"], keepdim=bool(p.get("keepdims")))  # an int or a tuple

    return run


def reduce_grad_fn(kind: str):
    def name(ranks, consts, params) -> str:
        if params.get("axis") is None:
            return "ViewBackward0" if params.get("keepdims") else f"{kind}Backward0"
        return f"{kind}Backward1"

    return name


register(
    Op(
        name="sum",
        example="X: (n, d)\nsum(X, axis=1)",
        syntax="sum",
        arity=1,
        positive_through=True,
        positive_when=lambda node, positive: positive(node.inputs[0]),
        shape=reduce_shape,
        sympy=lambda args, shapes, p: sb.SumOp.build(args, shapes, **p),
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params),),
        torch=reduce_torch("sum"),
        torch_aliases=("torch.sum", "torch.Tensor.sum"),
        grad_fn=reduce_grad_fn("Sum"),
        summary="sum of all entries, or over one axis (sum(e, axis=k), keepdims=True keeps it) or several "
        "(axis=(0, 2, 3))",
        title={"en": "sum of entries", "zh": "求和"},
        parameters=(axes_param(), KEEPDIMS),
        sympy_class=sb.SumOp,
        printing=Printing(
            text="sum({0}{axis_kw})",
            latex=r"\textstyle\sum{axis_sub}\left({0}\right)",
            lang="sum({0}{axis_kw})",
            torch="torch.sum({0}{dim_kw})",
            prec=PREC_UNARY,
        ),
    )
)
register(
    Op(
        name="mean",
        example="X: (n, d)\nmean(X, axis=0)",
        syntax="mean",
        arity=1,
        positive_through=True,
        positive_when=lambda node, positive: positive(node.inputs[0]),
        shape=reduce_shape,
        sympy=lambda args, shapes, p: sb.MeanOp.build(args, shapes, **p),
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params) / size_of(c.shapes[0], c.params.get("axis")),),
        torch=reduce_torch("mean"),
        torch_aliases=("torch.mean", "torch.Tensor.mean"),
        grad_fn=reduce_grad_fn("Mean"),
        summary="mean of all entries, or over one axis (mean(e, axis=k)) or several (axis=(0, 2, 3))",
        title={"en": "mean", "zh": "均值"},
        parameters=(axes_param(), KEEPDIMS),
        sympy_class=sb.MeanOp,
        printing=Printing(
            text="mean({0}{axis_kw})",
            latex=r"\operatorname{{mean}}{axis_sub}\left({0}\right)",
            lang="mean({0}{axis_kw})",
            torch="torch.mean({0}{dim_kw})",
            prec=PREC_UNARY,
        ),
    )
)


def unsqueeze_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    k = normalize_axis(params["axis"], len(shape) + 1)
    return shape[:k] + (1,) + shape[k:]


register(
    Op(
        name="unsqueeze",
        example="x: (n,)\nunsqueeze(x, axis=1)",
        syntax="unsqueeze",
        arity=1,
        positive_through=True,
        shape=unsqueeze_shape,
        sympy=lambda args, shapes, p: sb.UnsqueezeOp.build(args, shapes, **p),
        backward=(lambda c: sb.SumOp.build([c.g], [c.out_shape], axis=c.params["axis"], keepdims=False),),
        torch=lambda torch, args, p: args[0].unsqueeze(p["axis"]),
        torch_aliases=("torch.unsqueeze", "torch.Tensor.unsqueeze"),
        grad_fn="UnsqueezeBackward0",
        summary="insert an axis of length 1 (the gradient of a sum over that axis spreads along it)",
        title={"en": "new axis", "zh": "增加维度"},
        parameters=(axis_param(0),),
        sympy_class=sb.UnsqueezeOp,
        printing=Printing(
            text="unsqueeze({0}, axis={axis})",
            latex=r"\operatorname{{unsqueeze}}_{{{axis}}}\left({0}\right)",
            lang="unsqueeze({0}, axis={axis})",
            torch="{0}.unsqueeze({axis})",
        ),
    )
)

# --- along one axis ------------------------------------------------------------------------------


def each_axis(ranks: tuple[int, ...], constants: list[float]):
    """--compact: the axes a softmax written out by hand may be over (its operand's every axis)."""
    return ({"axis": k} for k in range(ranks[0]))


def last_axis_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    if len(shape) == 0:
        raise ShapeMismatch("needs an array of rank at least 1, not a scalar")
    normalize_axis(params.get("axis", -1), len(shape))
    return shape


class Softmax(sb.TensorOp):
    param_names = ("axis",)


def softmax_of(x: Expr, shape: Shape, axis: int) -> Expr:
    return Softmax.build([x], [shape], axis=axis)


register(
    Op(
        name="softmax",
        hand_written=HandWritten(frozenset({"exp"}), each_axis),  # exp(z) / sum(exp(z), axis, keepdims=True)
        makes="probability",  # (its rows can be cross_entropy's targets: see HandWritten)
        example="Z: (n, c)\nsoftmax(Z, axis=1)",
        syntax="softmax",
        arity=1,
        positive_when=lambda node, positive: True,
        shape=last_axis_shape,
        sympy=lambda args, shapes, p: Softmax.build(args, shapes, axis=p["axis"]),
        # x̄ = y ⊙ (ȳ − Σ_axis(ȳ ⊙ y)): the Jacobian diag(y) − y yᵀ applied row by row
        backward=(
            lambda c: c.y * (c.g - sb.SumOp.build([c.g * c.y], [c.out_shape], axis=c.params["axis"], keepdims=True)),
        ),
        torch=lambda torch, args, p: torch.softmax(args[0], dim=p["axis"]),
        torch_aliases=("torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax", "torch.nn.Softmax"),
        grad_fn="SoftmaxBackward0",
        summary="softmax(x, axis=-1)_i = exp(x_i) / Σ_j exp(x_j); x̄ = y ⊙ (ȳ − Σ(ȳ ⊙ y))",
        title={"en": "softmax", "zh": "softmax"},
        parameters=(axis_param(-1),),
        sympy_class=Softmax,
        printing=Printing(
            text="softmax({0}{axis_kw})",
            latex=r"\operatorname{{softmax}}{axis_sub}\left({0}\right)",
            lang="softmax({0}{axis_kw})",
            torch="torch.softmax({0}, dim={axis})",
        ),
    )
)


class LogSoftmax(sb.TensorOp):
    param_names = ("axis",)


register(
    Op(
        name="log_softmax",
        hand_written=HandWritten(frozenset({"log", "logsumexp", "softmax"}), each_axis),  # z - logsumexp(z)
        example="Z: (n, c)\nlog_softmax(Z, axis=1)",
        syntax="log_softmax",
        arity=1,
        shape=last_axis_shape,
        sympy=lambda args, shapes, p: LogSoftmax.build(args, shapes, axis=p["axis"]),
        backward=(
            lambda c: (
                c.g
                - softmax_of(c.a, c.shapes[0], c.params["axis"])
                * sb.SumOp.build([c.g], [c.out_shape], axis=c.params["axis"], keepdims=True)
            ),
        ),
        torch=lambda torch, args, p: torch.log_softmax(args[0], dim=p["axis"]),
        torch_aliases=(
            "torch.log_softmax",
            "torch.nn.functional.log_softmax",
            "torch.Tensor.log_softmax",
            "torch.nn.LogSoftmax",
        ),
        grad_fn="LogSoftmaxBackward0",
        summary="log_softmax(x, axis=-1) = x − log Σ exp(x); x̄ = ȳ − softmax(x) ⊙ Σ ȳ",
        title={"en": "log-softmax", "zh": "log-softmax"},
        parameters=(axis_param(-1),),
        sympy_class=LogSoftmax,
        printing=Printing(
            text="log_softmax({0}{axis_kw})",
            latex=r"\log\operatorname{{softmax}}{axis_sub}\left({0}\right)",
            lang="log_softmax({0}{axis_kw})",
            torch="torch.log_softmax({0}, dim={axis})",
        ),
    )
)


def logsumexp_grad(c: Ctx) -> Expr:
    axis = c.params.get("axis")
    if isinstance(axis, int):  # one axis: the softmax along it
        return expand_back(c.g, c.shapes[0], c.params) * softmax_of(c.a, c.shapes[0], axis)
    # every axis or several: the softmax over them, exp(x − logsumexp(x))
    return expand_back(c.g, c.shapes[0], c.params) * sympy.exp(c.a - expand_back(c.y, c.shapes[0], c.params))


class LogSumExp(sb.TensorOp):
    param_names = ("axis", "keepdims")


def logsumexp_torch_code(operands, p) -> str:
    """torch.logsumexp needs its dims: every axis spelled out where none is given."""
    if p.get("axis") is None and not p.get("keepdims"):
        return f"torch.logsumexp({operands[0]}, dim={p['reduce_dims']})"
    return f"torch.logsumexp({operands[0]}{p['dim_kw']})"


register(
    Op(
        name="logsumexp",
        hand_written=HandWritten(  # log(sum(exp(z), axis)), with or without the max subtracted
            frozenset({"log"}),
            lambda ranks, constants: ({"axis": k, "keepdims": kd} for k in range(ranks[0]) for kd in (False, True)),
        ),
        example="Z: (n, c)\nlogsumexp(Z, axis=1)",
        syntax="logsumexp",
        arity=1,
        shape=reduce_shape,
        sympy=lambda args, shapes, p: LogSumExp.build(args, shapes, **p),
        backward=(logsumexp_grad,),
        torch=lambda torch, args, p: torch.logsumexp(
            args[0], dim=reduce_axes(p["axis"], args[0].dim()), keepdim=bool(p.get("keepdims"))
        ),
        torch_aliases=("torch.logsumexp", "torch.Tensor.logsumexp"),
        grad_fn="LogsumexpBackward0",
        summary="log Σ exp(x), over everything, one axis or several (axis=(1, 2)); its gradient is the softmax",
        title={"en": "log-sum-exp", "zh": "log-sum-exp"},
        parameters=(axes_param(), KEEPDIMS),
        sympy_class=LogSumExp,
        printing=Printing(
            text="logsumexp({0}{axis_kw})",
            latex=r"\operatorname{{logsumexp}}{axis_sub}\left({0}\right)",
            lang="logsumexp({0}{axis_kw})",
            torch=ByParams(logsumexp_torch_code),
        ),
    )
)

# --- spread: variance and standard deviation ---------------------------------------------------

CORRECTION = Param("correction", "axis", 1)  # an integer, as torch's correction= (1: Bessel's, 0: biased)


def spread_shape(name: str):
    """The reduction's shape, refusing a correction that leaves no degrees of freedom."""

    def shape_rule(env: ShapeEnv, shapes, params) -> Shape:
        out = reduce_shape(env, shapes, params)
        correction = params.get("correction", 1)
        if correction < 0:
            raise ShapeMismatch(f"{name}'s correction must be 0 or more, not {correction}")
        shape = env.resolve(shapes[0])
        dims = [shape[k] for k in reduce_axes(params.get("axis"), len(shape))]
        if all(isinstance(d, int) for d in dims):
            n = int_product(dims)
            if n - correction <= 0:
                least = f"{correction + 1} entr{'y' if correction == 0 else 'ies'}"
                raise ShapeMismatch(
                    f"{name} over {n} entr{'y' if n == 1 else 'ies'} with correction={correction} divides by "
                    f"N − correction = {n - correction}: it needs at least {least}"
                )
            if name == "std" and n == 1:
                raise ShapeMismatch("std over a single entry is 0, where its derivative is undefined")
        return out

    return shape_rule


def spread_torch(name: str):
    def run(torch, args, p):
        fn = getattr(torch, name)
        return fn(args[0], dim=p.get("axis"), correction=p.get("correction", 1), keepdim=bool(p.get("keepdims")))

    return run


def centered(c: Ctx) -> Expr:
    """x − mean(x) over the reduced axes, kept so that it broadcasts against x."""
    mean = sb.MeanOp.build([c.a], [c.shapes[0]], axis=c.params.get("axis"), keepdims=True)
    return c.a - mean


def degrees_of_freedom(c: Ctx) -> Expr:
    """N − correction: the number of entries reduced, less the correction."""
    return size_of(c.shapes[0], c.params.get("axis")) - c.params.get("correction", 1)


def spread_printing(name: str) -> Printing:
    """var(x, axis=1) in text and backstep's language (correction= where it is not 1), var_1(x) in
    LaTeX like mean, torch.var(x, dim=1, correction=1) in torch code."""

    def correction_kw(p: dict) -> str:
        return "" if p.get("correction", 1) == 1 else f", correction={p['correction']}"

    def torch_code(ops, p: dict) -> str:
        return f"torch.{name}({ops[0]}{p.get('dim_kw') or ''}, correction={p['correction']})"

    return Printing(
        text=ByParams(lambda ops, p: f"{name}({ops[0]}{p.get('axis_kw') or ''}{correction_kw(p)})"),
        latex=ByParams(
            lambda ops, p: (
                rf"\operatorname{{{name}}}{p.get('axis_sub') or ''}\left({ops[0]}"
                + ("" if p.get("correction", 1) == 1 else rf", \text{{correction}}={p['correction']}")
                + r"\right)"
            )
        ),
        lang=ByParams(lambda ops, p: f"{name}({ops[0]}{p.get('axis_kw') or ''}{correction_kw(p)})"),
        torch=ByParams(torch_code),
        prec=PREC_UNARY,
    )


class VarOp(sb.TensorOp):
    param_names = ("axis", "correction", "keepdims")


register(
    Op(
        name="var",
        example="X: (n, d)\nsum(var(X, axis=0))",
        syntax="var",
        arity=1,
        shape=spread_shape("var"),
        sympy=lambda args, shapes, p: VarOp.build(args, shapes, **p),
        # x̄ = ȳ ⊙ 2 (x − mean(x)) / (N − correction)
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params) * 2 * centered(c) / degrees_of_freedom(c),),
        torch=spread_torch("var"),
        torch_aliases=("torch.var", "torch.Tensor.var"),
        grad_fn="VarBackward0",
        summary="variance of all entries, or over one axis or several, as torch.var (correction=1 by default, "
        "0: biased); "
        "x̄ = ȳ ⊙ 2 (x − mean(x)) / (N − correction)",
        title={"en": "variance", "zh": "方差"},
        parameters=(axes_param(), CORRECTION, KEEPDIMS),
        sympy_class=VarOp,
        printing=spread_printing("var"),
    )
)


class StdOp(sb.TensorOp):
    param_names = ("axis", "correction", "keepdims")


register(
    Op(
        name="std",
        example="X: (n, d)\nsum(std(X, axis=1))",
        syntax="std",
        arity=1,
        shape=spread_shape("std"),
        sympy=lambda args, shapes, p: StdOp.build(args, shapes, **p),
        # x̄ = ȳ ⊙ (x − mean(x)) / ((N − correction) std(x)): undefined where std(x) = 0
        backward=(
            lambda c: (
                expand_back(c.g, c.shapes[0], c.params)
                * centered(c)
                / (degrees_of_freedom(c) * expand_back(c.y, c.shapes[0], c.params))
            ),
        ),
        torch=spread_torch("std"),
        torch_aliases=("torch.std", "torch.Tensor.std"),
        grad_fn="StdBackward0",
        summary="standard deviation of all entries, or over one axis or several, as torch.std "
        "(correction=1 by default); "
        "x̄ = ȳ ⊙ (x − mean(x)) / ((N − correction) std(x))",
        title={"en": "standard deviation", "zh": "标准差"},
        parameters=(axes_param(), CORRECTION, KEEPDIMS),
        sympy_class=StdOp,
        printing=spread_printing("std"),
    )
)


# --- the largest and smallest entry --------------------------------------------------------------


class IsEqual(sb.PrintsAsBackstep, Function):
    """The indicator 1[a = b]: where an entry is its reduction's maximum (max's gradient)."""

    nargs = 2

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number:
            return S.One if a == b else S.Zero
        return None

    def fdiff(self, argindex=1):
        return S.Zero


register(
    Op(
        name="equal",
        example="a: (n, d); b: (n, d)\nsum(equal(a, b) * a)",
        syntax="equal",
        arity=2,
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: IsEqual(*args),
        backward=(lambda c: S.Zero, lambda c: S.Zero),
        torch=lambda torch, args, p: torch.eq(torch.as_tensor(args[0]), torch.as_tensor(args[1])).to(torch.float64),
        torch_aliases=("torch.eq", "torch.Tensor.eq"),
        grad_fn=None,
        summary="equal(a, b) = 1[a = b], as np.equal: an indicator (no gradient); max's gradient is written with it",
        title={"en": "equality indicator", "zh": "相等指示"},
        arg_names=("a", "b"),
        elementwise=True,
        domains=(OFF_TIE, OFF_TIE),
        sympy_class=IsEqual,
        printing=Printing(
            text="1[{0} = {1}]",
            latex=r"\mathbf{{1}}\left[{0} = {1}\right]",
            lang="equal({0}, {1})",
            torch="torch.eq(torch.as_tensor({0}), torch.as_tensor({1})).to(torch.float64)",
            code="({0} == {1}).to({dtype})",
        ),
    )
)


def extreme_grad(cls: type):
    """x̄ = ȳ ⊙ 1[x = max(x)] / Σ 1[x = max(x)]: the gradient goes to the largest entries, and
    entries that tie for it share it evenly, as torch.amax."""

    def grad(c: Ctx) -> Expr:
        shape, axis = c.shapes[0], c.params.get("axis")
        kept = c.y if axis is None or c.params.get("keepdims") else cls.build([c.a], [shape], axis=axis, keepdims=True)
        at_extreme = IsEqual(c.a, kept)
        ties = sb.SumOp.build([at_extreme], [shape], axis=axis, keepdims=axis is not None)
        return expand_back(c.g, shape, c.params) * at_extreme / ties

    return grad


def extreme_torch(name: str):
    def run(torch, args, p):
        x = args[0]
        return getattr(torch, name)(x, dim=reduce_axes(p.get("axis"), x.dim()), keepdim=bool(p.get("keepdims")))

    return run


ELEMENTWISE_NAME = {"max": "maximum", "min": "minimum"}


def extreme(name: str, word: str, cls: type, latex: str, zh: str) -> None:
    torch_name = f"a{name}"
    register(
        Op(
            name=name,
            example=f"X: (n, d)\nsum({name}(X, axis=1))",
            syntax=name,
            arity=1,
            positive_through=True,
            shape=reduce_shape,
            sympy=lambda args, shapes, p: cls.build(args, shapes, **p),
            backward=(extreme_grad(cls),),
            torch=extreme_torch(torch_name),
            torch_aliases=(f"torch.{torch_name}", f"torch.Tensor.{torch_name}"),
            grad_fn=f"A{name}Backward0",
            summary=f"the {word} entry of all, of one axis or of several ({name}(x, axis=1), keepdims=True keeps "
            f"it), as torch.{torch_name}; x̄ = ȳ ⊙ 1[x = {name}(x)] / Σ 1[x = {name}(x)]: entries that tie share "
            f"the gradient evenly. {name}(a, b) of two arrays is maximum/minimum",
            title={"en": f"{word} entry", "zh": zh},
            parameters=(
                Param(
                    "axis",
                    "ints",
                    None,
                    aliases=("dim",),
                    keyword_only=f"write {name}(x, axis=k); the elementwise {ELEMENTWISE_NAME[name]} of two operands "
                    f"(Python's {name}(a, b)) is {ELEMENTWISE_NAME[name]}(a, b)",
                ),
                KEEPDIMS,
            ),
            sympy_class=cls,
            printing=Printing(
                text=f"{name}({{0}}{{axis_kw}})",
                latex=latex + r"{axis_sub}\left({0}\right)",
                lang=f"{name}({{0}}{{axis_kw}})",
                torch=f"torch.{torch_name}({{0}}{{dim_kw}})",
                prec=PREC_UNARY,
            ),
        )
    )


class MaxOp(sb.TensorOp):
    param_names = ("axis", "keepdims")


class MinOp(sb.TensorOp):
    param_names = ("axis", "keepdims")


extreme("max", "largest", MaxOp, r"\max", "最大值")
extreme("min", "smallest", MinOp, r"\min", "最小值")


# --- where the largest and smallest entry are: integer results, constants to the derivation ------


def arg_shape(name: str):
    def shape_rule(env: ShapeEnv, shapes, params) -> Shape:
        shape = env.resolve(shapes[0])
        if params.get("axis") is None and params.get("keepdims"):
            raise ShapeMismatch(f"{name} over every entry is one flat index: keepdims=True needs an axis")
        if len(shape) == 0:
            raise ShapeMismatch(f"{name} needs an array, not a scalar")
        return reduce_shape(env, shapes, params)

    return shape_rule


def arg_torch(name: str):
    def run(torch, args, p):
        x = args[0]
        if p.get("axis") is None:
            return getattr(torch, name)(x).to(x.dtype)
        return getattr(torch, name)(x, dim=p["axis"], keepdim=bool(p.get("keepdims"))).to(x.dtype)

    return run


def arg_extreme(name: str, word: str, zh: str) -> None:
    cls = type(f"{name.capitalize()}Op", (sb.TensorOp,), {"param_names": ("axis", "keepdims")})
    register(
        Op(
            name=name,
            example=f"Z: (n, c)\nsum(onehot({name}(Z, axis=1), c) * Z)",
            syntax=name,
            arity=1,
            shape=arg_shape(name),
            sympy=lambda args, shapes, p: cls.build(args, shapes, **p),
            # an integer index: a piecewise constant of x, whose derivative is 0 wherever it is defined
            backward=(lambda c: S.Zero,),
            torch=arg_torch(name),
            torch_aliases=(f"torch.{name}", f"torch.Tensor.{name}"),
            grad_fn=None,
            summary=f"the index of the {word} entry along an axis (of the flattened array without one), as "
            f"torch.{name}: an integer with no gradient (the first of equal entries), e.g. onehot({name}(z, "
            "axis=1), c)",
            title={"en": f"index of the {word} entry", "zh": zh},
            parameters=(axis_param(None), KEEPDIMS),
            sympy_class=cls,
            printing=Printing(
                text=f"{name}({{0}}{{axis_kw}})",
                latex=rf"\operatorname{{{{{name}}}}}{{axis_sub}}\left({{0}}\right)",
                lang=f"{name}({{0}}{{axis_kw}})",
                torch=f"torch.{name}({{0}}{{dim_kw}})",
            ),
        )
    )


arg_extreme("argmax", "largest", "最大值索引")
arg_extreme("argmin", "smallest", "最小值索引")
