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
    torch: str = ""  # torch code, for generated modules (backstep codegen)
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
    example: str = ""  # a small program using the op (shapes included): docs, `backstep ops`, tests
    arg_names: tuple[str, ...] = ("x",)  # for the general rule: y = f(x) ⇒ x̄ = …
    out_name: str = "y"
    params: dict[str, Any] = field(default_factory=dict)  # keyword -> default
    elementwise: bool = False  # broadcasting op: backward sums over broadcast axes
    domain: tuple[str | None, ...] = ()  # per input: positive, nonzero, off_kink, off_pole, spd, …
    choices: dict[str, tuple] = field(default_factory=dict)  # allowed values of a str parameter
    sympy_class: type | None = None  # the SymPy class that means this op, if it has its own
    printing: Printing | None = None
    input_ranks: tuple[int, ...] = ()  # the rank an unannotated variable used as each input gets (4: NCHW)

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
    if not op.example:
        op.example = default_example(op)
    OPS[op.name] = op
    return op


def default_example(op: Op) -> str:
    """An elementwise op on two distinct non-square shapes; anything else must declare one."""
    if not op.elementwise:
        raise ValueError(f"op {op.name!r} is not elementwise: declare an example program")
    if op.syntax == "-x":
        return "x: (n, d)\n-x"
    if not op.syntax.isidentifier():
        return f"a: (n, d); b: (n, d)\na {op.syntax} b"
    names = ", ".join(op.arg_names) if op.arity > 1 else "x"
    shapes = "; ".join(f"{a}: (n, d)" for a in (op.arg_names if op.arity > 1 else ("x",)))
    return f"{shapes}\n{op.syntax}({names})"


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


def fn_printing(name: str, latex: str | None = None, torch: str | None = None) -> Printing:
    return Printing(
        text=f"{name}({{0}})",
        latex=latex or rf"\operatorname{{{{{name}}}}}\left({{0}}\right)",
        lang=f"{name}({{0}})",
        torch=torch or f"torch.{name}({{0}})",
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
        example="A: (n, k); B: (k, m)\nA @ B",
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
            text="{0} {1}",
            latex="{0} {1}",
            lang="{0} @ {1}",
            torch="{0} @ {1}",
            prec=PREC_MATMUL,
            operand_prec=PREC_MATMUL,
        ),
    )
)
register(
    Op(
        name="transpose",
        example="A: (n, d)\nA.T",
        syntax=".T",
        arity=1,
        shape=transpose_shape,
        sympy=lambda args, shapes, p: sb.TransposeOp.build(args, shapes),
        backward=(lambda c: sb.TransposeOp.build([c.g], [c.out_shape]),),
        torch=lambda torch, args, p: args[0].permute(tuple(reversed(range(args[0].dim())))),
        grad_fn="PermuteBackward0",
        summary="transpose: reverses the axes",
        arg_names=("A",),
        out_name="B",
        sympy_class=sb.TransposeOp,
        printing=Printing(
            text="{0}ᵀ",
            latex=r"{0}^{{\top}}",
            lang="{0}.T",
            torch="{0}.T",
            prec=PREC_POSTFIX,
            operand_prec=PREC_POSTFIX,
        ),
    )
)
register(
    Op(
        name="sum",
        example="X: (n, d)\nsum(X, axis=1)",
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
            torch="torch.mean({0}{dim_kw})",
            prec=PREC_UNARY,
        ),
    )
)
register(
    Op(
        name="unsqueeze",
        example="x: (n,)\nunsqueeze(x, axis=1)",
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
            torch="{0}.unsqueeze({axis})",
        ),
    )
)
register(
    Op(
        name="outer",
        example="a: (n,); b: (d,)\nouter(a, b)",
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
            torch="torch.outer({0}, {1})",
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
    printing=Printing(text="exp({0})", latex=r"e^{{{0}}}", lang="exp({0})", torch="torch.exp({0})"),
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
    printing=Printing(text="√({0})", latex=r"\sqrt{{{0}}}", lang="sqrt({0})", torch="torch.sqrt({0})"),
)
unary(
    "abs",
    sympy.Abs,
    lambda x, y: sympy.sign(x),
    "absolute value; abs′ = sign (0 at 0, as torch)",
    domain="off_kink",
    printing=Printing(text="|{0}|", latex=r"\left|{0}\right|", lang="abs({0})", torch="torch.abs({0})"),
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
    printing=Printing(text="σ({0})", latex=r"\sigma\left({0}\right)", lang="sigmoid({0})", torch="torch.sigmoid({0})"),
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
    printing=Printing(
        text="1[{0} > 0]", latex=r"\mathbf{{1}}\left[{0} > 0\right]", lang="step({0})", torch="({0} > 0).to({0}.dtype)"
    ),
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

# --- neural-network ops ----------------------------------------------------------------------------


def last_axis_shape(env: ShapeEnv, shapes, params) -> Shape:
    shape = env.resolve(shapes[0])
    if len(shape) == 0:
        raise ShapeMismatch("needs an array of rank at least 1, not a scalar")
    normalize_axis(params.get("axis", -1), len(shape))
    return shape


def logsumexp_shape(env: ShapeEnv, shapes, params) -> Shape:
    return reduce_shape(env, shapes, {"axis": params.get("axis"), "keepdims": False})


def softmax_of(x: Expr, shape: Shape, axis: int) -> Expr:
    return sb.Softmax.build([x], [shape], axis=axis)


register(
    Op(
        name="softmax",
        example="Z: (n, c)\nsoftmax(Z, axis=1)",
        syntax="softmax",
        arity=1,
        shape=last_axis_shape,
        sympy=lambda args, shapes, p: sb.Softmax.build(args, shapes, axis=p["axis"]),
        # x̄ = y ⊙ (ȳ − Σ_axis(ȳ ⊙ y)): the Jacobian diag(y) − y yᵀ applied row by row
        backward=(
            lambda c: c.y * (c.g - sb.SumOp.build([c.g * c.y], [c.out_shape], axis=c.params["axis"], keepdims=True)),
        ),
        torch=lambda torch, args, p: torch.softmax(args[0], dim=p["axis"]),
        grad_fn="SoftmaxBackward0",
        summary="softmax(x, axis=-1)_i = exp(x_i) / Σ_j exp(x_j); x̄ = y ⊙ (ȳ − Σ(ȳ ⊙ y))",
        params={"axis": -1},
        sympy_class=sb.Softmax,
        printing=Printing(
            text="softmax({0}{axis_kw})",
            latex=r"\operatorname{{softmax}}{axis_sub}\left({0}\right)",
            lang="softmax({0}{axis_kw})",
            torch="torch.softmax({0}, dim={axis})",
        ),
    )
)
register(
    Op(
        name="log_softmax",
        example="Z: (n, c)\nlog_softmax(Z, axis=1)",
        syntax="log_softmax",
        arity=1,
        shape=last_axis_shape,
        sympy=lambda args, shapes, p: sb.LogSoftmax.build(args, shapes, axis=p["axis"]),
        backward=(
            lambda c: (
                c.g
                - softmax_of(c.a, c.shapes[0], c.params["axis"])
                * sb.SumOp.build([c.g], [c.out_shape], axis=c.params["axis"], keepdims=True)
            ),
        ),
        torch=lambda torch, args, p: torch.log_softmax(args[0], dim=p["axis"]),
        grad_fn="LogSoftmaxBackward0",
        summary="log_softmax(x, axis=-1) = x − log Σ exp(x); x̄ = ȳ − softmax(x) ⊙ Σ ȳ",
        params={"axis": -1},
        sympy_class=sb.LogSoftmax,
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
    if axis is None:
        return c.g * sympy.exp(c.a - c.y)  # = ȳ softmax over every entry
    return expand_back(c.g, c.shapes[0], {"axis": axis}) * softmax_of(c.a, c.shapes[0], axis)


register(
    Op(
        name="logsumexp",
        example="Z: (n, c)\nlogsumexp(Z, axis=1)",
        syntax="logsumexp",
        arity=1,
        shape=logsumexp_shape,
        sympy=lambda args, shapes, p: sb.LogSumExp.build(args, shapes, axis=p["axis"]),
        backward=(logsumexp_grad,),
        torch=lambda torch, args, p: torch.logsumexp(
            args[0], dim=tuple(range(args[0].dim())) if p["axis"] is None else p["axis"]
        ),
        grad_fn="LogsumexpBackward0",
        summary="log Σ exp(x), over everything or one axis; its gradient is the softmax",
        params={"axis": None},
        sympy_class=sb.LogSumExp,
        printing=Printing(
            text="logsumexp({0}{axis_kw})",
            latex=r"\operatorname{{logsumexp}}{axis_sub}\left({0}\right)",
            lang="logsumexp({0}{axis_kw})",
            torch="torch.logsumexp({0}, dim={reduce_dims})",
        ),
    )
)


def onehot_shape(env: ShapeEnv, shapes, params) -> Shape:
    return env.resolve(shapes[0]) + (params["classes"],)


register(
    Op(
        name="onehot",
        example="t: (n,); Z: (n, c)\nsum(onehot(t, c) * Z)",
        syntax="onehot",
        arity=1,
        shape=onehot_shape,
        sympy=lambda args, shapes, p: sb.OneHot.build(args, shapes, classes=p["classes"]),
        backward=(lambda c: S.Zero,),
        torch=lambda torch, args, p: torch.nn.functional.one_hot(args[0].long(), p["classes"]).to(torch.float64),
        grad_fn=None,
        summary="onehot(t, c): rows of the c×c identity picked by integer class indices t (no gradient)",
        params={"classes": None},
        domain=("class_index",),
        sympy_class=sb.OneHot,
        printing=Printing(
            text="onehot({0})",
            latex=r"\operatorname{{onehot}}\left({0}\right)",
            lang="onehot({0}, {classes})",
            torch="torch.nn.functional.one_hot({0}.long(), {classes}).to(torch.float64)",
        ),
    )
)


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
    target = c.b if len(t_shape) == 2 else sb.OneHot.build([c.b], [t_shape], classes=z_shape[1])
    # (softmax(z) − onehot(t)) / N: the closed form, exact for class indices and one-hot or
    # probability targets (rows that sum to 1, the targets' declared domain).
    return c.g * ce_scale(c) * (softmax_of(c.a, z_shape, 1) - target)


def ce_grad_targets(c: Ctx) -> Expr:
    return -c.g * ce_scale(c) * sb.LogSoftmax.build([c.a], [c.shapes[0]], axis=1)


def cross_entropy_torch(torch, args, p):
    z, t = args
    if t.dim() == 1:
        t = t.detach().long()
    return torch.nn.functional.cross_entropy(z, t, reduction=p["reduction"])


def cross_entropy_grad_fn(ranks, consts, params) -> str:
    if ranks[1] == 1:
        return "NllLossBackward0"
    return "DivBackward1" if params.get("reduction") == "mean" else "NegBackward0"


register(
    Op(
        name="cross_entropy",
        example="Z: (n, c); t: (n,)\ncross_entropy(Z, t)",
        syntax="cross_entropy",
        arity=2,
        shape=cross_entropy_shape,
        sympy=lambda args, shapes, p: sb.CrossEntropy.build(args, shapes, reduction=p["reduction"]),
        backward=(ce_grad_logits, ce_grad_targets),
        torch=cross_entropy_torch,
        grad_fn=cross_entropy_grad_fn,
        summary="cross_entropy(z, t): −Σ log softmax(z)[t] / N, t class indices (N,) or probabilities (N, C); "
        "z̄ = (softmax(z) − onehot(t)) / N",
        arg_names=("z", "t"),
        out_name="L",
        params={"reduction": "mean"},
        choices={"reduction": ("mean", "sum")},
        domain=(None, "targets"),
        sympy_class=sb.CrossEntropy,
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
        grad_fn="MseLossBackward0",
        summary="mse(a, b) = mean((a − b)²); ā = 2 (a − b) / N",
        arg_names=("a", "b"),
        out_name="L",
    )
)


def linear_shape(env: ShapeEnv, shapes, params) -> Shape:
    x, w, b = (env.resolve(s) for s in shapes)
    if len(w) != 2 or len(x) not in (1, 2) or len(b) != 1:
        raise ShapeMismatch(f"linear(x, W, b) needs x (n, in), W (out, in), b (out,); got {fmt(x)}, {fmt(w)}, {fmt(b)}")
    try:
        env.unify(x[-1], w[1])
        env.unify(w[0], b[0])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"linear: x {fmt(x)}, W {fmt(w)}, b {fmt(b)} do not fit ({err})") from None
    return env.resolve(x[:-1] + (w[0],))


def linear_meaning(args, shapes, p) -> Expr:
    x, w, b = args
    wt = sb.TransposeOp.build([w], [shapes[1]])
    return sb.MatrixProduct.build([x, wt], [shapes[0], tuple(reversed(shapes[1]))]) + b


def linear_grad_weight(c: Ctx) -> Expr:
    x_shape = c.shapes[0]
    if len(x_shape) == 1:
        return sb.OuterProduct.build([c.g, c.a], [c.out_shape, x_shape])
    gt = sb.TransposeOp.build([c.g], [c.out_shape])
    return sb.MatrixProduct.build([gt, c.a], [tuple(reversed(c.out_shape)), x_shape])


register(
    Op(
        name="linear",
        example="x: (n, i); W: (o, i); b: (o,)\nlinear(x, W, b)",
        syntax="linear",
        arity=3,
        shape=linear_shape,
        sympy=linear_meaning,
        # torch.nn.functional.linear: y = x Wᵀ + b;  x̄ = ȳ W,  W̄ = ȳᵀ x,  b̄ = Σ_batch ȳ
        backward=(
            lambda c: sb.MatrixProduct.build([c.g, c.b], [c.out_shape, c.shapes[1]]),
            linear_grad_weight,
            lambda c: sum_to(c.g, c.out_shape, c.shapes[2]),
        ),
        torch=lambda torch, args, p: torch.nn.functional.linear(*args),
        grad_fn=lambda ranks, consts, params: "AddmmBackward0" if ranks[0] == 2 else "ViewBackward0",
        summary="linear(x, W, b) = x Wᵀ + b (torch.nn.functional.linear); b̄ = ȳ summed over the batch",
        arg_names=("x", "W", "b"),
    )
)


def elementwise(
    name: str,
    arity: int,
    meaning,
    backward,
    summary: str,
    sympy_class: type,
    printing: Printing,
    torch_fn,
    grad_fn: str,
    params: dict | None = None,
    arg_names: tuple[str, ...] = ("x",),
    domain: tuple = (),
    example: str = "",
) -> Op:
    """An elementwise op of several inputs or with parameters."""
    return register(
        Op(
            name=name,
            syntax=name,
            arity=arity,
            shape=same_shape if arity == 1 else broadcast_all,
            sympy=meaning,
            backward=backward,
            torch=torch_fn,
            grad_fn=grad_fn,
            summary=summary,
            arg_names=arg_names,
            params=params or {},
            elementwise=True,
            domain=domain,
            example=example,
            sympy_class=sympy_class,
            printing=printing,
        )
    )


def as_tensors(torch, args: list) -> list:
    """Numbers as 0-d tensors of the tensors' dtype (torch.maximum takes no Python floats)."""
    dtype = next(a.dtype for a in args if torch.is_tensor(a))
    return [a if torch.is_tensor(a) else torch.tensor(a, dtype=dtype) for a in args]


def broadcast_all(env: ShapeEnv, shapes, params) -> Shape:
    out = env.resolve(shapes[0])
    for s in shapes[1:]:
        try:
            out = broadcast(env, out, s)
        except ShapeMismatch as err:
            raise ShapeMismatch(f"cannot broadcast {fmt(out)} with {fmt(s)} ({err})") from None
    return out


def number(value: float) -> Expr:
    """A parameter as a SymPy number: 1, not 1.0, when it is whole."""
    return sympy.Integer(int(value)) if float(value).is_integer() else sympy.Float(value)


def param_function(
    name: str,
    cls: type,
    backward,
    summary: str,
    torch_fn,
    grad_fn: str,
    params: dict,
    latex: str,
    domain: str | None = None,
    example: str = "",
    shape: Callable[..., Shape] = same_shape,
) -> Op:
    """An elementwise function with keyword parameters (a TensorOp, so that they travel with it)."""
    return register(
        Op(
            name=name,
            syntax=name,
            arity=1,
            shape=shape,
            sympy=lambda args, shapes, p: cls.build(args, shapes, **p),
            backward=(backward,),
            torch=torch_fn,
            grad_fn=grad_fn,
            summary=summary,
            params=params,
            elementwise=True,
            domain=(domain,),
            example=example,
            sympy_class=cls,
            printing=Printing(
                text=f"{name}({{0}}{{params_kw}})",
                latex=latex,
                lang=f"{name}({{0}}{{params_kw}})",
                torch=("torch.clamp" if name == "clamp" else f"torch.nn.functional.{name}") + "({0}{params_kw})",
            ),
        )
    )


param_function(
    "leaky_relu",
    sb.LeakyRelu,
    # torch takes the slope at the kink itself: 1[x > 0] + s·(1 − 1[x > 0])
    lambda c: c.g * (sb.Step(c.a) + number(c.params["negative_slope"]) * (1 - sb.Step(c.a))),
    "max(x, 0) + s·min(x, 0); derivative 1[x > 0] + s·1[x < 0]",
    lambda torch, args, p: torch.nn.functional.leaky_relu(args[0], p["negative_slope"]),
    "LeakyReluBackward0",
    {"negative_slope": 0.01},
    r"\operatorname{{lrelu}}\left({0}\right)",
    domain="off_kink",
)
param_function(
    "elu",
    sb.Elu,
    # for x > 0 the slope is 1, else α eˣ = y + α (the forward value again)
    lambda c: c.g * (sb.Step(c.a) + (1 - sb.Step(c.a)) * (c.y + number(c.params["alpha"]))),
    "x for x > 0, α(eˣ − 1) else; derivative 1[x > 0] + 1[x < 0] (y + α)",
    lambda torch, args, p: torch.nn.functional.elu(args[0], p["alpha"]),
    "EluBackward0",
    {"alpha": 1.0},
    r"\operatorname{{elu}}\left({0}\right)",
    domain="off_kink",
)


def clamp_shape(env: ShapeEnv, shapes, params) -> Shape:
    if params.get("min") is None and params.get("max") is None:
        raise ShapeMismatch("clamp needs a bound: clamp(x, min=0), clamp(x, max=1) or both")
    return same_shape(env, shapes, params)


def clamp_grad(c: Ctx) -> Expr:
    lo, hi = c.params.get("min"), c.params.get("max")
    mask = S.One
    if lo is not None:
        mask *= sb.StepGE(c.a - sympy.Float(lo) if lo else c.a)
    if hi is not None:
        mask *= sb.StepGE(sympy.Float(hi) - c.a)
    return c.g * mask


def clamp_torch(torch, args, p):
    return torch.clamp(args[0], min=p.get("min"), max=p.get("max"))


param_function(
    "clamp",
    sb.Clamp,
    clamp_grad,
    "clamp(x, min=a, max=b); derivative 1[a ≤ x ≤ b] (1 at the bounds, as torch: clamp(x, min=0) is relu with "
    "relu′(0) = 1)",
    clamp_torch,
    "ClampBackward1",
    {"min": None, "max": None},
    r"\operatorname{{clamp}}\left({0}{params_kw}\right)",
    domain="off_bounds",
    example="x: (n, d)\nclamp(x, min=0)",
    shape=clamp_shape,
)
unary(
    "gelu",
    sb.Gelu,
    lambda x, y: (1 + sympy.erf(x / sympy.sqrt(2))) / 2 + x * sympy.exp(-(x**2) / 2) / sympy.sqrt(2 * sympy.pi),
    "x Φ(x) (exact, erf form); derivative Φ(x) + x φ(x)",
    torch_fn=lambda torch, args, p: torch.nn.functional.gelu(args[0]),
    printing=fn_printing("gelu", torch="torch.nn.functional.gelu({0})"),
)
unary(
    "softplus",
    sb.Softplus,
    lambda x, y: sb.Sigmoid(x),
    "log(1 + eˣ); derivative σ(x)",
    torch_fn=lambda torch, args, p: torch.nn.functional.softplus(args[0]),
    printing=fn_printing("softplus", torch="torch.nn.functional.softplus({0})"),
)
unary(
    "erf",
    sympy.erf,
    lambda x, y: 2 * sympy.exp(-(x**2)) / sympy.sqrt(sympy.pi),
    "the error function",
    latex=r"\operatorname{{erf}}\left({0}\right)",
)
unary(
    "step_ge",
    sb.StepGE,
    lambda x, y: S.Zero,
    "the indicator 1[x ≥ 0], clamp's derivative; derivative 0",
    printing=Printing(
        text="1[{0} ≥ 0]",
        latex=r"\mathbf{{1}}\left[{0} \geq 0\right]",
        lang="step_ge({0})",
        torch="({0} >= 0).to({0}.dtype)",
    ),
    torch_fn=lambda torch, args, p: (args[0] >= 0).to(args[0].dtype),
    grad_fn=None,
    domain="off_kink",
)

elementwise(
    "maximum",
    2,
    lambda args, shapes, p: sb.Maximum(*args),
    # torch's rule: the larger one takes the gradient, a tie splits it in halves: (1 + sign(a − b))/2
    (lambda c: c.g * (1 + sympy.sign(c.a - c.b)) / 2, lambda c: c.g * (1 + sympy.sign(c.b - c.a)) / 2),
    "elementwise max(a, b); the larger one takes the gradient, a tie splits it: ā = ȳ (1 + sign(a − b))/2",
    sb.Maximum,
    Printing(
        text="max({0}, {1})",
        latex=r"\max\left({0}, {1}\right)",
        lang="maximum({0}, {1})",
        torch="torch.maximum(torch.as_tensor({0}), torch.as_tensor({1}))",
    ),
    lambda torch, args, p: torch.maximum(*as_tensors(torch, args)),
    "MaximumBackward0",
    arg_names=("a", "b"),
)
elementwise(
    "minimum",
    2,
    lambda args, shapes, p: sb.Minimum(*args),
    (lambda c: c.g * (1 + sympy.sign(c.b - c.a)) / 2, lambda c: c.g * (1 + sympy.sign(c.a - c.b)) / 2),
    "elementwise min(a, b); the smaller one takes the gradient, a tie splits it: ā = ȳ (1 + sign(b − a))/2",
    sb.Minimum,
    Printing(
        text="min({0}, {1})",
        latex=r"\min\left({0}, {1}\right)",
        lang="minimum({0}, {1})",
        torch="torch.minimum(torch.as_tensor({0}), torch.as_tensor({1}))",
    ),
    lambda torch, args, p: torch.minimum(*as_tensors(torch, args)),
    "MinimumBackward0",
    arg_names=("a", "b"),
)
elementwise(
    "where",
    3,
    lambda args, shapes, p: sb.Where(*args),
    # the condition holds where it is positive (a comparison gives 1 or 0): 1[c > 0]
    (lambda c: S.Zero, lambda c: c.g * sb.Step(c.args[0]), lambda c: c.g * (1 - sb.Step(c.args[0]))),
    "where(cond, a, b): a where cond > 0 (a comparison such as x > 0 holds), else b",
    sb.Where,
    Printing(
        text="where({0}, {1}, {2})",
        latex=r"\begin{{cases}} {1} & {0} \\ {2} & \text{{else}} \end{{cases}}",
        lang="where({0}, {1}, {2})",
        torch="torch.where({0} > 0, {1}, {2})",
    ),
    lambda torch, args, p: torch.where(torch.as_tensor(args[0]) > 0, args[1], args[2]),
    "WhereBackward0",
    arg_names=("c", "a", "b"),
    example="a: (n, d); b: (n, d)\nwhere(a > b, a, 2 * b)",
)


def comparison(symbol: str, name: str, meaning, summary: str) -> Op:
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
            grad_fn=None,
            summary=summary,
            arg_names=("a", "b"),
            elementwise=True,
            domain=("off_tie", "off_tie"),
        )
    )


comparison(">", "gt", lambda a, b: sb.Step(a - b), "a > b as an indicator 1[a − b > 0] (inside where)")
comparison(">=", "ge", lambda a, b: sb.StepGE(a - b), "a ≥ b as an indicator 1[a − b ≥ 0] (inside where)")
comparison("<", "lt", lambda a, b: sb.Step(b - a), "a < b as an indicator 1[b − a > 0] (inside where)")
comparison("<=", "le", lambda a, b: sb.StepGE(b - a), "a ≤ b as an indicator 1[b − a ≥ 0] (inside where)")


def scalar_of_any(env: ShapeEnv, shapes, params) -> Shape:
    return ()


register(
    Op(
        name="norm",
        example="x: (n, d)\nnorm(x)",
        syntax="norm",
        arity=1,
        shape=scalar_of_any,
        sympy=lambda args, shapes, p: sb.NormOp.build(args, shapes),
        backward=(lambda c: c.g * c.a / c.y,),
        torch=lambda torch, args, p: torch.linalg.norm(args[0]),
        grad_fn="LinalgVectorNormBackward0",
        summary="‖x‖: the 2-norm of a vector, the Frobenius norm of a matrix; x̄ = ȳ x / ‖x‖",
        domain=("nonzero",),
        sympy_class=sb.NormOp,
        printing=Printing(
            text="‖{0}‖", latex=r"\left\lVert {0} \right\rVert", lang="norm({0})", torch="torch.linalg.norm({0})"
        ),
    )
)


def dot_shape(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) != 1 or len(b) != 1:
        raise ShapeMismatch(f"dot needs two vectors, got {fmt(a)} and {fmt(b)}")
    env.unify(a[0], b[0])
    return ()


register(
    Op(
        name="dot",
        example="a: (n,); b: (n,)\ndot(a, b)",
        syntax="dot",
        arity=2,
        shape=dot_shape,
        sympy=lambda args, shapes, p: sb.MatrixProduct.build(args, shapes),
        backward=(lambda c: c.g * c.b, lambda c: c.g * c.a),
        torch=lambda torch, args, p: torch.dot(args[0], args[1]),
        grad_fn="DotBackward0",
        summary="dot(a, b) = aᵀ b for two vectors",
        arg_names=("a", "b"),
    )
)

# --- matrix calculus -------------------------------------------------------------------------------


def square_shape(env: ShapeEnv, shapes, params) -> Shape:
    a = env.resolve(shapes[0])
    if len(a) != 2:
        raise ShapeMismatch(f"needs a square matrix, got {fmt(a)}")
    try:
        env.unify(a[0], a[1])
    except ShapeMismatch:
        raise ShapeMismatch(f"needs a square matrix, got {fmt(a)}") from None
    return env.resolve(a)


def square_to_scalar(env: ShapeEnv, shapes, params) -> Shape:
    square_shape(env, shapes, params)
    return ()


def inv_t(x: Expr, shape: Shape) -> Expr:
    """X⁻ᵀ."""
    return sb.TransposeOp.build([sb.InverseOp.build([x], [shape])], [shape])


def eye_like(shape: Shape) -> Expr:
    return sb.Eye.build([], [], n=shape[0])


register(
    Op(
        name="trace",
        example="A: (n, n)\ntrace(A)",
        syntax="trace",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: sb.TraceOp.build(args, shapes),
        backward=(lambda c: c.g * eye_like(c.shapes[0]),),
        torch=lambda torch, args, p: torch.trace(args[0]),
        grad_fn="TraceBackward0",
        summary="tr A = Σ A_ii; Ā = ȳ I",
        arg_names=("A",),
        sympy_class=sb.TraceOp,
        printing=Printing(
            text="tr({0})", latex=r"\operatorname{{tr}}\left({0}\right)", lang="trace({0})", torch="torch.trace({0})"
        ),
    )
)
register(
    Op(
        name="det",
        example="A: (n, n)\ndet(A)",
        syntax="det",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: sb.DetOp.build(args, shapes),
        backward=(lambda c: c.g * c.y * inv_t(c.a, c.shapes[0]),),
        torch=lambda torch, args, p: torch.det(args[0]),
        grad_fn="LinalgDetBackward0",
        summary="det A; Ā = ȳ det(A) A⁻ᵀ (Jacobi's formula)",
        arg_names=("A",),
        domain=("invertible",),
        sympy_class=sb.DetOp,
        printing=Printing(text="det({0})", latex=r"\det\left({0}\right)", lang="det({0})", torch="torch.det({0})"),
    )
)
register(
    Op(
        name="logdet",
        example="S: (n, n)\nlogdet(S)",
        syntax="logdet",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: sb.LogDetOp.build(args, shapes),
        backward=(lambda c: c.g * inv_t(c.a, c.shapes[0]),),
        torch=lambda torch, args, p: torch.logdet(args[0]),
        grad_fn="WhereBackward0",
        summary="log det A (A drawn SPD); Ā = ȳ A⁻ᵀ",
        arg_names=("A",),
        domain=("spd",),
        sympy_class=sb.LogDetOp,
        printing=Printing(
            text="logdet({0})", latex=r"\log\det\left({0}\right)", lang="logdet({0})", torch="torch.logdet({0})"
        ),
    )
)


def inv_grad(c: Ctx) -> Expr:
    # Y = A⁻¹  ⇒  Ā = −Yᵀ Ȳ Yᵀ
    yt = sb.TransposeOp.build([c.y], [c.out_shape])
    inner = sb.MatrixProduct.build([yt, c.g], [c.out_shape, c.out_shape])
    return -sb.MatrixProduct.build([inner, yt], [c.out_shape, c.out_shape])


register(
    Op(
        name="inv",
        example="A: (n, n)\ninv(A)",
        syntax="inv",
        arity=1,
        shape=square_shape,
        sympy=lambda args, shapes, p: sb.InverseOp.build(args, shapes),
        backward=(inv_grad,),
        torch=lambda torch, args, p: torch.inverse(args[0]),
        grad_fn="LinalgInvExBackward0",
        summary="A⁻¹; with Y = A⁻¹, Ā = −Yᵀ Ȳ Yᵀ",
        arg_names=("A",),
        out_name="Y",
        domain=("invertible",),
        sympy_class=sb.InverseOp,
        printing=Printing(
            text="{0}⁻¹",
            latex=r"{0}^{{-1}}",
            lang="inv({0})",
            torch="torch.inverse({0})",
            prec=PREC_POSTFIX,
            operand_prec=PREC_POSTFIX,
        ),
    )
)


def diag_shape(env: ShapeEnv, shapes, params) -> Shape:
    a = env.resolve(shapes[0])
    if len(a) == 1:
        return (a[0], a[0])
    if len(a) == 2:
        return square_shape(env, shapes, params)[:1]
    raise ShapeMismatch(f"diag needs a vector or a square matrix, got {fmt(a)}")


register(
    Op(
        name="diag",
        example="A: (n, n)\ndiag(A)",
        syntax="diag",
        arity=1,
        shape=diag_shape,
        sympy=lambda args, shapes, p: sb.DiagOp.build(args, shapes),
        backward=(lambda c: sb.DiagOp.build([c.g], [c.out_shape]),),
        torch=lambda torch, args, p: torch.diag(args[0]),
        grad_fn=lambda ranks, consts, params: "DiagonalBackward0_copy" if ranks[0] == 2 else "DiagEmbedBackward0",
        summary="diag(v): the diagonal matrix of a vector; diag(A): the diagonal of a square matrix; "
        "each one's gradient is the other",
        sympy_class=sb.DiagOp,
        printing=Printing(
            text="diag({0})", latex=r"\operatorname{{diag}}\left({0}\right)", lang="diag({0})", torch="torch.diag({0})"
        ),
    )
)


def eye_shape(env: ShapeEnv, shapes, params) -> Shape:
    return (params["n"], params["n"])


register(
    Op(
        name="eye",
        example="A: (n, n)\ntrace(A @ eye(n))",
        syntax="eye",
        arity=0,
        shape=eye_shape,
        sympy=lambda args, shapes, p: sb.Eye.build([], [], n=p["n"]),
        backward=(),
        torch=lambda torch, args, p: torch.eye(p["n"], dtype=torch.float64),
        grad_fn=None,
        summary="eye(n): the n×n identity matrix I (a constant)",
        params={"n": None},
        sympy_class=sb.Eye,
        printing=Printing(text="I", latex="I", lang="eye({n})", torch="torch.eye({n}, dtype=torch.float64)"),
    )
)

# --- convolution and pooling (4-d NCHW) ---
#
# Images are NCHW, x (N, C, H, W); kernels are (F, C, kh, kw). N, C and F may be symbolic; the
# spatial sizes must be known integers (the output size depends on them through a floor division).
# stride, padding and kernel_size are an int or an (h, w) pair, as torch takes them. Each op's
# backward is an op of this block, written as the CNN literature writes it:
#   conv2d      y = x ⋆ K       K̄ = x ⋆ ȳ  (conv2d_grad_weight),  x̄ = ȳ ∗ rot180(K)  (conv2d_grad_input)
#   max_pool2d  y = maxpool(x)  x̄ = route(ȳ → argmax x)  (maxpool_route; its adjoint is maxpool_gather)
#   avg_pool2d  y = avgpool(x)  x̄ = spread(ȳ) / k²  (avgpool_spread; its adjoint is k² avgpool)
#   flatten, unflatten, reshape: each one's gradient is the inverse reshape.
# The torch functions of the gradient ops compute the printed formulas literally (dilate, pad,
# flip and cross-correlate; unfold, pick the arg-max, fold), never with torch's own backward
# kernels, so that verification compares two independent computations.

PREC_CONV = 15  # x ⋆ K: tighter than +, looser than ⊙ (a product around it adds parentheses)
SUBSCRIPT = str.maketrans("0123456789-", "₀₁₂₃₄₅₆₇₈₉₋")


def int_product(values) -> int:
    out = 1
    for v in values:
        out *= v
    return out


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


def unify_or(env: ShapeEnv, a, b, message: str) -> None:
    try:
        env.unify(a, b)
    except ShapeMismatch as err:
        raise ShapeMismatch(f"{message} ({err})") from None


def conv_out(size: int, kernel: int, stride: int, padding: int, op: str) -> int:
    if size + 2 * padding < kernel:
        raise ShapeMismatch(f"{op}: a window of {kernel} does not fit in {size} (padded by {padding})")
    return (size + 2 * padding - kernel) // stride + 1


def conv_geometry(params: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    return hw_pair(params, "stride", 1, 1), hw_pair(params, "padding", 0, 0)


def pool_geometry(params: dict) -> tuple[tuple[int, int], tuple[int, int]]:
    k = hw_pair(params, "kernel_size", 1)
    return k, hw_pair(params, "stride", 1, k)


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


def conv2d_shape(env: ShapeEnv, shapes, params) -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", "conv2d")
    k = nchw(env, shapes[1], "kernel K (F, C, kh, kw)", "conv2d")
    s, p = conv_geometry(params)
    unify_or(env, x[1], k[1], f"conv2d: x {fmt(x)} has {x[1]} channels, the kernel {fmt(k)} expects {k[1]}")
    return (x[0], k[0]) + tuple(conv_out(x[2 + i], k[2 + i], s[i], p[i], "conv2d") for i in (0, 1))


def smallest_input(g: Shape, k: Shape, s, p) -> tuple[int, int]:
    return tuple((g[2 + i] - 1) * s[i] - 2 * p[i] + k[2 + i] for i in (0, 1))


def smallest_kernel(x: Shape, g: Shape, s, p) -> tuple[int, int]:
    return tuple(x[2 + i] + 2 * p[i] - (g[2 + i] - 1) * s[i] for i in (0, 1))


def check_fits(image_size, kernel, s, p, out, op: str) -> None:
    got = tuple(conv_out(image_size[i], kernel[i], s[i], p[i], op) for i in (0, 1))
    if got != tuple(out):
        raise ShapeMismatch(
            f"{op}: a {image_size[0]}×{image_size[1]} image and a {kernel[0]}×{kernel[1]} window give a "
            f"{got[0]}×{got[1]} output, not {out[0]}×{out[1]}"
        )


def conv2d_grad_input_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, F, oh, ow)", "conv2d_grad_input")
    k = nchw(env, shapes[1], "kernel K (F, C, kh, kw)", "conv2d_grad_input")
    s, p = conv_geometry(params)
    unify_or(env, g[1], k[0], f"conv2d_grad_input: the gradient {fmt(g)} and the kernel {fmt(k)} differ in F")
    size = given_size(params, smallest_input(g, k, s, p), "conv2d_grad_input")
    check_fits(size, k[2:], s, p, g[2:], "conv2d_grad_input")
    return (g[0], k[1]) + size


def conv2d_grad_weight_shape(env: ShapeEnv, shapes, params) -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", "conv2d_grad_weight")
    g = nchw(env, shapes[1], "upstream gradient (N, F, oh, ow)", "conv2d_grad_weight")
    s, p = conv_geometry(params)
    unify_or(env, x[0], g[0], f"conv2d_grad_weight: the input {fmt(x)} and the gradient {fmt(g)} differ in N")
    size = given_size(params, smallest_kernel(x, g, s, p), "conv2d_grad_weight", "kernel")
    check_fits(x[2:], size, s, p, g[2:], "conv2d_grad_weight")
    return (g[1], x[1]) + size


def pool_shape(env: ShapeEnv, shapes, params, op: str = "pooling") -> Shape:
    x = nchw(env, shapes[0], "input x (N, C, H, W)", op)
    k, s = pool_geometry(params)
    return x[:2] + tuple(conv_out(x[2 + i], k[i], s[i], 0, op) for i in (0, 1))


def same_batch_and_channels(env: ShapeEnv, a: Shape, b: Shape, op: str) -> None:
    for i, what in ((0, "N"), (1, "C")):
        unify_or(env, a[i], b[i], f"{op}: {fmt(a)} and {fmt(b)} differ in {what}")


def maxpool_route_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, C, oh, ow)", "maxpool_route")
    x = nchw(env, shapes[1], "input x (N, C, H, W)", "maxpool_route")
    same_batch_and_channels(env, g, x, "maxpool_route")
    pooled = pool_shape(env, [x], params, "maxpool_route")
    if pooled[2:] != g[2:]:
        raise ShapeMismatch(f"maxpool_route: pooling x {fmt(x)} gives {fmt(pooled)}, not the gradient's {fmt(g)}")
    return env.resolve(x)


def maxpool_gather_shape(env: ShapeEnv, shapes, params) -> Shape:
    u = nchw(env, shapes[0], "array u (N, C, H, W)", "maxpool_gather")
    x = nchw(env, shapes[1], "input x (N, C, H, W)", "maxpool_gather")
    same_batch_and_channels(env, u, x, "maxpool_gather")
    if u[2:] != x[2:]:
        raise ShapeMismatch(f"maxpool_gather: u {fmt(u)} and x {fmt(x)} must have the same shape")
    return pool_shape(env, [x], params, "maxpool_gather")


def avgpool_spread_shape(env: ShapeEnv, shapes, params) -> Shape:
    g = nchw(env, shapes[0], "upstream gradient (N, C, oh, ow)", "avgpool_spread")
    k, s = pool_geometry(params)
    smallest = tuple((g[2 + i] - 1) * s[i] + k[i] for i in (0, 1))
    size = given_size(params, smallest, "avgpool_spread")
    check_fits(size, k, s, (0, 0), g[2:], "avgpool_spread")
    return g[:2] + size


def conv_torch(torch, args, p):
    return torch.nn.functional.conv2d(args[0], args[1], stride=p["stride"], padding=p["padding"])


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


def conv2d_grad_weight_torch(torch, args, p):
    """x ⋆ ȳ, literally: for each (f, c), the padded input cross-correlated with ȳ dilated by the
    stride, summed over the batch (the batch axis plays the part of the channels)."""
    x, g = args
    s, pad = hw_pair(p, "stride", 1, 1), hw_pair(p, "padding", 0, 0)
    size = given_size(p, smallest_kernel(tuple(x.shape), tuple(g.shape), s, pad), "conv2d_grad_weight")
    padded = torch.nn.functional.pad(x, (pad[1], pad[1], pad[0], pad[0]))
    full = torch.nn.functional.conv2d(padded.transpose(0, 1), g.transpose(0, 1), dilation=s)
    return full[:, :, : size[0], : size[1]].transpose(0, 1)


def pool_windows(torch, x, k, s):
    """Every pooling window of x as a column: (N, C, kh·kw, number of windows)."""
    n, c = x.shape[:2]
    return torch.nn.functional.unfold(x, k, stride=s).reshape(n, c, k[0] * k[1], -1)


def argmax_index(torch, x, k, s):
    """Where in its window each maximum is (the first of equal maxima, as torch's max_pool2d)."""
    return pool_windows(torch, x.detach(), k, s).argmax(dim=2, keepdim=True)


def maxpool_route_torch(torch, args, p):
    g, x = args
    k, s = pool_geometry(p)
    n, c = x.shape[:2]
    index = argmax_index(torch, x, k, s)
    cols = torch.zeros(index.shape[:2] + (k[0] * k[1], index.shape[3]), dtype=g.dtype)
    cols = cols.scatter(2, index, g.reshape(n, c, 1, -1))
    return torch.nn.functional.fold(cols.reshape(n, c * k[0] * k[1], -1), tuple(x.shape[2:]), k, stride=s)


def maxpool_gather_torch(torch, args, p):
    u, x = args
    k, s = pool_geometry(p)
    out = pool_shape(ShapeEnv(), [tuple(x.shape)], p)
    return pool_windows(torch, u, k, s).gather(2, argmax_index(torch, x, k, s)).view(out)


def avgpool_spread_torch(torch, args, p):
    g = args[0]
    k, s = pool_geometry(p)
    n, c = g.shape[:2]
    size = tuple(avgpool_spread_shape(ShapeEnv(), [tuple(g.shape)], p)[2:])
    cols = g.reshape(n, c, 1, -1).expand(n, c, k[0] * k[1], g.shape[2] * g.shape[3])
    return torch.nn.functional.fold(cols.reshape(n, c * k[0] * k[1], -1), size, k, stride=s)


def pool_torch(name: str):
    def run(torch, args, p):
        return getattr(torch.nn.functional, name)(args[0], p["kernel_size"], stride=p.get("stride"))

    return run


# Backward rules. Each gradient op is linear in its gradient operand, so its own rules are the
# other ops of the block (the double backward of a convolution is again a convolution).


def conv_params(c: Ctx) -> dict:
    return {"stride": c.params.get("stride", 1), "padding": c.params.get("padding", 0)}


def grad_input(g, g_shape, k, k_shape, x_shape, params) -> Expr:
    s, p = conv_geometry(params)
    size = size_param(x_shape[2:], smallest_input(g_shape, k_shape, s, p))
    return sb.Conv2dGradInput.build([g, k], [g_shape, k_shape], **params, size=size)


def grad_weight(x, x_shape, g, g_shape, k_shape, params) -> Expr:
    s, p = conv_geometry(params)
    size = size_param(k_shape[2:], smallest_kernel(x_shape, g_shape, s, p))
    return sb.Conv2dGradWeight.build([x, g], [x_shape, g_shape], **params, size=size)


def conv_of(x, x_shape, k, k_shape, params) -> Expr:
    return sb.Conv2d.build([x, k], [x_shape, k_shape], **params)


def pool_params(c: Ctx) -> dict:
    return {"kernel_size": c.params["kernel_size"], "stride": c.params.get("stride")}


def window_area(params: dict) -> int:
    k = hw_pair(params, "kernel_size", 1)
    return k[0] * k[1]


def spread_of(g, g_shape, x_shape, params) -> Expr:
    k, s = pool_geometry(params)
    smallest = tuple((g_shape[2 + i] - 1) * s[i] + k[i] for i in (0, 1))
    return sb.AvgPoolSpread.build([g], [g_shape], **params, size=size_param(x_shape[2:], smallest))


def avgpool_grad(c: Ctx) -> Expr:
    return spread_of(c.g, c.out_shape, c.shapes[0], pool_params(c)) / window_area(c.params)


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


def int_tuple(params: dict, name: str, op: str, allow_fill: bool = False) -> tuple[int, ...]:
    value = params.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    ok = isinstance(value, tuple) and all(isinstance(v, int) and (v >= 1 or (allow_fill and v == -1)) for v in value)
    if not ok or (allow_fill and value.count(-1) > 1):
        fill = " (one of them may be -1)" if allow_fill else ""
        raise ShapeMismatch(f"{op} needs {name} as a tuple of positive integers{fill}, like (6, 4, 4); got {value!r}")
    return value


def unflatten_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    if len(s) == 0:
        raise ShapeMismatch("unflatten needs an array, not a scalar")
    k = normalize_axis(params.get("axis", 1), len(s))
    sizes = int_tuple(params, "sizes", "unflatten")
    unify_or(env, s[k], int_product(sizes), f"unflatten: axis {k} of {fmt(s)} cannot be split into {fmt(sizes)}")
    return s[:k] + sizes + env.resolve(s[k + 1 :])


def reshape_shape(env: ShapeEnv, shapes, params) -> Shape:
    s = env.resolve(shapes[0])
    target = int_tuple(params, "shape", "reshape", allow_fill=True)
    known = int_product(d for d in s if isinstance(d, int))
    symbolic = [d for d in s if isinstance(d, str)]
    wanted = int_product(d for d in target if d != -1)
    if -1 in target:
        if not symbolic and known % wanted == 0:
            fill = known // wanted
        elif len(symbolic) == 1 and known == wanted:
            fill = symbolic[0]  # the symbolic axis (the batch) is what -1 stands for
        else:
            raise ShapeMismatch(f"reshape: {fmt(s)} does not fit {fmt(target)}")
        return tuple(fill if d == -1 else d for d in target)
    if len(symbolic) == 1 and wanted % known == 0:
        env.unify(symbolic[0], wanted // known)
    elif symbolic or known != wanted:
        raise ShapeMismatch(
            f"reshape: {fmt(s)} does not have the {wanted} entries of {fmt(target)}; -1 may stand for a size"
        )
    return target


def view_torch(shape_of):
    """A reshape, always as torch's view (grad_fn ViewBackward0) of a contiguous copy."""

    def run(torch, args, p):
        x = args[0]
        return x.contiguous().view(shape_of(tuple(x.shape), p))

    return run


def flatten_grad(c: Ctx) -> Expr:
    a, b = flatten_axes(c.shapes[0], c.params)
    if a == b:
        return c.g
    return sb.Unflatten.build([c.g], [c.out_shape], axis=a, sizes=tuple(c.shapes[0][a : b + 1]))


def unflatten_grad(c: Ctx) -> Expr:
    k = normalize_axis(c.params.get("axis", 1), len(c.shapes[0]))
    end = k + len(c.params["sizes"]) - 1
    return sb.Flatten.build([c.g], [c.out_shape], start_dim=k, end_dim=end)


def reshape_grad(c: Ctx) -> Expr:
    shape = tuple(d if isinstance(d, int) else -1 for d in c.shapes[0])
    return sb.Reshape.build([c.g], [c.out_shape], shape=shape)


# Printing: the literature's notation where the parameters are the plain ones (stride 1, no
# padding: x ⋆ K), and where they are not, the same notation with pad/dilate/crop written out.


class ByParams:
    """A printing template chosen by the op's parameters: `format(*operands, **params)` as a
    template string has, so that the printer uses it as one."""

    def __init__(self, fn: Callable[..., str]):
        self.fn = fn

    def format(self, *operands: str, **params) -> str:
        return self.fn(operands, {k: (None if v == "" else v) for k, v in params.items()})

    def __contains__(self, item: str) -> bool:
        return True  # an operand may be followed by `.attr` (torch code): compound ones get parentheses


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


def grad_weight_text(o, p):
    return f"{wrap_text('pad', p['padding'], o[0], 0)} ⋆ {wrap_text('dilate', p['stride'], o[1], 1)}"


def grad_weight_latex(o, p):
    return rf"{wrap_latex('pad', p['padding'], o[0], 0)} \star {wrap_latex('dilate', p['stride'], o[1], 1)}"


def grad_input_text(o, p):
    return wrap_text("crop", p["padding"], f"{wrap_text('dilate', p['stride'], o[0], 1)} ∗ rot180({o[1]})", 0)


def grad_input_latex(o, p):
    full = rf"{wrap_latex('dilate', p['stride'], o[0], 1)} * \operatorname{{rot}}_{{180}}\left({o[1]}\right)"
    return wrap_latex("crop", p["padding"], full, 0)


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


def grad_input_code(o, p):
    kw = f"stride={p['stride']}, padding={p['padding']}"
    if p["size"] is None:
        return f"torch.nn.functional.conv_transpose2d({o[0]}, {o[1]}, {kw})"
    h, w = hw_pair(p, "size", 1)
    return f"torch.nn.grad.conv2d_input(({o[0]}.shape[0], {o[1]}.shape[1], {h}, {w}), {o[1]}, {o[0]}, {kw})"


def grad_weight_code(o, p):
    code = (
        f"torch.nn.functional.conv2d({o[0]}.transpose(0, 1), {o[1]}.transpose(0, 1), padding={p['padding']}, "
        f"dilation={p['stride']}).transpose(0, 1)"
    )
    if p["size"] is None:
        return code
    h, w = hw_pair(p, "size", 1)
    return f"{code}[:, :, :{h}, :{w}]"


def pool_code(name: str, x: str, p, extra: str = "") -> str:
    k, s = pool_geometry(p)
    return f"torch.nn.functional.{name}({x}, {k}, stride={s}{extra})"


def argmax_code(x: str, p) -> str:
    return pool_code("max_pool2d", x, p, ", return_indices=True") + "[1]"


def route_code(o, p):
    g, x = o
    return (
        f"torch.zeros_like({x}).flatten(2).scatter_add(2, {argmax_code(x, p)}.flatten(2), {g}.flatten(2)).view_as({x})"
    )


def gather_code(o, p):
    u, x = o
    return f"{u}.flatten(2).gather(2, {argmax_code(x, p)}.flatten(2)).view_as({argmax_code(x, p)})"


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


CONV_PARAMS = {"stride": 1, "padding": 0}
CONV_GRAD_PARAMS = {"stride": 1, "padding": 0, "size": None}
POOL_PARAMS = {"kernel_size": None, "stride": None}

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
        grad_fn="ConvolutionBackward0",
        summary="conv2d(x, K, stride=s, padding=p), NCHW: y[n,f,i,j] = Σ_c,a,b x[n,c,s·i+a−p, s·j+b−p] K[f,c,a,b], "
        "the cross-correlation x ⋆ K (zero padding); K̄ = x ⋆ ȳ, x̄ = ȳ ∗ rot180(K); add a bias b: (F, 1, 1)",
        example="x: (N, 3, 8, 6); K: (4, 3, 3, 2)\nconv2d(x, K)",
        arg_names=("x", "K"),
        params=dict(CONV_PARAMS),
        sympy_class=sb.Conv2d,
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
register(
    Op(
        name="conv2d_grad_input",
        syntax="conv2d_grad_input",
        arity=2,
        shape=conv2d_grad_input_shape,
        sympy=lambda args, shapes, p: sb.Conv2dGradInput.build(args, shapes, **p),
        backward=(
            lambda c: conv_of(c.g, c.out_shape, c.b, c.shapes[1], conv_params(c)),
            lambda c: grad_weight(c.g, c.out_shape, c.a, c.shapes[0], c.shapes[1], conv_params(c)),
        ),
        torch=conv2d_grad_input_torch,
        grad_fn="ConvolutionBackward0",
        summary="conv2d's x̄ = ȳ ∗ rot180(K), the full convolution of ȳ (dilated by the stride) with the flipped "
        "kernel, cropped by the padding: x̄[n,c,s·i+a−p, s·j+b−p] += ȳ[n,f,i,j] K[f,c,a,b]; size=(H, W) where "
        "the stride leaves x's size open",
        example="g: (N, 4, 6, 5); K: (4, 3, 3, 2)\nconv2d_grad_input(g, K)",
        arg_names=("g", "K"),
        params=dict(CONV_GRAD_PARAMS),
        sympy_class=sb.Conv2dGradInput,
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
register(
    Op(
        name="conv2d_grad_weight",
        syntax="conv2d_grad_weight",
        arity=2,
        shape=conv2d_grad_weight_shape,
        sympy=lambda args, shapes, p: sb.Conv2dGradWeight.build(args, shapes, **p),
        backward=(
            lambda c: grad_input(c.b, c.shapes[1], c.g, c.out_shape, c.shapes[0], conv_params(c)),
            lambda c: conv_of(c.a, c.shapes[0], c.g, c.out_shape, conv_params(c)),
        ),
        torch=conv2d_grad_weight_torch,
        grad_fn="TransposeBackward0",
        summary="conv2d's K̄ = x ⋆ ȳ, the cross-correlation of the input with the upstream gradient (dilated by "
        "the stride), summed over the batch: K̄[f,c,a,b] = Σ_n,i,j x[n,c,s·i+a−p, s·j+b−p] ȳ[n,f,i,j]; "
        "size=(kh, kw) where the stride leaves it open",
        example="x: (N, 3, 8, 6); g: (N, 4, 6, 5)\nconv2d_grad_weight(x, g)",
        arg_names=("x", "g"),
        out_name="K",
        params=dict(CONV_GRAD_PARAMS),
        sympy_class=sb.Conv2dGradWeight,
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
register(
    Op(
        name="max_pool2d",
        syntax="max_pool2d",
        arity=1,
        shape=lambda env, shapes, p: pool_shape(env, shapes, p, "max_pool2d"),
        sympy=lambda args, shapes, p: sb.MaxPool2d.build(args, shapes, **p),
        backward=(lambda c: sb.MaxPoolRoute.build([c.g, c.a], [c.out_shape, c.shapes[0]], **pool_params(c)),),
        torch=pool_torch("max_pool2d"),
        grad_fn="MaxPool2DWithIndicesBackward0",
        summary="max_pool2d(x, k, stride=k): y[n,c,i,j] = max_a,b<k x[n,c,s·i+a, s·j+b]; x̄ = route(ȳ → argmax x), "
        "each ȳ to the arg-max of its window (the first of tied maxima, as torch)",
        example="x: (N, C, 6, 4)\nmax_pool2d(x, 2)",
        params=dict(POOL_PARAMS),
        sympy_class=sb.MaxPool2d,
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
register(
    Op(
        name="maxpool_route",
        syntax="maxpool_route",
        arity=2,
        shape=maxpool_route_shape,
        sympy=lambda args, shapes, p: sb.MaxPoolRoute.build(args, shapes, **p),
        backward=(
            lambda c: sb.MaxPoolGather.build([c.g, c.b], [c.out_shape, c.shapes[1]], **pool_params(c)),
            lambda c: S.Zero,
        ),
        torch=maxpool_route_torch,
        grad_fn="Col2ImBackward0",
        summary="max_pool2d's x̄ = route(ȳ → argmax x): x̄[n,c,h,w] = Σ_i,j ȳ[n,c,i,j] 1[(h, w) is the arg-max of "
        "window (i, j) of x]; linear in ȳ (its adjoint is maxpool_gather), constant in x",
        example="g: (N, C, 3, 2); x: (N, C, 6, 4)\nmaxpool_route(g, x, 2)",
        arg_names=("g", "x"),
        params=dict(POOL_PARAMS),
        sympy_class=sb.MaxPoolRoute,
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
register(
    Op(
        name="maxpool_gather",
        syntax="maxpool_gather",
        arity=2,
        shape=maxpool_gather_shape,
        sympy=lambda args, shapes, p: sb.MaxPoolGather.build(args, shapes, **p),
        backward=(
            lambda c: sb.MaxPoolRoute.build([c.g, c.b], [c.out_shape, c.shapes[1]], **pool_params(c)),
            lambda c: S.Zero,
        ),
        torch=maxpool_gather_torch,
        grad_fn="ViewBackward0",
        summary="u[argmax x]: u read where each window of x has its maximum, y[n,c,i,j] = u[n,c,s·i+a*, s·j+b*] "
        "with (a*, b*) the arg-max of window (i, j) of x (max_pool2d(x) = u[argmax x] at u = x); the adjoint of "
        "maxpool_route",
        example="u: (N, C, 6, 4); x: (N, C, 6, 4)\nmaxpool_gather(u, x, 2)",
        arg_names=("u", "x"),
        params=dict(POOL_PARAMS),
        sympy_class=sb.MaxPoolGather,
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
register(
    Op(
        name="avg_pool2d",
        syntax="avg_pool2d",
        arity=1,
        shape=lambda env, shapes, p: pool_shape(env, shapes, p, "avg_pool2d"),
        sympy=lambda args, shapes, p: sb.AvgPool2d.build(args, shapes, **p),
        backward=(avgpool_grad,),
        torch=pool_torch("avg_pool2d"),
        grad_fn="AvgPool2DBackward0",
        summary="avg_pool2d(x, k, stride=k): y[n,c,i,j] = (1/k²) Σ_a,b<k x[n,c,s·i+a, s·j+b]; "
        "x̄ = spread(ȳ) / k², each ȳ shared equally by its window",
        example="x: (N, C, 6, 4)\navg_pool2d(x, 2)",
        params=dict(POOL_PARAMS),
        sympy_class=sb.AvgPool2d,
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
register(
    Op(
        name="avgpool_spread",
        syntax="avgpool_spread",
        arity=1,
        shape=avgpool_spread_shape,
        sympy=lambda args, shapes, p: sb.AvgPoolSpread.build(args, shapes, **p),
        backward=(lambda c: window_area(c.params) * sb.AvgPool2d.build([c.g], [c.out_shape], **pool_params(c)),),
        torch=avgpool_spread_torch,
        grad_fn="Col2ImBackward0",
        summary="spread(g): each entry copied over its window, y[n,c,s·i+a, s·j+b] += g[n,c,i,j] for a, b < k "
        "(the adjoint of sum-pooling: avg_pool2d's x̄ = spread(ȳ) / k²); size=(H, W) where the stride leaves it open",
        example="g: (N, C, 3, 2)\navgpool_spread(g, 2)",
        arg_names=("g",),
        params={"kernel_size": None, "stride": None, "size": None},
        sympy_class=sb.AvgPoolSpread,
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
register(
    Op(
        name="flatten",
        syntax="flatten",
        arity=1,
        shape=flatten_shape,
        sympy=lambda args, shapes, p: sb.Flatten.build(args, shapes, **p),
        backward=(flatten_grad,),
        torch=view_torch(lambda shape, p: flatten_shape(ShapeEnv(), [shape], p)),
        grad_fn="ViewBackward0",
        summary="flatten(x, start_dim=1, end_dim=-1): the axes start_dim..end_dim merged into one in row-major "
        "order, (N, C, H, W) → (N, C·H·W), y[n, (c·H + h)·W + w] = x[n,c,h,w], as x.view(N, -1) (start_dim 1 as "
        "nn.Flatten); x̄ = unflatten(ȳ)",
        example="x: (N, 3, 4, 2)\nflatten(x)",
        params={"start_dim": 1, "end_dim": -1},
        sympy_class=sb.Flatten,
        printing=Printing(
            text="flatten({0}{params_kw})",
            latex=r"\operatorname{{flatten}}\left({0}\right)",
            lang="flatten({0}{params_kw})",
            torch="{0}.flatten({start_dim}, {end_dim})",
        ),
    )
)
register(
    Op(
        name="unflatten",
        syntax="unflatten",
        arity=1,
        shape=unflatten_shape,
        sympy=lambda args, shapes, p: sb.Unflatten.build(args, shapes, **p),
        backward=(unflatten_grad,),
        torch=view_torch(lambda shape, p: unflatten_shape(ShapeEnv(), [shape], p)),
        grad_fn="ViewBackward0",
        summary="unflatten(x, axis, sizes): one axis split into several, (N, 96) → (N, 6, 4, 4) with sizes "
        "(6, 4, 4), y[n,c,h,w] = x[n, (c·4 + h)·4 + w], as torch.unflatten; x̄ = flatten(ȳ) over those axes",
        example="x: (N, 24)\nunflatten(x, 1, (3, 4, 2))",
        params={"axis": 1, "sizes": None},
        sympy_class=sb.Unflatten,
        printing=Printing(
            text="unflatten({0}, {axis}, {sizes})",
            latex=r"\operatorname{{unflatten}}_{{{axis}}}\left({0}, {sizes}\right)",
            lang="unflatten({0}, {axis}, {sizes})",
            torch="{0}.unflatten({axis}, {sizes})",
        ),
    )
)
register(
    Op(
        name="reshape",
        syntax="reshape",
        arity=1,
        shape=reshape_shape,
        sympy=lambda args, shapes, p: sb.Reshape.build(args, shapes, **p),
        backward=(reshape_grad,),
        torch=view_torch(lambda shape, p: int_tuple(p, "shape", "reshape", allow_fill=True)),
        grad_fn="ViewBackward0",
        summary="reshape(x, (a, b, …)): the same entries in row-major order under a new shape, one size may be -1 "
        "(x.view(-1, 96)), y[i, j] = x[k, l] where i·b + j is the row-major position of [k, l]; "
        "x̄ = reshape(ȳ, shape of x)",
        example="x: (N, 3, 8)\nreshape(x, (-1, 4, 6))",
        params={"shape": None},
        sympy_class=sb.Reshape,
        printing=Printing(
            text="reshape({0}, {shape})",
            latex=r"\operatorname{{reshape}}\left({0}, {shape}\right)",
            lang="reshape({0}, {shape})",
            torch="{0}.reshape({shape})",
        ),
    )
)


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
        sympy=lambda args, shapes, p: sb.BroadcastTo.build(args, shapes, **p),
        # the copies' gradients add up: summed back over the axes the broadcast created
        backward=(lambda c: sum_to(c.g, c.out_shape, c.shapes[0]),),
        torch=lambda torch, args, p: torch.broadcast_to(args[0], p["shape"]),
        grad_fn="ExpandBackward0",
        summary="broadcast_to(x, (n, d)): x repeated along new leading axes and its size-1 axes, as NumPy "
        "broadcasting does implicitly (sizes are numbers or dimension names); x̄ = ȳ summed over those axes. "
        "backstep writes it where a gradient relies on broadcasting inside @ or a reduction",
        example="b: (d,); X: (n, d)\nsum(broadcast_to(b, (n, d)) * X)",
        params={"shape": None},
        sympy_class=sb.BroadcastTo,
        printing=Printing(
            text="broadcast_to({0}, {shape})",
            latex=r"\operatorname{{broadcast}}_{{{shape}}}\left({0}\right)",
            lang="broadcast_to({0}, {shape})",
            torch="torch.broadcast_to({0}, {shape})",
        ),
    )
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
