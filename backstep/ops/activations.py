"""Activation functions: sigmoid, relu and its relatives, gelu, softplus, clamp.

Elementwise like the ops of elementwise.py (whose constructors they use); those with keyword
parameters (leaky_relu's slope, elu's α, clamp's bounds) are TensorOps, so that the parameters
travel with the expression.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy
from sympy import Expr, Function, S

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from .elementwise import Step, StepGE, fn_printing, unary
from .registry import register
from .rules import number, same_shape
from .spec import OFF_BOUNDS, OFF_KINK, Ctx, Domain, Op, Param, Printing


def param_function(
    name: str,
    cls: type,
    backward,
    summary: str,
    title: dict[str, str],
    torch_fn,
    torch_aliases: tuple[str, ...],
    grad_fn: str,
    parameters: tuple[Param, ...],
    latex: str,
    domain: Domain | None = None,
    example: str = "",
    shape: Callable[..., Shape] = same_shape,
    **facts,
) -> Op:
    """An elementwise function with keyword parameters (a TensorOp, so that they travel with it;
    `facts`: more fields of its record)."""
    return register(
        Op(
            name=name,
            syntax=name,
            arity=1,
            shape=shape,
            sympy=lambda args, shapes, p: cls.build(args, shapes, **p),
            backward=(backward,),
            torch=torch_fn,
            torch_aliases=torch_aliases,
            grad_fn=grad_fn,
            summary=summary,
            title=title,
            parameters=parameters,
            elementwise=True,
            domains=(domain,),
            example=example,
            sympy_class=cls,
            printing=Printing(
                text=f"{name}({{0}}{{params_kw}})",
                latex=latex,
                lang=f"{name}({{0}}{{params_kw}})",
                torch=("torch.clamp" if name == "clamp" else f"torch.nn.functional.{name}") + "({0}{params_kw})",
            ),
            **facts,
        )
    )


unary(
    "sigmoid",
    sb.Sigmoid,
    lambda x, y: y * (1 - y),
    "logistic σ(x) = 1/(1+e^(−x)); σ′ = σ(1 − σ)",
    title={"en": "sigmoid", "zh": "sigmoid"},
    printing=Printing(text="σ({0})", latex=r"\sigma\left({0}\right)", lang="sigmoid({0})", torch="torch.sigmoid({0})"),
    torch_aliases=("torch.sigmoid", "torch.nn.functional.sigmoid", "torch.Tensor.sigmoid", "torch.nn.Sigmoid"),
    positive_when=lambda node, positive: True,
)


class Relu(sb.PrintsAsBackstep, Function):
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


unary(
    "relu",
    Relu,
    lambda x, y: Step(x),
    "max(x, 0); relu′ = 1[x > 0] (0 at 0, as torch)",
    title={"en": "ReLU", "zh": "ReLU"},
    domain=OFF_KINK,
    torch_aliases=("torch.relu", "torch.nn.functional.relu", "torch.Tensor.relu", "torch.nn.ReLU"),
)


class LeakyRelu(sb.TensorOp):
    param_names = ("negative_slope",)


param_function(
    "leaky_relu",
    LeakyRelu,
    # torch takes the slope at the kink itself: 1[x > 0] + s·(1 − 1[x > 0])
    lambda c: c.g * (Step(c.a) + number(c.params["negative_slope"]) * (1 - Step(c.a))),
    "max(x, 0) + s·min(x, 0); derivative 1[x > 0] + s·1[x < 0]",
    {"en": "leaky ReLU", "zh": "Leaky ReLU"},
    lambda torch, args, p: torch.nn.functional.leaky_relu(args[0], p["negative_slope"]),
    ("torch.nn.functional.leaky_relu", "torch.nn.LeakyReLU"),
    "LeakyReluBackward0",
    (Param("negative_slope", "number", 0.01),),
    r"\operatorname{{lrelu}}\left({0}\right)",
    domain=OFF_KINK,
)


class Elu(sb.TensorOp):
    param_names = ("alpha",)


param_function(
    "elu",
    Elu,
    # for x > 0 the slope is 1, else α eˣ = y + α (the forward value again)
    lambda c: c.g * (Step(c.a) + (1 - Step(c.a)) * (c.y + number(c.params["alpha"]))),
    "x for x > 0, α(eˣ − 1) else; derivative 1[x > 0] + 1[x < 0] (y + α)",
    {"en": "ELU", "zh": "ELU"},
    lambda torch, args, p: torch.nn.functional.elu(args[0], p["alpha"]),
    ("torch.nn.functional.elu", "torch.nn.ELU"),
    "EluBackward0",
    (Param("alpha", "number", 1.0),),
    r"\operatorname{{elu}}\left({0}\right)",
    domain=OFF_KINK,
)


class Clamp(sb.TensorOp):
    param_names = ("min", "max")


def clamp_shape(env: ShapeEnv, shapes, params) -> Shape:
    if params.get("min") is None and params.get("max") is None:
        raise ShapeMismatch("clamp needs a bound: clamp(x, min=0), clamp(x, max=1) or both")
    return same_shape(env, shapes, params)


def clamp_grad(c: Ctx) -> Expr:
    lo, hi = c.params.get("min"), c.params.get("max")
    mask = S.One
    if lo is not None:
        mask *= StepGE(c.a - sympy.Float(lo) if lo else c.a)
    if hi is not None:
        mask *= StepGE(sympy.Float(hi) - c.a)
    return c.g * mask


def clamp_torch(torch, args, p):
    return torch.clamp(args[0], min=p.get("min"), max=p.get("max"))


param_function(
    "clamp",
    Clamp,
    clamp_grad,
    "clamp(x, min=a, max=b); derivative 1[a ≤ x ≤ b] (1 at the bounds, as torch: clamp(x, min=0) is relu with "
    "relu′(0) = 1)",
    {"en": "clamp", "zh": "截断"},
    clamp_torch,
    ("torch.clamp", "torch.clip", "torch.Tensor.clamp", "torch.Tensor.clip"),
    "ClampBackward1",
    (Param("min", "number"), Param("max", "number")),
    r"\operatorname{{clamp}}\left({0}{params_kw}\right)",
    domain=OFF_BOUNDS,
    example="x: (n, d)\nclamp(x, min=0)",
    shape=clamp_shape,
    positive_when=lambda node, positive: (node.params.get("min") or 0) > 0,
)


class Gelu(sb.PrintsAsBackstep, Function):
    nargs = 1


unary(
    "gelu",
    Gelu,
    lambda x, y: (1 + sympy.erf(x / sympy.sqrt(2))) / 2 + x * sympy.exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi),
    "x Φ(x) (exact, erf form); derivative Φ(x) + x φ(x)",
    title={"en": "GELU", "zh": "GELU"},
    torch_fn=lambda torch, args, p: torch.nn.functional.gelu(args[0]),
    torch_aliases=("torch.nn.functional.gelu", "torch.nn.GELU"),
    printing=fn_printing("gelu", torch="torch.nn.functional.gelu({0})"),
)


class Softplus(sb.PrintsAsBackstep, Function):
    nargs = 1

    def fdiff(self, argindex=1):
        return sb.Sigmoid(self.args[0])


unary(
    "softplus",
    Softplus,
    lambda x, y: sb.Sigmoid(x),
    "log(1 + eˣ); derivative σ(x)",
    title={"en": "softplus", "zh": "softplus"},
    torch_fn=lambda torch, args, p: torch.nn.functional.softplus(args[0]),
    torch_aliases=("torch.nn.functional.softplus", "torch.nn.Softplus"),
    printing=fn_printing("softplus", torch="torch.nn.functional.softplus({0})"),
    positive_when=lambda node, positive: True,
)
