"""Elementwise ops: arithmetic with broadcasting, the math functions, indicators and
comparisons, maximum/minimum/where.

Each op is one block: its SymPy class where it has its own, then its entry. An elementwise op's
backward rule is written for equal shapes; the derivation sums it back over broadcast axes.
The family's constructors (`unary`, `elementwise`, `comparison`) come first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sympy
from sympy import Expr, Function, S

from ..symbolic import PrintsAsBackstep
from .registry import register
from .rules import broadcast_all, broadcast_shapes, same_shape
from .spec import NONZERO, OFF_KINK, OFF_POLE, OFF_TIE, POSITIVE, POW_BASE, Domain, Op, Printing

# --- the family's constructors -------------------------------------------------------------------


def binary_grad_fn(plain: str, const_left: str):
    def name(ranks, consts, params) -> str:
        return const_left if consts[0] else plain

    return name


def pow_grad_fn(ranks, consts, params) -> str:
    if consts[1]:
        return "PowBackward0"
    return "PowBackward2" if consts[0] else "PowBackward1"


def unary(
    name: str,
    sympy_fn,
    derivative: Callable[[Expr, Expr], Expr],
    summary: str,
    title: dict[str, str],
    domain: Domain | None = None,
    printing: Printing | None = None,
    latex: str | None = None,
    torch_fn: Callable[..., Any] | None = None,
    torch_aliases: tuple[str, ...] = (),
    grad_fn: str | None = "auto",
    math_function: str = "",
    positive_through: bool = False,
    positive_when: Callable | None = None,
) -> Op:
    """An elementwise function of one input: x̄ = ȳ ⊙ f′(x), f′ given in terms of x and y = f(x).

    `sympy_fn` is a SymPy class (printed and evaluated as this op) or, for sqrt, a function
    that SymPy rewrites into its own algebra. `math_function` is Python's function of a number
    (where `printing` is not given: its Printing.math_function).
    """
    sympy_class = sympy_fn if isinstance(sympy_fn, type) else None
    if printing is None:
        printing = fn_printing(name, latex, math_function=math_function)
    return register(
        Op(
            name=name,
            syntax=name,
            arity=1,
            positive_through=positive_through,
            positive_when=positive_when,
            shape=same_shape,
            sympy=lambda args, shapes, p: sympy_fn(args[0]),
            backward=(lambda c: c.g * derivative(c.a, c.y),),
            torch=torch_fn or (lambda torch, args, p: getattr(torch, name)(args[0])),
            torch_aliases=torch_aliases,
            grad_fn=f"{name.capitalize()}Backward0" if grad_fn == "auto" else grad_fn,
            summary=summary,
            title=title,
            elementwise=True,
            domains=(domain,),
            sympy_class=sympy_class,
            printing=printing,
        )
    )


def fn_printing(name: str, latex: str | None = None, torch: str | None = None, math_function: str = "") -> Printing:
    return Printing(
        text=f"{name}({{0}})",
        latex=latex or rf"\operatorname{{{{{name}}}}}\left({{0}}\right)",
        lang=f"{name}({{0}})",
        torch=torch or f"torch.{name}({{0}})",
        math_function=math_function,
    )


def elementwise(
    name: str,
    arity: int,
    meaning,
    backward,
    summary: str,
    title: dict[str, str],
    sympy_class: type,
    printing: Printing,
    torch_fn,
    torch_aliases: tuple[str, ...],
    grad_fn: str,
    arg_names: tuple[str, ...] = ("x",),
    domains: tuple = (),
    example: str = "",
    **facts,
) -> Op:
    """An elementwise op of several inputs (`facts`: more fields of its record)."""
    return register(
        Op(
            name=name,
            syntax=name,
            arity=arity,
            shape=same_shape if arity == 1 else broadcast_all,
            sympy=meaning,
            backward=backward,
            torch=torch_fn,
            torch_aliases=torch_aliases,
            grad_fn=grad_fn,
            summary=summary,
            title=title,
            arg_names=arg_names,
            elementwise=True,
            domains=domains,
            example=example,
            sympy_class=sympy_class,
            printing=printing,
            **facts,
        )
    )


def comparison(symbol: str, name: str, meaning, summary: str, torch_aliases: tuple[str, ...]) -> Op:
    """A comparison is an indicator (1 where it holds, 0 elsewhere): it has no gradient."""
    return register(
        Op(
            name=name,
            syntax=symbol,
            arity=2,
            shape=broadcast_shapes,
            sympy=lambda args, shapes, p: meaning(args[0], args[1]),
            backward=(lambda c: S.Zero, lambda c: S.Zero),
            torch=lambda torch, args, p: torch.as_tensor(
                {"gt": args[0] > args[1], "ge": args[0] >= args[1], "lt": args[0] < args[1], "le": args[0] <= args[1]}[
                    name
                ]
            ).to(torch.float64),
            torch_aliases=torch_aliases,
            grad_fn=None,
            summary=summary,
            title={"en": "comparison", "zh": "比较"},  # every comparison is named alike
            arg_names=("a", "b"),
            elementwise=True,
            domains=(OFF_TIE, OFF_TIE),
        )
    )


# --- arithmetic ----------------------------------------------------------------------------------

register(
    Op(
        name="add",
        syntax="+",
        arity=2,
        positive_through=True,
        positive_when=lambda node, positive: all(positive(i) for i in node.inputs),
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] + args[1],
        backward=(lambda c: c.g, lambda c: c.g),
        torch=lambda torch, args, p: args[0] + args[1],
        torch_aliases=("operator.add", "torch.add", "torch.Tensor.add"),
        grad_fn="AddBackward0",
        summary="elementwise sum, with broadcasting",
        title={"en": "addition", "zh": "加法"},
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
    )
)
register(
    Op(
        name="sub",
        syntax="-",
        arity=2,
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] - args[1],
        backward=(lambda c: c.g, lambda c: -c.g),
        torch=lambda torch, args, p: args[0] - args[1],
        torch_aliases=("operator.sub", "torch.sub", "torch.subtract", "torch.Tensor.sub"),
        grad_fn=binary_grad_fn("SubBackward0", "RsubBackward1"),
        summary="elementwise difference, with broadcasting",
        title={"en": "subtraction", "zh": "减法"},
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
    )
)
register(
    Op(
        name="mul",
        syntax="*",
        arity=2,
        positive_through=True,
        positive_when=lambda node, positive: all(positive(i) for i in node.inputs),
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] * args[1],
        backward=(lambda c: c.g * c.b, lambda c: c.g * c.a),
        torch=lambda torch, args, p: args[0] * args[1],
        torch_aliases=("operator.mul", "torch.mul", "torch.multiply", "torch.Tensor.mul"),
        grad_fn="MulBackward0",
        summary="elementwise (Hadamard) product ⊙, with broadcasting",
        title={"en": "product", "zh": "乘法"},
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
    )
)
register(
    Op(
        name="div",
        syntax="/",
        arity=2,
        positive_through=True,
        positive_when=lambda node, positive: all(positive(i) for i in node.inputs),
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] / args[1],
        backward=(lambda c: c.g / c.b, lambda c: -c.g * c.a / c.b**2),
        torch=lambda torch, args, p: args[0] / args[1],
        torch_aliases=("operator.truediv", "torch.div", "torch.divide", "torch.true_divide", "torch.Tensor.div"),
        grad_fn=binary_grad_fn("DivBackward0", "MulBackward0"),
        summary="elementwise quotient, with broadcasting",
        title={"en": "division", "zh": "除法"},
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
        domains=(None, NONZERO),
    )
)
register(
    Op(
        name="pow",
        syntax="**",
        arity=2,
        positive_when=lambda node, positive: positive(node.inputs[0]),
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] ** args[1],
        # ā = ȳ b a^(b-1);  b̄ = ȳ y log a, with y = a^b the forward value
        backward=(lambda c: c.g * c.b * c.a ** (c.b - 1), lambda c: c.g * c.y * sympy.log(c.a)),
        torch=lambda torch, args, p: torch.pow(args[0], args[1]),
        torch_aliases=("operator.pow", "torch.pow", "torch.Tensor.pow", "torch.square", "torch.Tensor.square"),
        grad_fn=pow_grad_fn,
        summary="elementwise power; a non-integer or variable exponent needs a positive base",
        title={"en": "power", "zh": "幂"},
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
        domains=(POW_BASE, None),
    )
)
register(
    Op(
        name="neg",
        syntax="-x",
        arity=1,
        shape=same_shape,
        sympy=lambda args, shapes, p: -args[0],
        backward=(lambda c: -c.g,),
        torch=lambda torch, args, p: -args[0],
        torch_aliases=("operator.neg", "torch.neg", "torch.negative", "torch.Tensor.neg"),
        grad_fn="NegBackward0",
        summary="negation",
        title={"en": "negation", "zh": "取负"},
        elementwise=True,
    )
)

# --- functions -----------------------------------------------------------------------------------

unary(
    "sin",
    sympy.sin,
    lambda x, y: sympy.cos(x),
    "sine",
    title={"en": "sine", "zh": "正弦"},
    latex=r"\sin\left({0}\right)",
    torch_aliases=("torch.sin", "torch.Tensor.sin"),
    math_function="math.sin",
)
unary(
    "cos",
    sympy.cos,
    lambda x, y: -sympy.sin(x),
    "cosine",
    title={"en": "cosine", "zh": "余弦"},
    latex=r"\cos\left({0}\right)",
    torch_aliases=("torch.cos", "torch.Tensor.cos"),
    math_function="math.cos",
)
unary(
    "tan",
    sympy.tan,
    lambda x, y: 1 + y**2,
    "tangent; tan′ = 1 + tan²",
    title={"en": "tangent", "zh": "正切"},
    domain=OFF_POLE,
    latex=r"\tan\left({0}\right)",
    torch_aliases=("torch.tan", "torch.Tensor.tan"),
    math_function="math.tan",
)
unary(
    "exp",
    sympy.exp,
    lambda x, y: y,
    "exponential; exp′ = exp (the forward value)",
    title={"en": "exponential", "zh": "指数"},
    positive_when=lambda node, positive: True,
    printing=Printing(
        text="exp({0})", latex=r"e^{{{0}}}", lang="exp({0})", torch="torch.exp({0})", math_function="math.exp"
    ),
    torch_aliases=("torch.exp", "torch.Tensor.exp"),
)
unary(
    "log",
    sympy.log,
    lambda x, y: 1 / x,
    "natural logarithm; inputs drawn positive",
    title={"en": "logarithm", "zh": "对数"},
    domain=POSITIVE,
    latex=r"\log\left({0}\right)",
    torch_aliases=("torch.log", "torch.Tensor.log"),
    math_function="math.log",
)
unary(
    "sqrt",
    sympy.sqrt,
    lambda x, y: 1 / (2 * y),
    "square root; sqrt′ = 1/(2 sqrt)",
    title={"en": "square root", "zh": "平方根"},
    domain=POSITIVE,
    printing=Printing(
        text="√({0})", latex=r"\sqrt{{{0}}}", lang="sqrt({0})", torch="torch.sqrt({0})", math_function="math.sqrt"
    ),
    torch_aliases=("torch.sqrt", "torch.Tensor.sqrt"),
    positive_through=True,
)
unary(
    "abs",
    sympy.Abs,
    lambda x, y: sympy.sign(x),
    "absolute value; abs′ = sign (0 at 0, as torch)",
    title={"en": "absolute value", "zh": "绝对值"},
    domain=OFF_KINK,
    printing=Printing(text="|{0}|", latex=r"\left|{0}\right|", lang="abs({0})", torch="torch.abs({0})"),
    torch_aliases=("torch.abs", "torch.Tensor.abs"),
)
unary(
    "tanh",
    sympy.tanh,
    lambda x, y: 1 - y**2,
    "hyperbolic tangent; tanh′ = 1 − tanh²",
    title={"en": "tanh", "zh": "双曲正切"},
    latex=r"\tanh\left({0}\right)",
    torch_aliases=("torch.tanh", "torch.nn.functional.tanh", "torch.Tensor.tanh", "torch.nn.Tanh"),
    math_function="math.tanh",
)
unary(
    "sign",
    sympy.sign,
    lambda x, y: S.Zero,
    "the sign −1, 0 or 1, abs's derivative; its own derivative is 0",
    title={"en": "sign", "zh": "符号函数"},
    domain=OFF_KINK,
    torch_aliases=("torch.sign", "torch.Tensor.sign"),
)
unary(
    "erf",
    sympy.erf,
    lambda x, y: 2 * sympy.exp(-(x**2)) / sympy.sqrt(sympy.pi),
    "the error function",
    title={"en": "error function", "zh": "误差函数"},
    latex=r"\operatorname{{erf}}\left({0}\right)",
    torch_aliases=("torch.erf", "torch.Tensor.erf"),
    math_function="math.erf",
)
unary(
    "erfc",
    sympy.erfc,
    lambda x, y: -2 * sympy.exp(-(x**2)) / sympy.sqrt(sympy.pi),
    "the complementary error function 1 − erf; erfc′ = −2 exp(−x²)/√π",
    title={"en": "complementary error function", "zh": "互补误差函数"},
    latex=r"\operatorname{{erfc}}\left({0}\right)",
    torch_aliases=("torch.erfc", "torch.special.erfc", "torch.Tensor.erfc"),
    math_function="math.erfc",
)

# --- indicators: the derivatives of relu and clamp, and comparisons ------------------------------


class Step(PrintsAsBackstep, Function):
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


unary(
    "step",
    Step,
    lambda x, y: S.Zero,
    "the indicator 1[x > 0], relu's derivative; its own derivative is 0",
    title={"en": "step", "zh": "阶跃函数"},
    domain=OFF_KINK,
    printing=Printing(
        text="1[{0} > 0]", latex=r"\mathbf{{1}}\left[{0} > 0\right]", lang="step({0})", torch="({0} > 0).to({0}.dtype)"
    ),
    torch_fn=lambda torch, args, p: (args[0] > 0).to(args[0].dtype),
    grad_fn=None,
)


class StepGE(PrintsAsBackstep, Function):
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


unary(
    "step_ge",
    StepGE,
    lambda x, y: S.Zero,
    "the indicator 1[x ≥ 0], clamp's derivative; derivative 0",
    title={"en": "step", "zh": "阶跃函数"},
    printing=Printing(
        text="1[{0} ≥ 0]",
        latex=r"\mathbf{{1}}\left[{0} \geq 0\right]",
        lang="step_ge({0})",
        torch="({0} >= 0).to({0}.dtype)",
    ),
    torch_fn=lambda torch, args, p: (args[0] >= 0).to(args[0].dtype),
    grad_fn=None,
    domain=OFF_KINK,
)

comparison(
    ">",
    "gt",
    lambda a, b: Step(a - b),
    "a > b as an indicator 1[a − b > 0] (inside where)",
    torch_aliases=("operator.gt", "torch.gt"),
)
comparison(
    ">=",
    "ge",
    lambda a, b: StepGE(a - b),
    "a ≥ b as an indicator 1[a − b ≥ 0] (inside where)",
    torch_aliases=("operator.ge", "torch.ge"),
)
comparison(
    "<",
    "lt",
    lambda a, b: Step(b - a),
    "a < b as an indicator 1[b − a > 0] (inside where)",
    torch_aliases=("operator.lt", "torch.lt"),
)
comparison(
    "<=",
    "le",
    lambda a, b: StepGE(b - a),
    "a ≤ b as an indicator 1[b − a ≥ 0] (inside where)",
    torch_aliases=("operator.le", "torch.le"),
)

# --- maximum, minimum, where ---------------------------------------------------------------------


def as_tensors(torch, args: list) -> list:
    """Numbers as 0-d tensors of the tensors' dtype (torch.maximum takes no Python floats)."""
    dtype = next(a.dtype for a in args if torch.is_tensor(a))
    return [a if torch.is_tensor(a) else torch.tensor(a, dtype=dtype) for a in args]


class Maximum(PrintsAsBackstep, Function):
    nargs = 2


elementwise(
    "maximum",
    2,
    lambda args, shapes, p: Maximum(*args),
    # torch's rule: the larger one takes the gradient, a tie splits it in halves: (1 + sign(a − b))/2
    (lambda c: c.g * (1 + sympy.sign(c.a - c.b)) / 2, lambda c: c.g * (1 + sympy.sign(c.b - c.a)) / 2),
    "elementwise max(a, b); the larger one takes the gradient, a tie splits it: ā = ȳ (1 + sign(a − b))/2",
    {"en": "maximum", "zh": "逐元素最大值"},
    Maximum,
    Printing(
        text="max({0}, {1})",
        latex=r"\max\left({0}, {1}\right)",
        lang="maximum({0}, {1})",
        torch="torch.maximum(torch.as_tensor({0}), torch.as_tensor({1}))",
        code="torch.maximum({0}, {1})",
        code_with_number="torch.clamp({x}, min={c})",
    ),
    lambda torch, args, p: torch.maximum(*as_tensors(torch, args)),
    ("torch.maximum", "torch.Tensor.maximum"),
    "MaximumBackward0",
    arg_names=("a", "b"),
    piecewise=True,
    positive_when=lambda node, positive: any(positive(i) for i in node.inputs),
)


class Minimum(PrintsAsBackstep, Function):
    nargs = 2


elementwise(
    "minimum",
    2,
    lambda args, shapes, p: Minimum(*args),
    (lambda c: c.g * (1 + sympy.sign(c.b - c.a)) / 2, lambda c: c.g * (1 + sympy.sign(c.a - c.b)) / 2),
    "elementwise min(a, b); the smaller one takes the gradient, a tie splits it: ā = ȳ (1 + sign(b − a))/2",
    {"en": "minimum", "zh": "逐元素最小值"},
    Minimum,
    Printing(
        text="min({0}, {1})",
        latex=r"\min\left({0}, {1}\right)",
        lang="minimum({0}, {1})",
        torch="torch.minimum(torch.as_tensor({0}), torch.as_tensor({1}))",
        code="torch.minimum({0}, {1})",
        code_with_number="torch.clamp({x}, max={c})",
    ),
    lambda torch, args, p: torch.minimum(*as_tensors(torch, args)),
    ("torch.minimum", "torch.Tensor.minimum"),
    "MinimumBackward0",
    arg_names=("a", "b"),
    piecewise=True,
)


class Where(PrintsAsBackstep, Function):
    """where(c, a, b): a where the indicator c is 1, b where it is 0."""

    nargs = 3


elementwise(
    "where",
    3,
    lambda args, shapes, p: Where(*args),
    # the condition holds where it is positive (a comparison gives 1 or 0): 1[c > 0]
    (lambda c: S.Zero, lambda c: c.g * Step(c.args[0]), lambda c: c.g * (1 - Step(c.args[0]))),
    "where(cond, a, b): a where cond > 0 (a comparison such as x > 0 holds), else b",
    {"en": "selection", "zh": "条件选择"},
    Where,
    Printing(
        text="where({0}, {1}, {2})",
        latex=r"\begin{{cases}} {1} & {0} \\ {2} & \text{{else}} \end{{cases}}",
        lang="where({0}, {1}, {2})",
        torch="torch.where({0} > 0, {1}, {2})",
    ),
    lambda torch, args, p: torch.where(torch.as_tensor(args[0]) > 0, args[1], args[2]),
    ("torch.where",),
    "WhereBackward0",
    arg_names=("c", "a", "b"),
    piecewise=True,
    example="a: (n, d); b: (n, d)\nwhere(a > b, a, 2 * b)",
)
