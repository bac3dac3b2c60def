"""Linear algebra: the matrix product, transpose, outer and dot products, norm, and the matrix
calculus of trace, det, logdet, inv, diag and eye.

The product, transpose, outer product, inverse and identity are SymPy classes of the base
algebra (symbolic.py), since the printers and the checker reason about them by structure; the
others are declared in their op's block here.
"""

from __future__ import annotations

from sympy import Expr

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .einsum import batched_equation, batched_matmul_shape, einsum_of, einsum_vjp, is_batched, torch_grad_fn
from .registry import register
from .rules import expand_back, reduce_axes, reduce_shape
from .spec import INVERTIBLE, KEEPDIMS, NONZERO, PREC_MATMUL, PREC_POSTFIX, SPD, ByParams, Ctx, Op, Param, Printing

# --- products ------------------------------------------------------------------------------------


def matmul_shape(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) == 0 or len(b) == 0:
        raise ShapeMismatch(f"@ needs arrays of rank 1 or 2, got {fmt(a)} @ {fmt(b)}; use * for a scalar")
    if is_batched([a, b]):
        return batched_matmul_shape(env, [a, b])
    try:
        env.unify(a[-1], b[0])
    except ShapeMismatch as err:
        raise ShapeMismatch(f"{fmt(a)} @ {fmt(b)}: inner dimensions differ ({err})") from None
    return env.resolve(a[:-1] + b[1:])


def matmul_sympy(args, shapes, params) -> Expr:
    """A @ B: a matrix product, or (an operand of rank 3 or more) torch.matmul's batched product as an einsum."""
    if is_batched(shapes):
        return einsum_of(args, shapes, batched_equation(shapes))
    return sb.MatrixProduct.build(args, shapes)


def matmul_grad_a(c: Ctx) -> Expr:
    sa, sb_ = c.shapes
    if is_batched(c.shapes):
        return einsum_vjp(0)(batched_ctx(c))
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
    if is_batched(c.shapes):
        return einsum_vjp(1)(batched_ctx(c))
    if len(sa) == 1 and len(sb_) == 1:
        return c.g * c.a
    if len(sa) == 1:  # a (k,) @ B (k,m) -> g (m,):  B̄ = a gᵀ
        return sb.OuterProduct.build([c.a, c.g], [sa, c.out_shape])
    at = sb.TransposeOp.build([c.a], [sa])
    return sb.MatrixProduct.build([at, c.g], [tuple(reversed(sa)), c.out_shape])


def batched_ctx(c: Ctx) -> Ctx:
    """The batched product's context as its einsum's: the equation among the parameters."""
    return Ctx(c.g, c.args, c.y, c.shapes, c.out_shape, {"equation": batched_equation(c.shapes)})


def matmul_grad_fn(ranks, consts, params) -> str:
    if max(ranks) > 2:
        shapes = [tuple(range(r)) for r in ranks]
        return torch_grad_fn(batched_equation(shapes), as_matmul=True) or "UnsafeViewBackward0"
    return {(2, 2): "MmBackward0", (2, 1): "MvBackward0", (1, 1): "DotBackward0", (1, 2): "SqueezeBackward4"}[ranks]


register(
    Op(
        name="matmul",
        example="A: (n, k); B: (k, m)\nA @ B",
        syntax="@",
        arity=2,
        positive_through=True,
        input_ranks=(2, 2),
        shape=matmul_shape,
        sympy=matmul_sympy,
        backward=(matmul_grad_a, matmul_grad_b),
        torch=lambda torch, args, p: args[0] @ args[1],
        torch_aliases=(
            "operator.matmul",
            "torch.matmul",
            "torch.mm",
            "torch.bmm",
            "torch.Tensor.matmul",
            "torch.Tensor.mm",
            "torch.Tensor.bmm",
        ),
        grad_fn=matmul_grad_fn,
        summary="matrix product (1-d operands are vectors, as in NumPy); on operands of rank 3 and more "
        "torch.matmul's batched product, written as an einsum",
        title={"en": "matrix product", "zh": "矩阵乘法"},
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
            python_operator=True,
        ),
    )
)


def transpose_shape(env: ShapeEnv, shapes, params) -> Shape:
    return tuple(reversed(env.resolve(shapes[0])))


register(
    Op(
        name="transpose",
        example="A: (n, d)\nA.T",
        syntax=".T",
        arity=1,
        positive_through=True,
        shape_passes_rank=True,
        shape=transpose_shape,
        sympy=lambda args, shapes, p: sb.TransposeOp.build(args, shapes),
        backward=(lambda c: sb.TransposeOp.build([c.g], [c.out_shape]),),
        torch=lambda torch, args, p: args[0].permute(tuple(reversed(range(args[0].dim())))),
        torch_aliases=(
            "torch.t",
            "torch.transpose",
            "torch.Tensor.t",
            "torch.Tensor.transpose",
        ),
        grad_fn="PermuteBackward0",
        summary="transpose: reverses the axes",
        title={"en": "transpose", "zh": "转置"},
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


def outer_shape(env: ShapeEnv, shapes, params) -> Shape:
    a, b = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(a) != 1 or len(b) != 1:
        raise ShapeMismatch(f"outer needs two vectors, got {fmt(a)} and {fmt(b)}")
    return (a[0], b[0])


register(
    Op(
        name="outer",
        example="a: (n,); b: (d,)\nouter(a, b)",
        syntax="outer",
        arity=2,
        positive_through=True,
        input_ranks=(1, 1),
        shape=outer_shape,
        sympy=lambda args, shapes, p: sb.OuterProduct.build(args, shapes),
        backward=(
            lambda c: sb.MatrixProduct.build([c.g, c.b], [c.out_shape, c.shapes[1]]),
            lambda c: sb.MatrixProduct.build(
                [sb.TransposeOp.build([c.g], [c.out_shape]), c.a], [tuple(reversed(c.out_shape)), c.shapes[0]]
            ),
        ),
        torch=lambda torch, args, p: torch.outer(args[0], args[1]),
        torch_aliases=("torch.outer", "torch.Tensor.outer"),
        grad_fn="MulBackward0",
        summary="outer product of two vectors, a bᵀ",
        title={"en": "outer product", "zh": "外积"},
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
        torch_aliases=("torch.dot", "torch.Tensor.dot"),
        grad_fn="DotBackward0",
        summary="dot(a, b) = aᵀ b for two vectors",
        title={"en": "dot product", "zh": "点积"},
        arg_names=("a", "b"),
    )
)


class NormOp(sb.TensorOp):
    """The 2-norm of a vector, the Frobenius norm of a matrix; along axes, the vectors' 2-norms."""

    param_names = ("axis", "keepdims")


def norm_torch(torch, args, p):
    if p.get("axis") is None and not p.get("keepdims"):
        return torch.linalg.norm(args[0])
    dims = reduce_axes(p.get("axis"), args[0].dim())
    return torch.linalg.vector_norm(args[0], dim=dims, keepdim=bool(p.get("keepdims")))


def norm_printing() -> Printing:
    """‖x‖ of every entry; norm(x, axis=1) along an axis, as mean(x, axis=1) prints."""

    def of_all(p: dict) -> bool:
        return p.get("axis") is None and not p.get("keepdims")

    def torch_code(ops, p: dict) -> str:
        return f"torch.linalg.norm({ops[0]})" if of_all(p) else f"torch.linalg.vector_norm({ops[0]}{p['dim_kw']})"

    return Printing(
        text=ByParams(lambda ops, p: f"‖{ops[0]}‖" if of_all(p) else f"norm({ops[0]}{p['axis_kw']})"),
        latex=ByParams(
            lambda ops, p: (
                rf"\left\lVert {ops[0]} \right\rVert"
                if of_all(p)
                else rf"\operatorname{{norm}}{p.get('axis_sub') or ''}\left({ops[0]}\right)"
            )
        ),
        lang=ByParams(lambda ops, p: f"norm({ops[0]}{p.get('axis_kw') or ''})"),
        torch=ByParams(torch_code),
    )


register(
    Op(
        name="norm",
        example="x: (n, d)\nnorm(x)",
        syntax="norm",
        arity=1,
        shape=reduce_shape,
        sympy=lambda args, shapes, p: NormOp.build(args, shapes, **p),
        # x̄ = ȳ x / ‖x‖, with ȳ and ‖x‖ laid back out over the reduced axes
        backward=(lambda c: expand_back(c.g, c.shapes[0], c.params) * c.a / expand_back(c.y, c.shapes[0], c.params),),
        torch=norm_torch,
        torch_aliases=("torch.linalg.norm", "torch.norm", "torch.Tensor.norm", "torch.linalg.vector_norm"),
        grad_fn="LinalgVectorNormBackward0",
        summary="‖x‖: the 2-norm of a vector, the Frobenius norm of a matrix, or along axes (norm(x, axis=1), as "
        "torch.linalg.vector_norm(x, dim=1)); x̄ = ȳ x / ‖x‖",
        title={"en": "norm", "zh": "范数"},
        parameters=(Param("axis", "ints", None, aliases=("dim",)), KEEPDIMS),
        domains=(NONZERO,),
        sympy_class=NormOp,
        printing=norm_printing(),
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


class TraceOp(sb.TensorOp):
    pass


register(
    Op(
        name="trace",
        example="A: (n, n)\ntrace(A)",
        syntax="trace",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: TraceOp.build(args, shapes),
        backward=(lambda c: c.g * eye_like(c.shapes[0]),),
        torch=lambda torch, args, p: torch.trace(args[0]),
        torch_aliases=("torch.trace", "torch.Tensor.trace"),
        grad_fn="TraceBackward0",
        summary="tr A = Σ A_ii; Ā = ȳ I",
        title={"en": "trace", "zh": "迹"},
        arg_names=("A",),
        sympy_class=TraceOp,
        printing=Printing(
            text="tr({0})", latex=r"\operatorname{{tr}}\left({0}\right)", lang="trace({0})", torch="torch.trace({0})"
        ),
    )
)


class DetOp(sb.TensorOp):
    pass


register(
    Op(
        name="det",
        example="A: (n, n)\ndet(A)",
        syntax="det",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: DetOp.build(args, shapes),
        backward=(lambda c: c.g * c.y * inv_t(c.a, c.shapes[0]),),
        torch=lambda torch, args, p: torch.det(args[0]),
        torch_aliases=("torch.det", "torch.linalg.det", "torch.Tensor.det"),
        grad_fn="LinalgDetBackward0",
        summary="det A; Ā = ȳ det(A) A⁻ᵀ (Jacobi's formula)",
        title={"en": "determinant", "zh": "行列式"},
        arg_names=("A",),
        domains=(INVERTIBLE,),
        sympy_class=DetOp,
        printing=Printing(text="det({0})", latex=r"\det\left({0}\right)", lang="det({0})", torch="torch.det({0})"),
    )
)


class LogDetOp(sb.TensorOp):
    pass


register(
    Op(
        name="logdet",
        example="S: (n, n)\nlogdet(S)",
        syntax="logdet",
        arity=1,
        shape=square_to_scalar,
        sympy=lambda args, shapes, p: LogDetOp.build(args, shapes),
        backward=(lambda c: c.g * inv_t(c.a, c.shapes[0]),),
        torch=lambda torch, args, p: torch.logdet(args[0]),
        torch_aliases=("torch.logdet", "torch.Tensor.logdet"),
        grad_fn="WhereBackward0",
        summary="log det A (A drawn SPD); Ā = ȳ A⁻ᵀ",
        title={"en": "log-determinant", "zh": "对数行列式"},
        arg_names=("A",),
        domains=(SPD,),
        sympy_class=LogDetOp,
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
        torch_aliases=("torch.inverse", "torch.linalg.inv", "torch.Tensor.inverse"),
        grad_fn="LinalgInvExBackward0",
        summary="A⁻¹; with Y = A⁻¹, Ā = −Yᵀ Ȳ Yᵀ",
        title={"en": "inverse", "zh": "逆矩阵"},
        arg_names=("A",),
        out_name="Y",
        domains=(INVERTIBLE,),
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


class DiagOp(sb.TensorOp):
    """torch.diag: the diagonal of a matrix, or the diagonal matrix of a vector."""

    @classmethod
    def eval(cls, x, shape):
        if x.is_Number and len(shape.args) == 1:
            return x * sb.Eye.build([], [], n=sb.shape_from_sympy(shape)[0])  # diag(c 𝟏) = c I
        return None


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
        sympy=lambda args, shapes, p: DiagOp.build(args, shapes),
        backward=(lambda c: DiagOp.build([c.g], [c.out_shape]),),
        torch=lambda torch, args, p: torch.diag(args[0]),
        torch_aliases=("torch.diag", "torch.Tensor.diag"),
        grad_fn=lambda ranks, consts, params: "DiagonalBackward0_copy" if ranks[0] == 2 else "DiagEmbedBackward0",
        summary="diag(v): the diagonal matrix of a vector; diag(A): the diagonal of a square matrix; "
        "each one's gradient is the other",
        title={"en": "diagonal", "zh": "对角"},
        sympy_class=DiagOp,
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
        arg_names=(),
        summary="eye(n): the n×n identity matrix I (a constant)",
        title={"en": "identity", "zh": "单位矩阵"},
        parameters=(Param("n", "size", required=True),),
        sympy_class=sb.Eye,
        printing=Printing(
            text="I",
            latex="I",
            lang="eye({n})",
            torch="torch.eye({n}, dtype=torch.float64)",
            code="torch.eye({n}, dtype={dtype}, device={device})",
        ),
    )
)
