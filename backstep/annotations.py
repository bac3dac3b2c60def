"""The shapes of a program: those written (annotations such as `W: (D, 4*H)`), those given
(`--shape`, and the arrays of `--at`), and the inference of those nobody wrote.

The rule for a variable without a shape (README, "The input language"): it is a scalar unless an
op needs it to be an array —

- an op that declares the rank of an operand (`@`: a matrix, conv2d: a 4-d NCHW image) makes it
  that rank, and so does an op with an axis (`sum(x, axis=1)`: a matrix), through the
  elementwise ops in between (`(X + b) @ W` makes X and b matrices) — unless another operand of
  such an elementwise op is already an array, which gives it its shape (`softmax(Z / T)` with Z a
  matrix leaves T a scalar);
- an op that refuses it as a scalar (`mse(X @ W, Y)`, `cross_entropy(Z, t)`) makes it an array of
  the smallest rank that op accepts (Y a matrix like X @ W, t a vector of class indices).

A note says which choice was made where it could have gone the other way, and how to override it.

These are functions of the parser's builder (`b`), kept here so that parser.py stays the walk over
the syntax.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable

import sympy

from . import ops as op_table
from .errors import ParseError, ShapeError, UnsupportedError
from .graph import Node
from .shapes import NICE_DIM_NAMES, ShapeEnv, ShapeMismatch, fmt_shape_plain
from .symbolic import Dim

RESERVED = {"True", "False", "None"}
MAX_RANK_TRIED = 4  # an op that refuses a scalar is offered arrays of rank 1 … 4
MAX_RESTARTS = 32  # inference runs again at most this often (each retry re-infers the whole graph)

SHAPE_FORM = (
    "a shape is a tuple of dimension names, positive integers, or one name times or plus integers, "
    "like (n, d), (64, 10) or (D, 4*H)"
)


# --- what is written and given ------------------------------------------------------------------


def collect_annotations(b, statements: list[ast.stmt]) -> None:
    """Read the annotations, check them against --shape and --at, and note the names called."""
    for st in statements:
        for node in ast.walk(st):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                b.called.add(node.func.id)
        if isinstance(st, ast.AnnAssign):
            if not isinstance(st.target, ast.Name):
                b._fail(UnsupportedError, "only a plain name can be annotated with a shape", st.target)
            name, annotation = st.target.id, st.annotation
            if isinstance(annotation, ast.Compare) and any(isinstance(op, ast.In) for op in annotation.ops):
                b.declared_domains[name] = index_domain(b, annotation)
                annotation = annotation.left
            shape = annotation_shape(b, annotation)
            if name in b.declared:
                b._fail(ParseError, f"the shape of {name} is given twice", st)
            b.declared[name] = shape
            b.declared_at[name] = b._place(st)
    for name, shape in b.cli_shapes.items():
        if name in b.declared and not shapes_agree(b.env, b.declared[name], shape):
            raise ShapeError(
                f"--shape {name}={fmt_shape_plain(shape)} disagrees with the annotation "
                f"{name}: {fmt_shape_plain(b.declared[name])}",
                b.declared_at[name],
                b.source,
            )
    for shape in list(b.declared.values()) + list(b.cli_shapes.values()):
        b.dim_names.update(base_name(b.env, d) for d in shape if isinstance(d, str))
    bind_data_shapes(b)


def index_domain(b, annotation: ast.Compare) -> str:
    """`ix: (N, T) in range(V)`: an integer array of values 0 … V−1 (V a dimension name or a positive
    integer), the --assume ix=index:V of the program."""
    bound = annotation.comparators[0]
    call = isinstance(bound, ast.Call) and isinstance(bound.func, ast.Name) and bound.func.id == "range"
    arg = bound.args[0] if call and len(bound.args) == 1 and not bound.keywords else None
    if len(annotation.ops) == 1 and isinstance(arg, ast.Name):
        b.dim_names.add(arg.id)
        return f"index:{arg.id}"
    if len(annotation.ops) == 1 and isinstance(arg, ast.Constant) and type(arg.value) is int and arg.value >= 1:
        return f"index:{arg.value}"
    b._fail(ParseError, "an integer index array is declared ix: (N, T) in range(V), V a dimension or a number", bound)


def base_name(env: ShapeEnv, dim: str) -> str:
    """The name a dimension is written with: H for 4*H."""
    return env.linear[dim][1] if dim in env.linear else dim


def shapes_agree(env: ShapeEnv, a: tuple, b: tuple) -> bool:
    """An annotation and a --shape agree when they unify (a name may take a size)."""
    if len(a) != len(b):
        return False
    try:
        for da, db in zip(a, b):
            env.unify(da, db)
    except ShapeMismatch:
        return False
    return True


def annotation_shape(b, ann: ast.expr) -> tuple:
    items = ann.elts if isinstance(ann, ast.Tuple) else [ann]
    shape = []
    for item in items:
        coef, base, const = _linear(b, item)
        if base is None or coef == 0:
            if const < 1:
                b._fail(ParseError, f"{SHAPE_FORM}; a size is at least 1, not {const}", item)
            shape.append(const)
        elif coef < 0:
            b._fail(ParseError, f"a size cannot shrink as {base} grows ({b._segment(item)})", item)
        else:
            shape.append(b.env.linear_dim(coef, base, const))
    return tuple(shape)


def _linear(b, item: ast.expr) -> tuple[int, str | None, int]:
    """A size as coef*name + const, read from the syntax tree (never evaluated)."""
    if isinstance(item, ast.Name):
        return 1, item.id, 0
    if isinstance(item, ast.Constant) and type(item.value) is int:
        return 0, None, item.value
    if isinstance(item, ast.UnaryOp) and isinstance(item.op, (ast.USub, ast.UAdd)):
        coef, base, const = _linear(b, item.operand)
        return (-coef, base, -const) if isinstance(item.op, ast.USub) else (coef, base, const)
    if isinstance(item, ast.BinOp) and isinstance(item.op, (ast.Add, ast.Sub, ast.Mult)):
        (c1, b1, k1), (c2, b2, k2) = _linear(b, item.left), _linear(b, item.right)
        if isinstance(item.op, ast.Mult):
            if b1 is not None and b2 is not None:
                b._fail(ParseError, "a size may multiply a dimension name by an integer (4*H), not by a name", item)
            base = b1 if b1 is not None else b2
            if b1 is None:
                return k1 * c2, base, k1 * k2
            return c1 * k2, base, k1 * k2
        if b1 is not None and b2 is not None and b1 != b2:
            b._fail(ParseError, f"a size may use one dimension name, not two ({b1} and {b2})", item)
        sign = -1 if isinstance(item.op, ast.Sub) else 1
        return c1 + sign * c2, b1 if b1 is not None else b2, k1 + sign * k2
    b._fail(ParseError, SHAPE_FORM, item)


def bind_data_shapes(b) -> None:
    """The arrays of --at fix their variables' shapes.

    First (b.concrete_data false) a variable keeps the names it is written with and the data
    only gives their sizes (checked once shapes are inferred): the derivation reads `N`, not 64.
    Where the shapes cannot be inferred with names (conv2d needs known spatial sizes), parsing
    runs again with every such name bound to its number (b.concrete_data true)."""
    for name, data in b.data_shapes.items():
        written = b.cli_shapes.get(name, b.declared.get(name))
        if written is None and name in b.dim_names:
            continue  # a dimension, not a variable: evaluate_at says so
        how = f"--shape {name}=" if name in b.cli_shapes else f"the annotation {name}: "
        where = None if name in b.cli_shapes else b.declared_at.get(name)
        if written is None:
            # (a size 1 stays 1: it broadcasts, it is no batch of one)
            shape = data if b.concrete_data else tuple(1 if s == 1 else b.env.fresh() for s in data)
            b.cli_shapes[name] = shape
            b.data_bound += list(zip(shape, data))
            b.from_data.append(name)
            continue
        problem = None
        if len(written) != len(data):
            problem = "rank"
        else:
            try:
                for want, have in zip(written, data):
                    if b.concrete_data or isinstance(want, int):
                        b.env.unify(want, have)
                    else:
                        b.data_bound.append((want, have))
            except ShapeMismatch as err:
                problem = str(err)
        if problem:
            detail = "" if problem == "rank" else f" ({problem})"
            raise ShapeError(
                f"--at {name} is an array of shape {fmt_shape_plain(data)}, which does not fit "
                f"{how}{fmt_shape_plain(written)}{detail}",
                where,
                b.source,
            )
        if b.concrete_data:
            b.cli_shapes[name] = data
            b.data_notes += [f"{want} = {have}" for want, have in zip(written, data) if isinstance(want, str)]


def parse_with_data(build: Callable, data_shapes: dict):
    """Build with the names of the annotations kept; if the shapes do not fit that way, with
    the --at arrays' numbers in their place (their message then is the one to show)."""
    if not data_shapes:
        return build(data_shapes={}, concrete_data=False)
    try:
        return build(data_shapes=dict(data_shapes), concrete_data=False)
    except ShapeError:
        return build(data_shapes=dict(data_shapes), concrete_data=True)


def check_name(b, name: str, where: ast.AST) -> None:
    """A name a program may use. An intermediate may take a function's name (`cos = …`), as
    Python allows, unless the program also calls that function (then `cos` would mean two things);
    a variable may not (`sum * x` is a slip more often than a variable called sum)."""
    if name.startswith("_") or name in RESERVED:
        b._fail(UnsupportedError, f"the name {name} is not allowed (no leading underscore)", where)
    if name in op_table.FUNCTION_OPS:
        reading = isinstance(where, ast.Name) and isinstance(where.ctx, ast.Load)
        if reading:
            b._fail(ParseError, f"{name} is a function; a variable needs another name ({name}_)", where)
        if name in b.called:
            b._fail(
                ParseError,
                f"{name} is a function this program also calls; give the intermediate another name ({name}_)",
                where,
            )


# --- inference ------------------------------------------------------------------------------------


def infer_shapes(b, nodes: list[Node]) -> None:
    """Every node's shape: the unwritten variables' ranks, then each op's shape rule in order.

    When an op refuses an operand that is a variable made a scalar by default, the variable is
    offered rank 1, 2, … in turn and inference runs again from the start (restoring the
    unifications), so that `mse(X @ W, Y)` makes Y a matrix."""
    start = b.env.state()
    unwritten = [v for v in b.variables if v.shape is None]
    raised: dict[int, int] = {}
    raised_by: dict[int, str] = {}
    first_error: ShapeError | None = None
    for _ in range(MAX_RESTARTS):
        b.env.restore(start)
        for v in unwritten:
            v.shape = None
        defaulted = assign_ranks(b, nodes, raised)
        failed = _run_shape_rules(b, nodes)
        if failed is None:
            break
        node, error = failed
        first_error = first_error or error
        candidates = [a for a in node.inputs if a.id in defaulted and raised.get(a.id, 0) < MAX_RANK_TRIED]
        if not candidates:
            raise first_error
        retry = min(candidates, key=lambda a: raised.get(a.id, 0))  # dot(a, b): a a vector, then b
        raised[retry.id] = raised.get(retry.id, 0) + 1
        raised_by[retry.id] = node.op.name
    else:
        raise first_error
    b.raised = raised_by
    _check_data_sizes(b)
    _numbers_for_dimensions(b)
    for node in nodes:  # a shape parameter's names that have become numbers: reshape(x, (N, -1)) with N = 2
        for key, value in node.params.items():
            if isinstance(value, tuple) and any(isinstance(d, str) for d in value):
                node.params[key] = tuple(b.env.find(d) if isinstance(d, str) else d for d in value)


def _run_shape_rules(b, nodes: list[Node]):
    """Each op's shape, in order; the first op that refuses its operands and its error, or None."""
    for node in nodes:
        if node.kind != "op":
            continue
        try:
            node.shape = node.op.shape(b.env, [a.shape for a in node.inputs], node.params)
        except ShapeMismatch as err:
            return node, ShapeError(shape_message(b, node, err), node.place, b.source)
        if node.annotated is not None:
            check_annotation(b, node, node.annotated)
    return None


def _check_data_sizes(b) -> None:
    """The sizes of the --at arrays against the dimensions inferred for their axes."""
    sizes: dict = {}
    bases = {b.env.find(base) for _, base, _ in b.env.linear.values()}
    for dim, size in b.data_bound:
        root = b.env.find(dim)
        if root in bases:  # h: (N, H) and W: (D, 4*H): the data's H makes 4*H a number
            b.env.unify(root, size)
            continue
        if isinstance(root, int) and root != size or sizes.setdefault(root, size) != size:
            shown = "?" if isinstance(root, str) and root in b.env.fresh_dims else root
            raise ShapeError(f"--at: dimension {shown} is {size} in one array but {sizes.get(root, root)} elsewhere")
        if isinstance(root, str) and root in b.env.linear:  # 4*H from the data: H
            b.env.unify(root, size)


def _numbers_for_dimensions(b) -> None:
    """A dimension name used as a number (`sum(X) / N`) whose size is now known (N = 2 from an
    --at array, or from `x: (N, 3)` with --shape x=2,3) is that number: left a symbol, it would be
    given a sample size of its own, another number than the arrays'."""
    for node in b.nodes:
        if node.kind == "const" and node.value is not None and node.value.free_symbols:
            known = {s: b.env.find(s.name) for s in node.value.free_symbols if isinstance(s, Dim)}
            known = {s: sympy.Integer(v) for s, v in known.items() if isinstance(v, int)}
            if known:
                node.value = node.value.xreplace(known)


def shape_message(b, node: Node, err: Exception) -> str:
    parts = []
    for a in node.inputs:
        if a.kind != "const":
            shape = tuple("?" if d in b.env.fresh_dims else d for d in b.env.resolve(a.shape))
            parts.append(f"{a.name or 'operand'}: {fmt_shape_plain(shape)}")
    message = str(err)
    for d in b.env.fresh_dims:  # an inferred dimension has no name yet: `?`
        message = message.replace(d, "?")
    return message + (f" [{'; '.join(parts)}]" if parts else "")


def check_annotation(b, node: Node, annotated: tuple) -> None:
    shape = b.env.resolve(node.shape)
    if not shapes_agree(b.env, shape, annotated):
        raise ShapeError(
            f"{node.name} is annotated {fmt_shape_plain(annotated)} but is {fmt_shape_plain(shape)}",
            b.declared_at.get(node.name) or node.place,
            b.source,
        )


def _surely_arrays(nodes: list[Node]) -> set[int]:
    """The nodes that are arrays whatever the unwritten variables turn out to be: written arrays,
    the results of ops that declare their operands' ranks (@, conv2d), and elementwise combinations
    of these."""
    arrays: set[int] = set()
    for n in nodes:
        if n.kind == "var" and n.shape:
            arrays.add(n.id)
        elif n.kind == "op" and n.op.input_ranks:
            arrays.add(n.id)
        elif n.kind == "op" and (n.op.elementwise or n.op.shape_passes_rank):
            if any(a.id in arrays or (a.kind == "const" and a.shape) for a in n.inputs):
                arrays.add(n.id)
    return arrays


def assign_ranks(b, nodes: list[Node], raised: dict[int, int]) -> set[int]:
    """Give each unshaped variable a rank (the rule of this module's docstring); returns the ids
    of those made scalars (or `raised`) by default rather than by an op's demand."""
    wants: dict[int, int] = {}
    arrays = _surely_arrays(nodes)

    def mark(node: Node, rank: int) -> None:
        stack = [node]
        seen = set()
        while stack:
            n = stack.pop()
            if n.id in seen:
                continue
            seen.add(n.id)
            if n.kind == "var":
                wants[n.id] = max(wants.get(n.id, 0), rank)
            elif n.kind == "op" and (n.op.elementwise or n.op.shape_passes_rank):
                if not any(a.id in arrays for a in n.inputs):  # else an array operand gives the shape
                    stack.extend(n.inputs)

    for n in nodes:
        if n.kind != "op":
            continue
        if n.op.input_ranks:  # declared by the op (@: matrices; conv2d: 4-d NCHW images and kernels)
            for a, rank in zip(n.inputs, n.op.input_ranks):
                mark(a, rank)
        elif n.params.get("axis") is not None:
            mark(n.inputs[0], 2)
    defaulted = set()
    for v in b.variables:
        if v.shape is None:
            if v.id not in wants:
                defaulted.add(v.id)
            rank = wants.get(v.id, raised.get(v.id, 0))
            v.shape = tuple(b.env.fresh() for _ in range(rank))
    return defaulted


def inference_notes(b, nodes: list[Node]) -> list[str]:
    """Where the rule chose a shape that could have been another: how to write the other one."""
    notes = []
    if b.data_notes:
        names = ", ".join(dict.fromkeys(b.data_notes))
        notes.append(f"{names} from the --at arrays, written as numbers: the shapes here need known sizes")
    unwritten = {v.id for v in b.variables if v.name not in b.declared and v.name not in b.cli_shapes}
    told = set()
    for n in nodes:
        if n.kind != "op" or not (n.op.elementwise and n.shape):
            continue
        for a in n.inputs:
            if a.kind == "var" and a.id in unwritten and a.shape == () and a.id not in told:
                told.add(a.id)
                plain = ",".join(str(d) for d in n.shape)
                notes.append(
                    f"{a.name} is a scalar: it is only combined elementwise with arrays "
                    f"(write {a.name}: {fmt_shape_plain(n.shape)} or --shape {a.name}={plain} for an array)"
                )
    for v in b.variables:
        if v.id in b.raised and v.id in unwritten:
            notes.append(
                f"{v.name} is {fmt_shape_plain(v.shape)}, the smallest shape {b.raised[v.id]} accepts there "
                f"(annotate {v.name} to choose another)"
            )
    return notes


def name_dims(b, nodes: list[Node]) -> list[str]:
    """Resolve every shape; give inferred dimensions textbook names (n, d, h, o, …)."""
    taken = {n.name for n in nodes if n.name} | b.dim_names
    numbered = (f"n{i}" for i in itertools.count(1))  # as many as a deep network needs
    nice = (d for d in itertools.chain(NICE_DIM_NAMES, numbered) if d not in taken)
    rename: dict[str, str] = {}
    order: list[str] = []
    for n in nodes:
        shape = []
        for d in b.env.resolve(n.shape):
            if isinstance(d, str) and d in b.env.linear:
                _refuse_linear(b, n, d)
            if isinstance(d, str) and d in b.env.fresh_dims:
                if d not in rename:
                    rename[d] = next(nice)
                d = rename[d]
            if isinstance(d, str) and d not in order:
                order.append(d)
            shape.append(d)
        n.shape = tuple(shape)
    return order


def _refuse_linear(b, node: Node, dim: str) -> None:
    base = b.env.linear[dim][1]
    written = next((name for name, shape in b.declared.items() if dim in shape), None)
    raise ShapeError(
        f"backstep can use the size {dim} only once {base} has a number: write one for {base} in an "
        f"annotation, or give a variable written with {base} its size with --shape or --at; or give the "
        f"dimension {dim} stands for a name of its own",
        b.declared_at.get(written) if written else node.place,
        b.source,
    )
