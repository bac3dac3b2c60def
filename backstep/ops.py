"""The op table: every operation backstep knows, each declared once.

An ``Op`` says everything about one operation:

- how a user spells it (``syntax``: an operator token, a function name or ``.T``) and which
  keyword parameters it takes;
- its shape rule;
- its SymPy meaning (``sympy``), built from the operands' symbols;
- one backward (vector-Jacobian) rule per input, in matrix notation, as a function of the
  upstream gradient ``g``, the inputs, the op's own output ``y`` (so that a step can reuse the
  forward value, ``σ(1-σ)``) and the shapes;
- how it prints (text, LaTeX, and backstep's own input language) when it is a SymPy function;
- its torch counterpart and the ``grad_fn`` name torch gives it;
- the domain each input is drawn from when backstep picks numbers.

Everything else (parser, derivation, printers, numeric evaluator, verifier, per-op tests) reads
this table; adding an op means adding one entry here plus nothing but tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import sympy
from sympy import Expr, S

from . import symbolic as sb
from .shapes import Shape, ShapeEnv, ShapeMismatch, broadcast
from .shapes import fmt_shape_plain as fmt

# Printing precedences (higher binds tighter).
PREC_ADD, PREC_MUL, PREC_MATMUL, PREC_UNARY, PREC_POW, PREC_POSTFIX, PREC_ATOM = 10, 20, 22, 25, 30, 40, 100


@dataclass
class Ctx:
    """What a backward rule sees: upstream gradient g, inputs, output y, shapes, params."""

    g: Expr
    args: tuple
    y: Expr
    shapes: tuple
    out_shape: Shape
    params: dict

    @property
    def a(self) -> Expr:
        return self.args[0]

    @property
    def b(self) -> Expr:
        return self.args[1]


@dataclass
class Printing:
    """How a SymPy function of this op prints. `{0}`, `{1}` are operands, `{axis}` a param."""

    text: str
    latex: str
    lang: str
    prec: int = PREC_ATOM  # precedence of the printed result
    operand_prec: int = 0  # operands below this precedence get parentheses


@dataclass
class Op:
    name: str
    syntax: str  # "+" … for operators, a function name, or ".T"
    arity: int
    shape: Callable[..., Shape]  # (env, in_shapes, params) -> out shape
    sympy: Callable[..., Expr]  # (args, in_shapes, params) -> SymPy expression
    backward: tuple[Callable[[Ctx], Expr], ...]
    torch: Callable[..., Any]  # (torch, args, params) -> tensor
    grad_fn: str | Callable[..., str] | None  # or (ranks, constant flags, params) -> name; None: no grad
    summary: str  # one line for `backstep ops`
    arg_names: tuple[str, ...] = ("x",)  # for the general rule: y = f(x) ⇒ x̄ = …
    out_name: str = "y"
    params: dict[str, Any] = field(default_factory=dict)  # keyword -> default
    elementwise: bool = False  # broadcasting op: backward sums over broadcast axes
    domain: tuple[str | None, ...] = ()  # per input: positive, nonzero, off_kink, off_pole
    sympy_class: type | None = None  # the SymPy class that means this op, if it has its own
    printing: Printing | None = None

    def grad_fn_name(self, ranks: tuple[int, ...], consts: tuple[bool, ...], params: dict) -> str | None:
        if self.grad_fn is None or isinstance(self.grad_fn, str):
            return self.grad_fn
        return self.grad_fn(ranks, consts, params)


OPS: dict[str, Op] = {}


def register(op: Op) -> Op:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is declared twice")
    if len(op.backward) != op.arity:
        raise ValueError(f"op {op.name!r}: {op.arity} inputs but {len(op.backward)} backward rules")
    if op.domain and len(op.domain) != op.arity:
        raise ValueError(f"op {op.name!r}: domain must name one entry per input")
    if op.sympy_class is not None and op.printing is None:
        raise ValueError(f"op {op.name!r}: a SymPy class of its own needs a printing rule")
    OPS[op.name] = op
    return op


# --- shape rules -------------------------------------------------------------------------------


def same_shape(env: ShapeEnv, shapes, params) -> Shape:
    return env.resolve(shapes[0])


def broadcast_shapes(env: ShapeEnv, shapes, params) -> Shape:
    try:
        return broadcast(env, shapes[0], shapes[1])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"cannot broadcast {fmt(shapes[0])} with {fmt(shapes[1])} ({err})") from None


def matmul_shape(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) == 0 or len(b) == 0:
        raise ShapeMismatch(f"@ needs arrays of rank 1 or 2, got {fmt(a)} @ {fmt(b)}; use * for a scalar")
    if len(a) > 2 or len(b) > 2:
        raise ShapeMismatch(f"@ on arrays of rank above 2 is not supported yet ({fmt(a)} @ {fmt(b)})")
    try:
        env.unify(a[-1], b[0])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"{fmt(a)} @ {fmt(b)}: inner dimensions differ ({err})") from None
    return env.resolve(a[:-1] + b[1:])


def transpose_shape(env: ShapeEnv, shapes, params) -> Shape:
    return tuple(reversed(env.resolve(shapes[0])))


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


def unsqueeze_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    k = normalize_axis(params["axis"], len(shape) + 1)
    return shape[:k] + (1,) + shape[k:]


def outer_shape(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) != 1 or len(b) != 1:
        raise ShapeMismatch(f"outer needs two vectors, got {fmt(a)} and {fmt(b)}")
    return (a[0], b[0])


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


def matmul_grad_a(c: Ctx) -> Expr:
    sa, sb_ = c.shapes
    if len(sa) == 1 and len(sb_) == 1:
        return c.g * c.b
    if len(sb_) == 1:  # A (n,k) @ b (k,) -> g (n,):  Ā = g bᵀ
        return sb.OuterProduct.build([c.g, c.b], [c.out_shape, sb_])
    bt = sb.TransposeOp.build([c.b], [sb_])
    if len(sa) == 1:  # a (k,) @ B (k,m) -> g (m,):  ā = B g
        return sb.MatrixProduct.build([c.b, c.g], [sb_, c.out_shape])
    return sb.MatrixProduct.build([c.g, bt], [c.out_shape, tuple(reversed(sb_))])


def matmul_grad_b(c: Ctx) -> Expr:
    sa, sb_ = c.shapes
    if len(sa) == 1 and len(sb_) == 1:
        return c.g * c.a
    if len(sa) == 1:  # a (k,) @ B (k,m) -> g (m,):  B̄ = a gᵀ
        return sb.OuterProduct.build([c.a, c.g], [sa, c.out_shape])
    at = sb.TransposeOp.build([c.a], [sa])
    return sb.MatrixProduct.build([at, c.g], [tuple(reversed(sa)), c.out_shape])


def matmul_grad_fn(ranks, consts, params) -> str:
    return {(2, 2): "MmBackward0", (2, 1): "MvBackward0", (1, 1): "DotBackward0", (1, 2): "SqueezeBackward4"}[ranks]


def reduce_torch(method: str):
    def run(torch, args, p):
        x = args[0]
        if p.get("axis") is None:
            out = getattr(x, method)()
            return out.reshape((1,) * x.dim()) if p.get("keepdims") else out
        return getattr(x, method)(dim=p["axis"], keepdim=bool(p.get("keepdims")))

    return run


def reduce_grad_fn(kind: str):
    def name(ranks, consts, params) -> str:
        if params.get("axis") is None:
            return "ViewBackward0" if params.get("keepdims") else f"{kind}Backward0"
        return f"{kind}Backward1"

    return name


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
    domain: str | None = None,
    printing: Printing | None = None,
    latex: str | None = None,
    torch_fn: Callable[..., Any] | None = None,
    grad_fn: str | None = "auto",
) -> Op:
    """An elementwise function of one input: x̄ = ȳ ⊙ f′(x), f′ given in terms of x and y = f(x).

    `sympy_fn` is a SymPy class (printed and evaluated as this op) or, for sqrt, a function
    that SymPy rewrites into its own algebra.
    """
    sympy_class = sympy_fn if isinstance(sympy_fn, type) else None
    if printing is None:
        printing = fn_printing(name, latex)
    return register(
        Op(
            name=name,
            syntax=name,
            arity=1,
            shape=same_shape,
            sympy=lambda args, shapes, p: sympy_fn(args[0]),
            backward=(lambda c: c.g * derivative(c.a, c.y),),
            torch=torch_fn or (lambda torch, args, p: getattr(torch, name)(args[0])),
            grad_fn=f"{name.capitalize()}Backward0" if grad_fn == "auto" else grad_fn,
            summary=summary,
            elementwise=True,
            domain=(domain,),
            sympy_class=sympy_class,
            printing=printing,
        )
    )


def fn_printing(name: str, latex: str | None = None, text: str | None = None) -> Printing:
    return Printing(
        text=text or f"{name}({{0}})",
        latex=latex or rf"\operatorname{{{name}}}\left({{0}}\right)",
        lang=f"{name}({{0}})",
    )


# --- the table -----------------------------------------------------------------------------------

register(
    Op(
        name="add",
        syntax="+",
        arity=2,
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] + args[1],
        backward=(lambda c: c.g, lambda c: c.g),
        torch=lambda torch, args, p: args[0] + args[1],
        grad_fn="AddBackward0",
        summary="elementwise sum, with broadcasting",
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
        grad_fn=binary_grad_fn("SubBackward0", "RsubBackward1"),
        summary="elementwise difference, with broadcasting",
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
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] * args[1],
        backward=(lambda c: c.g * c.b, lambda c: c.g * c.a),
        torch=lambda torch, args, p: args[0] * args[1],
        grad_fn="MulBackward0",
        summary="elementwise (Hadamard) product ⊙, with broadcasting",
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
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] / args[1],
        backward=(lambda c: c.g / c.b, lambda c: -c.g * c.a / c.b**2),
        torch=lambda torch, args, p: args[0] / args[1],
        grad_fn=binary_grad_fn("DivBackward0", "MulBackward0"),
        summary="elementwise quotient, with broadcasting",
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
        domain=(None, "nonzero"),
    )
)
register(
    Op(
        name="pow",
        syntax="**",
        arity=2,
        shape=broadcast_shapes,
        sympy=lambda args, shapes, p: args[0] ** args[1],
        # ā = ȳ b a^(b-1);  b̄ = ȳ y log a, with y = a^b the forward value
        backward=(lambda c: c.g * c.b * c.a ** (c.b - 1), lambda c: c.g * c.y * sympy.log(c.a)),
        torch=lambda torch, args, p: torch.pow(args[0], args[1]),
        grad_fn=pow_grad_fn,
        summary="elementwise power; a non-integer or variable exponent needs a positive base",
        arg_names=("a", "b"),
        out_name="c",
        elementwise=True,
        domain=("pow_base", None),
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
        grad_fn="NegBackward0",
        summary="negation",
        elementwise=True,
    )
)
register(
    Op(
        name="matmul",
        syntax="@",
        arity=2,
        shape=matmul_shape,
        sympy=lambda args, shapes, p: sb.MatrixProduct.build(args, shapes),
        backward=(matmul_grad_a, matmul_grad_b),
        torch=lambda torch, args, p: args[0] @ args[1],
        grad_fn=matmul_grad_fn,
        summary="matrix product (1-d operands are vectors, as in NumPy)",
        arg_names=("A", "B"),
        out_name="C",
        sympy_class=sb.MatrixProduct,
        printing=Printing(
            text="{0} {1}", latex="{0} {1}", lang="{0} @ {1}", prec=PREC_MATMUL, operand_prec=PREC_MATMUL
        ),
    )
)
register(
    Op(
        name="transpose",
        syntax=".T",
        arity=1,
        shape=transpose_shape,
        sympy=lambda args, shapes, p: sb.TransposeOp.build(args, shapes),
        backward=(lambda c: sb.TransposeOp.build([c.g], [c.out_shape]),),
        torch=lambda torch, args, p: args[0].permute(*reversed(range(args[0].dim()))),
        grad_fn="PermuteBackward0",
        summary="transpose: reverses the axes",
        arg_names=("A",),
        out_name="B",
        sympy_class=sb.TransposeOp,
        printing=Printing(
            text="{0}ᵀ", latex=r"{0}^{{\top}}", lang="{0}.T", prec=PREC_POSTFIX, operand_prec=PREC_POSTFIX
        ),
    )
)
register(
    Op(
        name="sum",
        syntax="sum",
        arity=1,
        shape=reduce_shape,
        sympy=lambda args, shapes, p: sb.SumOp.build(args, shapes, **p),
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params),),
        torch=reduce_torch("sum"),
        grad_fn=reduce_grad_fn("Sum"),
        summary="sum of all entries, or over one axis (sum(e, axis=k), keepdims=True keeps it)",
        params={"axis": None, "keepdims": False},
        sympy_class=sb.SumOp,
        printing=Printing(
            text="sum({0}{axis_kw})",
            latex=r"\textstyle\sum{axis_sub}\left({0}\right)",
            lang="sum({0}{axis_kw})",
            prec=PREC_UNARY,
        ),
    )
)
register(
    Op(
        name="mean",
        syntax="mean",
        arity=1,
        shape=reduce_shape,
        sympy=lambda args, shapes, p: sb.MeanOp.build(args, shapes, **p),
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params) / size_of(c.shapes[0], c.params.get("axis")),),
        torch=reduce_torch("mean"),
        grad_fn=reduce_grad_fn("Mean"),
        summary="mean of all entries, or over one axis (mean(e, axis=k))",
        params={"axis": None, "keepdims": False},
        sympy_class=sb.MeanOp,
        printing=Printing(
            text="mean({0}{axis_kw})",
            latex=r"\operatorname{{mean}}{axis_sub}\left({0}\right)",
            lang="mean({0}{axis_kw})",
            prec=PREC_UNARY,
        ),
    )
)
register(
    Op(
        name="unsqueeze",
        syntax="unsqueeze",
        arity=1,
        shape=unsqueeze_shape,
        sympy=lambda args, shapes, p: sb.UnsqueezeOp.build(args, shapes, **p),
        backward=(lambda c: sb.SumOp.build([c.g], [c.out_shape], axis=c.params["axis"], keepdims=False),),
        torch=lambda torch, args, p: args[0].unsqueeze(p["axis"]),
        grad_fn="UnsqueezeBackward0",
        summary="insert an axis of length 1 (the gradient of a sum over that axis spreads along it)",
        params={"axis": 0},
        sympy_class=sb.UnsqueezeOp,
        printing=Printing(
            text="unsqueeze({0}, axis={axis})",
            latex=r"\operatorname{{unsqueeze}}_{{{axis}}}\left({0}\right)",
            lang="unsqueeze({0}, axis={axis})",
        ),
    )
)
register(
    Op(
        name="outer",
        syntax="outer",
        arity=2,
        shape=outer_shape,
        sympy=lambda args, shapes, p: sb.OuterProduct.build(args, shapes),
        backward=(
            lambda c: sb.MatrixProduct.build([c.g, c.b], [c.out_shape, c.shapes[1]]),
            lambda c: sb.MatrixProduct.build(
                [sb.TransposeOp.build([c.g], [c.out_shape]), c.a], [tuple(reversed(c.out_shape)), c.shapes[0]]
            ),
        ),
        torch=lambda torch, args, p: torch.outer(args[0], args[1]),
        grad_fn="MulBackward0",
        summary="outer product of two vectors, a bᵀ",
        arg_names=("a", "b"),
        sympy_class=sb.OuterProduct,
        printing=Printing(
            text="{0} {1}ᵀ",
            latex=r"{0} {1}^{{\top}}",
            lang="outer({0}, {1})",
            prec=PREC_MATMUL,
            operand_prec=PREC_POSTFIX,
        ),
    )
)

unary("sin", sympy.sin, lambda x, y: sympy.cos(x), "sine", latex=r"\sin\left({0}\right)")
unary("cos", sympy.cos, lambda x, y: -sympy.sin(x), "cosine", latex=r"\cos\left({0}\right)")
unary(
    "tan",
    sympy.tan,
    lambda x, y: 1 + y**2,
    "tangent; tan′ = 1 + tan²",
    domain="off_pole",
    latex=r"\tan\left({0}\right)",
)
unary(
    "exp",
    sympy.exp,
    lambda x, y: y,
    "exponential; exp′ = exp (the forward value)",
    printing=Printing(text="exp({0})", latex=r"e^{{{0}}}", lang="exp({0})"),
)
unary(
    "log",
    sympy.log,
    lambda x, y: 1 / x,
    "natural logarithm; inputs drawn positive",
    domain="positive",
    latex=r"\log\left({0}\right)",
)
unary(
    "sqrt",
    sympy.sqrt,
    lambda x, y: 1 / (2 * y),
    "square root; sqrt′ = 1/(2 sqrt)",
    domain="positive",
    printing=Printing(text="√({0})", latex=r"\sqrt{{{0}}}", lang="sqrt({0})"),
)
unary(
    "abs",
    sympy.Abs,
    lambda x, y: sympy.sign(x),
    "absolute value; abs′ = sign (0 at 0, as torch)",
    domain="off_kink",
    printing=Printing(text="|{0}|", latex=r"\left|{0}\right|", lang="abs({0})"),
)
unary(
    "tanh",
    sympy.tanh,
    lambda x, y: 1 - y**2,
    "hyperbolic tangent; tanh′ = 1 − tanh²",
    latex=r"\tanh\left({0}\right)",
)
unary(
    "sigmoid",
    sb.Sigmoid,
    lambda x, y: y * (1 - y),
    "logistic σ(x) = 1/(1+e^(−x)); σ′ = σ(1 − σ)",
    printing=Printing(text="σ({0})", latex=r"\sigma\left({0}\right)", lang="sigmoid({0})"),
)
unary(
    "relu",
    sb.Relu,
    lambda x, y: sb.Step(x),
    "max(x, 0); relu′ = 1[x > 0] (0 at 0, as torch)",
    domain="off_kink",
)
unary(
    "step",
    sb.Step,
    lambda x, y: S.Zero,
    "the indicator 1[x > 0], relu's derivative; its own derivative is 0",
    domain="off_kink",
    printing=Printing(text="1[{0} > 0]", latex=r"\mathbf{{1}}\left[{0} > 0\right]", lang="step({0})"),
    torch_fn=lambda torch, args, p: (args[0] > 0).to(args[0].dtype),
    grad_fn=None,
)
unary(
    "sign",
    sympy.sign,
    lambda x, y: S.Zero,
    "the sign −1, 0 or 1, abs's derivative; its own derivative is 0",
    domain="off_kink",
)

# Ops by their spelling in the input language, and the SymPy classes that mean an op (for the
# printers and the numeric evaluator). Add, Mul and Pow are SymPy's own algebra; the printers
# and the evaluator handle them by structure.
OPERATOR_OPS = {op.syntax: op for op in OPS.values() if not op.syntax.isidentifier()}
FUNCTION_OPS = {op.syntax: op for op in OPS.values() if op.syntax.isidentifier()}
OP_OF_CLASS: dict[type, Op] = {op.sympy_class: op for op in OPS.values() if op.sympy_class is not None}


def unknown_function_hint(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, list(FUNCTION_OPS), n=1)
    return f"; did you mean {close[0]}?" if close else f"; known functions: {', '.join(sorted(FUNCTION_OPS))}"
