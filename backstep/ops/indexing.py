"""Picking entries by integer arrays: embedding (rows of a table), scatter_rows (its adjoint, the
scatter-add), pick (one entry per row, ``P[range(N), y]``).

An integer index array is a variable drawn as whole numbers 0 … V−1 (the draw domain
``class_index:V`` that cross_entropy's class targets use: no gradient, a LongTensor in torch).
The bound V is read off the node: the rows of the table, scatter_rows' ``rows``, the last axis of
the picked array. A value outside it, or not a whole number (a user's ``--at``), is refused with
the place in the array, never clamped or truncated.
"""

from __future__ import annotations

from sympy import Expr, S

from .. import symbolic as sb
from ..shapes import Shape, ShapeEnv, ShapeMismatch
from ..shapes import fmt_shape_plain as fmt
from .losses import OneHot
from .registry import OPS, register
from .rules import index_tensor
from .spec import DOMAINS, PREC_POSTFIX, Ctx, Domain, Op, Param, Printing


def index_bound(node) -> object:
    """The number of values (V) an index input of this node may take: a size or a dimension name."""
    if node.op.name == "embedding":
        return node.inputs[1].shape[0]  # the rows of the table
    if node.op.name == "scatter_rows":
        return node.params.get("rows")
    return node.inputs[0].shape[-1]  # pick: the last axis of the picked array


# Integer indices below the bound index_bound() reads off the node; drawn as class_index:V.
ROW_INDEX = Domain(
    "row_index", "integer indices 0 … V−1 into the indexed axis", at=lambda n, i: f"class_index:{index_bound(n)}"
)
DOMAINS[ROW_INDEX.name] = ROW_INDEX


# --- embedding -----------------------------------------------------------------------------------


class Embedding(sb.TensorOp):
    """embedding(ix, E) = E[ix]: the rows of E picked by the integer array ix (any rank)."""

    n_operands = 2


def embedding_shape(env: ShapeEnv, shapes, params) -> Shape:
    ix, table = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(table) != 2:
        raise ShapeMismatch(f"embedding(ix, E) needs a table E of shape (rows, features), got {fmt(table)}")
    return ix + (table[1],)


def embedding_torch(torch, args, p):
    ix, table = args
    return torch.nn.functional.embedding(
        index_tensor(torch, ix, table.shape[0], "embedding", "rows of the table"), table
    )


def scatter_of(g: Expr, g_shape: tuple, ix: Expr, ix_shape: tuple, rows) -> Expr:
    return ScatterRows.build([g, ix], [g_shape, ix_shape], rows=rows)


register(
    Op(
        name="embedding",
        example="ix: (N, T); E: (V, D)\nembedding(ix, E)",
        syntax="embedding",
        arity=2,
        shape=embedding_shape,
        sympy=lambda args, shapes, p: Embedding.build(args, shapes),
        # y_i = E[ix_i]  ⇒  Ē[v] = Σ_{i: ix_i = v} ȳ_i (each use of row v adds its gradient)
        backward=(
            lambda c: S.Zero,
            lambda c: scatter_of(c.g, c.out_shape, c.a, c.shapes[0], c.shapes[1][0]),
        ),
        torch=embedding_torch,
        torch_aliases=("torch.nn.functional.embedding", "torch.nn.Embedding"),
        grad_fn="EmbeddingBackward0",
        summary="embedding(ix, E) = E[ix]: the rows of E (V, D) picked by an integer array ix of any shape, "
        "y[i] = E[ix_i]; Ē[v] = Σ_{i: ix_i = v} ȳ_i (a scatter-add: a row used twice gets both gradients); "
        "ix gets no gradient",
        title={"en": "embedding lookup", "zh": "嵌入查找"},
        arg_names=("ix", "E"),
        domains=(ROW_INDEX, None),
        sympy_class=Embedding,
        printing=Printing(
            text="{1}[{0}]",
            latex=r"{1}\left[{0}\right]",
            lang="embedding({0}, {1})",
            torch="torch.nn.functional.embedding({0}.long(), {1})",
            prec=PREC_POSTFIX,
            operand_prec=PREC_POSTFIX,
        ),
    )
)

# --- scatter_rows: embedding's adjoint -------------------------------------------------------------


class ScatterRows(sb.TensorOp):
    """scatter_rows(g, ix, V): the (V, D) array whose row v is the sum of the rows g_i with ix_i = v."""

    n_operands = 2
    param_names = ("rows",)


def scatter_rows_shape(env: ShapeEnv, shapes, params) -> Shape:
    g, ix = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(g) != len(ix) + 1:
        raise ShapeMismatch(
            f"scatter_rows(g, ix, V) needs g of ix's shape plus one axis of features, got g {fmt(g)} and ix {fmt(ix)}"
        )
    try:
        for dg, di in zip(g, ix):
            env.unify(dg, di)
    except ShapeMismatch:
        raise ShapeMismatch(
            f"scatter_rows: g {fmt(g)} does not fit ix {fmt(ix)} (g must be ix's shape × features)"
        ) from None
    return (params["rows"], g[-1])


def scatter_rows_torch(torch, args, p):
    g, ix = args
    rows, features = p["rows"], g.shape[-1]
    index = index_tensor(torch, ix, rows, "scatter_rows", "rows it scatters into").reshape(-1)
    return g.new_zeros((rows, features)).index_add(0, index, g.reshape(-1, features))


register(
    Op(
        name="scatter_rows",
        example="g: (N, T, D); ix: (N, T)\nscatter_rows(g, ix, 5)",
        syntax="scatter_rows",
        arity=2,
        shape=scatter_rows_shape,
        sympy=lambda args, shapes, p: ScatterRows.build(args, shapes, **p),
        # its adjoint reads the rows back: ḡ_i = Ū[ix_i]
        backward=(lambda c: Embedding.build([c.b, c.g], [c.shapes[1], c.out_shape]), lambda c: S.Zero),
        torch=scatter_rows_torch,
        grad_fn="IndexAddBackward0",
        summary="scatter_rows(g, ix, V)[v] = Σ_{i: ix_i = v} g_i: the rows of g added into V rows where ix "
        "points (a scatter-add, embedding's adjoint); ḡ = Ū[ix]",
        title={"en": "scatter-add into rows", "zh": "按行散射相加"},
        arg_names=("g", "ix"),
        out_name="U",
        parameters=(Param("rows", "size", required=True),),
        domains=(None, ROW_INDEX),
        sympy_class=ScatterRows,
        printing=Printing(
            text="[Σ_{{i: {1}_i = v}} {0}_i]_v",
            latex=r"\Big[\sum_{{i:\, {1}_i = v}} {0}_i\Big]_{{v < {rows}}}",
            lang="scatter_rows({0}, {1}, {rows})",
            torch="{0}.new_zeros(({rows}, {0}.shape[-1])).index_add(0, {1}.long().flatten(), "
            "{0}.reshape(-1, {0}.shape[-1]))",
            operand_prec=PREC_POSTFIX,
        ),
    )
)

# --- pick: one entry per row ---------------------------------------------------------------------


class Pick(sb.TensorOp):
    """pick(P, y)[i] = P[i, y_i]: one entry of each row of P, at the integer y_i."""

    n_operands = 2


def pick_shape(env: ShapeEnv, shapes, params) -> Shape:
    p, y = env.resolve(shapes[0]), env.resolve(shapes[1])
    if len(p) != len(y) + 1:
        raise ShapeMismatch(
            f"pick(P, y) needs y with one axis fewer than P (P (N, C), y (N,)), got {fmt(p)} and {fmt(y)}"
        )
    try:
        for dp, dy in zip(p, y):
            env.unify(dp, dy)
    except ShapeMismatch:
        raise ShapeMismatch(
            f"pick: y {fmt(y)} does not fit P {fmt(p)} (y must be P's shape without its last axis)"
        ) from None
    return env.resolve(y)


def pick_torch(torch, args, p):
    probs, y = args
    index = index_tensor(torch, y, probs.shape[-1], "pick", "entries of each row")
    return probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)


def pick_grad(c: Ctx) -> Expr:
    # P̄ = onehot(y) ⊙ ȳ: each ȳ_i lands on the entry it was read from (CS231n's dscores[range(N), y])
    p_shape, y_shape = c.shapes
    upstream = sb.UnsqueezeOp.build([c.g], [c.out_shape], axis=len(y_shape))
    return OneHot.build([c.b], [y_shape], classes=p_shape[-1]) * upstream


register(
    Op(
        name="pick",
        example="P: (N, C); y: (N,)\npick(P, y)",
        syntax="pick",
        arity=2,
        shape=pick_shape,
        sympy=lambda args, shapes, p: Pick.build(args, shapes),
        backward=(pick_grad, lambda c: S.Zero),
        torch=pick_torch,
        torch_aliases=("torch.gather",),  # one entry per row only: trace/index_adapters.py reads the index
        grad_fn="SqueezeBackward1",
        summary="pick(P, y)[i] = P[i, y_i]: one entry of each row, NumPy's P[np.arange(N), y] and torch's "
        "P.gather(1, y[:, None])[:, 0] (along the last axis, at any rank); P̄ = onehot(y) ⊙ ȳ",
        title={"en": "picking one entry per row", "zh": "按行取值"},
        arg_names=("P", "y"),
        out_name="p",
        domains=(None, ROW_INDEX),
        sympy_class=Pick,
        printing=Printing(
            text="pick({0}, {1})",
            latex=r"\operatorname{{pick}}\left({0}, {1}\right)",
            lang="pick({0}, {1})",
            torch="{0}.gather(-1, {1}.long().unsqueeze(-1)).squeeze(-1)",
        ),
    )
)

# What a subscript by an array is made of (the parser's parse_joins): E[ix], P[range(N), y].
EMBEDDING, PICK = OPS["embedding"], OPS["pick"]
