"""The parser's reading of building and splitting arrays: subscripts (`x[:, 1:3]`, `x[:, t]`,
`x[..., k]`, `x[-1]`), the operand tuple of cat and stack, the parts of chunk and split
(`chunk(Z, 4, axis=1)[2]`), and the tuple assignment that names every part
(`i, f, o, g = chunk(Z, 4, axis=1)`).

Each function takes the parser's builder (`parser._Builder`) and uses its `_expr`, `_call`,
`_apply`, `_bind` and `_fail`, so that places, limits and names are handled in one place.

A subscript is one node per indexed axis: `x[1:3, 2]` is select(x, axis=1, index=2) then
slice(…, axis=0, start=1, stop=3). Indices are integer literals; a step, None (a new axis) and
an index that is an array is an embedding lookup, `E[ix]`, and `P[range(N), y]` picks one entry
per row (pick); anything else is refused with its place.
"""

from __future__ import annotations

import ast

from .errors import ParseError, UnsupportedError
from .ops import FUNCTION_OPS
from .ops.indexing import EMBEDDING, PICK
from .ops.joins import PART_OPS, SELECT, SLICE, is_variadic, part_count
from .shapes import ShapeMismatch

__all__ = [
    "PART_OPS",
    "assign_parts",
    "is_tuple_assignment",
    "is_variadic",
    "part_index",
    "split_operands",
    "subscript",
]


# A subscript that is an expression of its own (not an integer, a slice or ...): an index array.
ARRAY_INDEX = (ast.Name, ast.List, ast.Call, ast.Attribute, ast.BinOp, ast.UnaryOp, ast.Subscript)


def _int_literal(node: ast.expr) -> int | None:
    """An integer literal, possibly negative (`-1`), or None."""
    negative = isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub)
    value = node.operand if negative else node
    if isinstance(value, ast.Constant) and type(value.value) is int:
        return -value.value if negative else value.value
    return None


def _part_call_op(node: ast.expr):
    """chunk or split where `node` calls one of them, else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        op = FUNCTION_OPS.get(node.func.id)
        return op if op in PART_OPS else None
    return None


def array_index(b, e: ast.Subscript, item: ast.expr):
    """`E[ix]`: rows of E picked by an integer array, embedding(ix, E) (NumPy's and torch's fancy
    indexing on the first axis)."""
    return b._apply(EMBEDDING, [b._expr(item), b._expr(e.value)], {}, e)


def _counts_rows(node: ast.expr) -> ast.expr | None:
    """The count K of `range(K)`, `np.arange(K)` or `torch.arange(K)`, else None."""
    if not (isinstance(node, ast.Call) and len(node.args) == 1 and not node.keywords):
        return None
    f = node.func
    named = isinstance(f, ast.Name) and f.id == "range"
    dotted = isinstance(f, ast.Attribute) and f.attr == "arange" and isinstance(f.value, ast.Name)
    if named or (dotted and f.value.id in ("np", "numpy", "torch")):
        return node.args[0]
    return None


def _same_size(b, rows, given) -> bool:
    if isinstance(given, str) and given not in b.dim_names:
        return False
    try:
        b.env.unify(rows, given)
    except ShapeMismatch:
        return False
    return True


def rows_picked(b, e: ast.Subscript):
    """`P[range(N), y]`: one entry per row, pick(P, y); N must be P's number of rows (checked once
    the shapes are known: P may be an intermediate)."""
    count, y = e.slice.elts
    count_node = _counts_rows(count)
    node = b._apply(PICK, [b._expr(e.value), b._expr(y)], {}, e)
    given = count_node.value if isinstance(count_node, ast.Constant) else getattr(count_node, "id", None)

    def check() -> None:
        shape = b.env.resolve(node.inputs[0].shape) if node.inputs[0].shape is not None else ()
        rows = shape[0] if shape else None
        if given is None or len(shape) != 2 or not _same_size(b, rows, given):
            table = b._segment(e.value)
            b._fail(
                ParseError,
                f"{table}[range(K), y] picks one entry per row of a matrix: K must be {table}'s number of rows "
                f"({rows}), a number or a dimension name",
                count,
            )

    b.after_shapes.append(check)
    return node


def _read_item(b, e: ast.Subscript, item: ast.expr):
    """One item of a subscript: ("int", i), ("range", start, stop), ("full",) or ("...",)."""
    if isinstance(item, ast.Constant) and item.value is Ellipsis:
        return ("...",)
    index = _int_literal(item)
    if index is not None:
        return ("int", index)
    if isinstance(item, ast.Slice):
        if item.step is not None and _int_literal(item.step) != 1:
            b._fail(UnsupportedError, "a slice with a step is not supported; x[a:b] takes every entry", item.step)
        bounds = []
        for bound in (item.lower, item.upper):
            value = None if bound is None else _int_literal(bound)
            if bound is not None and value is None:
                b._fail(ParseError, "a slice's bounds are integer literals (x[1:3], x[-2:])", bound)
            bounds.append(value)
        return ("full",) if bounds == [None, None] else ("range", *bounds)
    if isinstance(item, ast.Constant) and item.value is None:
        b._fail(UnsupportedError, "a new axis (None) is not supported in a subscript; use unsqueeze(x, axis)", item)
    if isinstance(item, ARRAY_INDEX):
        b._fail(
            UnsupportedError,
            f"indexing by an array is supported alone ({b._segment(e.value)}[ix], an embedding lookup) or as "
            "P[range(N), y]; not beside other indices",
            item,
        )
    b._fail(ParseError, "a subscript takes integer literals and slices (x[:, 0], x[1:3], x[..., -1])", item)


def subscript(b, e: ast.Subscript):
    """`x[...]`: one select or slice node per indexed axis; `chunk(…)[i]` is one part."""
    if _part_call_op(e.value) is not None:
        return b._call(e.value, part=_part_literal(b, e.slice))
    if isinstance(e.slice, ast.Tuple) and len(e.slice.elts) == 2 and _counts_rows(e.slice.elts[0]) is not None:
        return rows_picked(b, e)
    if isinstance(e.slice, ARRAY_INDEX) and _int_literal(e.slice) is None:
        return array_index(b, e, e.slice)
    items = e.slice.elts if isinstance(e.slice, ast.Tuple) else [e.slice]
    read = [(_read_item(b, e, item), item) for item in items]
    ellipses = [item for (kind, *_), item in read if kind == "..."]
    if len(ellipses) > 1:
        b._fail(ParseError, "a subscript may hold one ... only", ellipses[1])
    split = next((i for i, ((kind, *_), _) in enumerate(read) if kind == "..."), len(read))
    before, after = read[:split], read[split + 1 :]
    # Axes before `...` count from the start and are indexed from the last one back, those after it
    # count from the end and are indexed from the first one on: an axis that indexing removes then
    # never shifts the axes still to be indexed.
    steps = [(axis, r) for axis, (r, _) in reversed(list(enumerate(before)))]
    steps += [(axis - len(after), r) for axis, (r, _) in enumerate(after)]
    node = b._expr(e.value)
    for axis, (kind, *values) in steps:
        if kind == "int":
            node = b._apply(SELECT, [node], {"axis": axis, "index": values[0]}, e)
        elif kind == "range":
            node = b._apply(SLICE, [node], {"axis": axis, "start": values[0], "stop": values[1]}, e)
    return node


def _part_literal(b, node: ast.expr) -> int:
    index = _int_literal(node)
    if index is None:
        b._fail(ParseError, "a part of chunk or split is taken by an integer literal: chunk(Z, 4, axis=1)[0]", node)
    return index


def part_index(b, op, params: dict, part: int | None, e: ast.Call) -> int:
    """The part of chunk/split a call stands for, counted from 0 (a negative one from the end)."""
    count = part_count(op, params)
    if part is None:
        if params.get("index") is not None:
            part = params["index"]
        else:
            name = op.syntax
            b._fail(
                ParseError,
                f"{name} gives several parts: name them (a, b = {name}(...)) or take one ({name}(...)[0])",
                e,
            )
    if count is not None and not -count <= part < count:
        b._fail(ParseError, f"{op.syntax} gives {count} parts; there is no part {part}", e)
    return part % count if count is not None else part


def split_operands(b, op, positional: list[ast.expr], e: ast.Call) -> tuple[list[ast.expr], list[ast.expr]]:
    """cat((a, b), axis=1): the operand tuple, and the positional arguments after it."""
    if not positional or not isinstance(positional[0], (ast.Tuple, ast.List)):
        b._fail(ParseError, f"{op.syntax} takes its operands as a tuple: {op.syntax}((a, b), axis=1)", e)
    operands = positional[0].elts
    if not operands:
        b._fail(ParseError, f"{op.syntax} needs at least one operand", positional[0])
    return operands, positional[1:]


def is_tuple_assignment(st: ast.stmt) -> bool:
    return isinstance(st, ast.Assign) and len(st.targets) == 1 and isinstance(st.targets[0], (ast.Tuple, ast.List))


def assign_parts(b, st: ast.Assign, last: bool) -> None:
    """`i, f, o, g = chunk(Z, 4, axis=1)`: one part node per name, the operand read once."""
    if last:
        b._fail(ParseError, "the last line must be the output (one formula), not several names", st)
    targets = st.targets[0].elts
    for t in targets:
        if not isinstance(t, ast.Name):
            b._fail(UnsupportedError, "a tuple assignment names each part with a plain name (a, b = ...)", t)
    op = _part_call_op(st.value)
    if op is None:
        b._fail(
            UnsupportedError,
            "a tuple of names takes the parts of chunk or split (i, f, o, g = chunk(Z, 4, axis=1)); "
            "assign other values one name at a time",
            st.value,
        )
    first = b._call(st.value, part=0)
    if first.kind != "op":
        b._fail(ParseError, f"{op.syntax} of a constant has nothing to differentiate", st.value)
    count = part_count(op, first.params)
    if count != len(targets):
        b._fail(
            ParseError,
            f"{op.syntax}(...) gives {count} part{'s' * (count != 1)} but {len(targets)} name"
            f"{'s are' if len(targets) != 1 else ' is'} assigned",
            st,
        )
    nodes = [first] + [b._apply(op, first.inputs, {**first.params, "index": i}, st.value) for i in range(1, count)]
    for t, node in zip(targets, nodes):
        b._bind(t.id, st, lambda node=node: node)
