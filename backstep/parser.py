"""The safe parser: Python expression syntax -> a shaped computational graph.

The text is parsed with Python's own ``ast`` module and walked by a visitor that accepts a
whitelist of node types; anything else is rejected with its place. Nothing is ever evaluated:
a formula from a stranger cannot run code.

Accepted:
- a program of statements separated by newlines or ``;``: shape annotations ``X: (n, d)``,
  assignments ``H = relu(X @ W1)`` that name intermediates, and a last line that is the output
  (an expression, or an assignment whose name is the output's);
- identifiers (variables, or dimension names such as ``n`` inside an expression), int and
  float numbers, ``+ - * / ** @``, unary ``-``/``+``, ``.T``, and calls of the op table's
  functions with their keyword parameters; subscripts and tuple assignment (parse_joins.py).
"""

from __future__ import annotations

import ast
import itertools
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

import sympy

from . import annotations, parse_joins
from . import ops as op_table
from .errors import ParseError, Place, ShapeError, UnsupportedError
from .graph import Graph, Node
from .lookalike import CONSTANT_NAMES, constant_note, unknown_name_message
from .ops import DIV, PARAM_KINDS, POW, TUPLE_KINDS, Op, Param
from .safetext import dedent_program, split_lines
from .shapes import ShapeEnv, ShapeMismatch
from .symbolic import Dim
from .util import reachable

_recursion_lock = threading.Lock()
_recursion_holders: list[int] = []  # the limits asked for by the blocks running now, in any thread
_recursion_saved: list[int] = []  # the limit before the first of them


@contextmanager
def deep_recursion(limit: int = 20_000):
    """SymPy and the printers recurse over expression trees: give deep (but limited) ones room.

    The recursion limit is one number for the whole interpreter, so the blocks of every thread
    share it: while any runs, the limit is the largest any of them asks for (and never below what
    it was); when the last one ends, the limit is put back to what it was before the first began.
    Each block restoring "its" old value would leave the raised limit behind whenever two threads
    overlap (the second saves the first one's raised value and restores it last)."""
    with _recursion_lock:
        if not _recursion_holders:
            _recursion_saved[:] = [sys.getrecursionlimit()]
        _recursion_holders.append(limit)
        sys.setrecursionlimit(max([_recursion_saved[0], *_recursion_holders]))
    try:
        yield
    finally:
        with _recursion_lock:
            _recursion_holders.remove(limit)
            sys.setrecursionlimit(max([_recursion_saved[0], *_recursion_holders]))


@dataclass
class Limits:
    """Bounds on what one formula may ask for; each has a CLI flag."""

    max_chars: int = 100_000
    max_depth: int = 500
    max_nodes: int = 20_000
    max_exponent: int = 1_000
    simplify_seconds: float = 5.0  # per step and per final gradient; 0: no limit
    max_elements: int = 10**7  # numbers per array when evaluating (verification, --at); 12.5x that per point


FLOAT_MAX = sys.float_info.max  # a constant must be a float64: the verifier computes in float64
MAX_CONSTANT_BITS = 1100  # the numerator and denominator of an exact constant: about 331 digits
MAX_PARAM = 1e15  # a parameter (negative_slope=, min=): whole ones are kept as integers, exactly
MAX_SUBSCRIPTS = 64  # an einsum equation: two operands of at most 26 axes each is far more than any program

BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**", ast.MatMult: "@"}
BINARY_WORDS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitAnd: "&",
    ast.BitXor: "^",
}
COMPARE = {ast.Gt: ">", ast.GtE: ">=", ast.Lt: "<", ast.LtE: "<="}
RESERVED = {"True", "False", "None"}


def parse(
    source: str,
    shapes: dict[str, tuple] | None = None,
    limits: Limits | None = None,
    allow_constant: bool = False,
    data_shapes: dict[str, tuple] | None = None,
) -> Graph:
    """Parse a formula or program into a graph whose shapes are inferred and unified.

    `shapes` maps variable names to shapes given on the command line (they must agree with
    annotations in the text); `data_shapes` the shapes of the arrays given with --at, which fix
    their variables' shapes (annotations.bind_data_shapes). A formula without variables is refused
    (there is nothing to differentiate) unless `allow_constant`: a gradient such as `2` or `1 / n`
    parses back then.
    """

    def build(**data) -> Graph:
        return _Builder(source, dict(shapes or {}), limits or Limits(), allow_constant, **data).build()

    return annotations.parse_with_data(build, data_shapes or {})


def parse_expression(source: str, shapes: dict[str, tuple], limits: Limits | None = None) -> Node:
    """Parse an expression over known names only (a claim about a gradient), without shape inference.

    Every name must be a key of `shapes` (a variable, an intermediate, an adjoint) or a dimension
    named in those shapes; an unknown name is a ParseError at its place. A constant expression is
    allowed. Returns the output node of the (unshaped) graph: `backstep check` infers the shapes
    itself, so that a claim whose shapes do not fit can still be examined.
    """
    builder = _Builder(source, dict(shapes), limits or Limits())
    if len(source) > builder.limits.max_chars:
        raise ParseError(f"the expression is {len(source)} characters long; the limit is {builder.limits.max_chars}")
    if not source.strip():
        raise ParseError("the expression is empty")
    tree = builder._python_parse()
    builder._check_depth(tree)
    builder._collect_annotations(tree.body)
    with deep_recursion(4 * builder.limits.max_depth + 1000):
        output = builder._statements(tree.body)
    for v in builder.variables:
        if v.name not in shapes:
            known = itertools.chain(shapes, builder.dim_names)
            raise ParseError(unknown_name_message("unknown name", v.name, known), v.place, builder.source)
    return output


@dataclass
class _Builder:
    source: str
    cli_shapes: dict[str, tuple]
    limits: Limits
    allow_constant: bool = False
    env: ShapeEnv = field(default_factory=ShapeEnv)
    nodes: list[Node] = field(default_factory=list)
    names: dict[str, Node] = field(default_factory=dict)  # what each name means now
    declared: dict[str, tuple] = field(default_factory=dict)  # annotated shapes
    declared_at: dict[str, Place] = field(default_factory=dict)
    declared_domains: dict[str, str] = field(default_factory=dict)  # ix: (N,) in range(V)
    after_shapes: list = field(default_factory=list)  # checks that need every node's shape (P[range(N), y])
    variables: list[Node] = field(default_factory=list)
    dim_names: set[str] = field(default_factory=set)
    statements: list[str] = field(default_factory=list)  # the program's lines, as written

    assigned: dict[str, ast.stmt] = field(default_factory=dict)  # each assigned name's statement, once reached
    assigning: str | None = None  # the name whose assignment is being read
    data_shapes: dict[str, tuple] = field(default_factory=dict)  # the shapes of the --at arrays
    concrete_data: bool = False  # their names bound to the arrays' sizes (annotations.bind_data_shapes)
    data_bound: list[tuple] = field(default_factory=list)  # (dimension, size) the arrays give
    from_data: list[str] = field(default_factory=list)  # the variables whose shape is an array's
    data_notes: list[str] = field(default_factory=list)  # "N = 2": names the arrays gave numbers
    called: set[str] = field(default_factory=set)  # the functions the program calls
    raised: dict[int, str] = field(default_factory=dict)  # variables an op made arrays (annotations)

    def __post_init__(self) -> None:
        # A leading byte order mark (a file saved by Notepad) is not part of the formula.
        self.source = self.source.removeprefix("\ufeff")
        # Lines end where Python's tokenizer ends them: at \n, \r\n or \r only. str.splitlines()
        # also splits at \x0b \x0c \x1c-\x1e \x85 \u2028 \u2029, which Python keeps inside a line (a
        # comment), so that the text after one would become a line of its own.
        self.lines = split_lines(self.source)
        self.text, self.shifts = dedent_program(self.lines)

    # --- entry ---------------------------------------------------------------------------------

    def build(self) -> Graph:
        if len(self.source) > self.limits.max_chars:
            raise ParseError(
                f"the formula is {len(self.source)} characters long; the limit is {self.limits.max_chars} (--max-chars)"
            )
        if not self.source.strip():
            raise ParseError("the formula is empty")
        tree = self._python_parse()
        self._check_depth(tree)
        statements = tree.body
        self._collect_annotations(statements)
        with deep_recursion(4 * self.limits.max_depth + 1000):
            output = self._statements(statements)
        if output.is_const and not self.allow_constant:
            raise ParseError("the output does not depend on any variable: there is nothing to differentiate")
        return self._finish(output)

    def _python_parse(self) -> ast.Module:
        try:
            return ast.parse(self.text, mode="exec")
        except SyntaxError as err:
            msg = err.msg or "invalid syntax"
            line, col = err.lineno or 1, err.offset or 1
            col += self.shifts[line - 1] if 0 < line <= len(self.shifts) else 0
            end = None
            if isinstance(err, IndentationError) and msg == "unexpected indent":
                msg = "unexpected indent: every line of a program starts at the same column"
                text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
                col, end = 1, len(text) - len(text.lstrip(" \t\f")) + 1  # the caret under the indentation
            raise ParseError(msg, Place(line, col, end), self.source) from None
        except (RecursionError, MemoryError):
            raise ParseError(
                f"the formula is nested too deeply for the parser (limit --max-depth {self.limits.max_depth})"
            ) from None
        except ValueError as err:  # null bytes and the like
            raise ParseError(str(err)) from None

    def _check_depth(self, tree: ast.AST) -> None:
        # Iterative, so that a hostile depth cannot overflow Python's own stack here.
        # Only expressions count as levels (not Load contexts or operator tokens), and the error
        # points at the expression where the limit is passed.
        stack = [(tree, 0)]
        count = 0
        while stack:
            node, depth = stack.pop()
            count += 1
            if isinstance(node, ast.expr):
                depth += 1
                if depth > self.limits.max_depth:
                    raise ParseError(
                        f"the formula is nested more than {self.limits.max_depth} levels deep (--max-depth)",
                        self._place(node),
                        self.source,
                    )
            if count > 4 * self.limits.max_nodes:
                raise ParseError(f"the formula has more than {self.limits.max_nodes} operations (--max-nodes)")
            stack.extend((child, depth) for child in ast.iter_child_nodes(node))

    # --- places and errors ---------------------------------------------------------------------

    def _place(self, node: ast.AST) -> Place | None:
        line = getattr(node, "lineno", None)
        if line is None:
            return None
        text = self.lines[line - 1] if line <= len(self.lines) else ""
        shift = self.shifts[line - 1] if line <= len(self.shifts) else 0
        raw = text.encode("utf-8")

        def column(offset: int | None) -> int | None:
            if offset is None:
                return None
            return len(raw[: offset + shift].decode("utf-8", errors="replace")) + 1

        end_line = getattr(node, "end_lineno", line)
        end = column(getattr(node, "end_col_offset", None)) if end_line == line else None
        return Place(line, column(node.col_offset) or 1, end)

    def _segment(self, node: ast.AST) -> str:
        """The source text of a node (ast.get_source_segment splits the whole source each call)."""
        first, last = node.lineno - 1, node.end_lineno - 1
        lines = [line.encode("utf-8") for line in self.text.split("\n")[first : last + 1]]
        if len(lines) == 1:
            return lines[0][node.col_offset : node.end_col_offset].decode("utf-8", errors="replace")
        lines[0], lines[-1] = lines[0][node.col_offset :], lines[-1][: node.end_col_offset]
        return "\n".join(line.decode("utf-8", errors="replace") for line in lines)

    def _fail(self, cls, message: str, node: ast.AST):
        raise cls(message, self._place(node), self.source)

    # --- statements ----------------------------------------------------------------------------

    def _collect_annotations(self, statements: list[ast.stmt]) -> None:
        annotations.collect_annotations(self, statements)

    def _statements(self, statements: list[ast.stmt]) -> Node:
        output: Node | None = None
        output_name: str | None = None
        for st in statements:
            if not (isinstance(st, ast.AnnAssign) and st.value is None):
                self.statements.append(self._segment(st))
            if isinstance(st, ast.AnnAssign):
                if st.value is None:
                    continue
                output, output_name = self._assign(st.target.id, st.value, st), st.target.id
            elif parse_joins.is_tuple_assignment(st):  # i, f, o, g = chunk(Z, 4, axis=1)
                output, output_name = parse_joins.assign_parts(self, st, last=st is statements[-1]), None
            elif isinstance(st, ast.Assign):
                if len(st.targets) != 1 or not isinstance(st.targets[0], ast.Name):
                    self._fail(UnsupportedError, "assign to one plain name at a time (H = ...)", st)
                output, output_name = self._assign(st.targets[0].id, st.value, st), st.targets[0].id
            elif isinstance(st, ast.Expr):
                output, output_name = self._expr(st.value), None
            else:
                self._fail(UnsupportedError, f"{_describe(st)} is not allowed in a formula", st)
        if output is None:
            raise ParseError("there is no formula, only shape annotations")
        last = statements[-1]
        if isinstance(last, ast.AnnAssign) and last.value is None:
            self._fail(ParseError, "the last line must be the output (a formula), not a shape annotation", last)
        if output_name is not None and output.kind == "op" and output.name is None:
            output.name = output_name
        self.output_name = output_name
        return output

    def _assign(self, name: str, value: ast.expr, st: ast.stmt) -> Node:
        """`H = value`: H names an intermediate, once.

        A program is not a sequence of rebindings: each name means one value everywhere, so a
        name may be assigned only once and used only after its assignment (`a = a + x` would make
        a both an input and the intermediate computed from it, a cycle)."""
        return self._bind(name, st, lambda: self._expr(value))

    def _bind(self, name: str, st: ast.stmt, build) -> Node:
        """Name the node `build()` makes (an assignment's value, or one part of a tuple assignment)."""
        self._check_name(name, st)
        if name in self.assigned:
            first = self._place(self.assigned[name])
            self._fail(
                ParseError,
                f"{name} is already assigned (at {first.line}:{first.col}); give each intermediate a name of its own",
                st,
            )
        if name in self.names:  # used (as an input) on an earlier line
            used = self.names[name].place
            at = f" (used at {used.line}:{used.col}, before this assignment)" if used else ""
            self._fail(ParseError, f"{name} is an input variable{at}; give each intermediate a name of its own", st)
        if name in self.dim_names:
            self._fail(ParseError, f"{name} is a dimension name (from a shape); give the intermediate another name", st)
        self.assigning = name
        try:
            node = build()
        finally:
            self.assigning = None
        self.assigned[name] = st
        if node.kind == "op" and node.name is None:
            node.name, node.user_named = name, True
            node.annotated = self.declared.get(name)  # checked once shapes are inferred
        self.names[name] = node
        return node

    def _check_name(self, name: str, where: ast.AST) -> None:
        annotations.check_name(self, name, where)

    # --- expressions ---------------------------------------------------------------------------

    def _expr(self, e: ast.expr) -> Node:
        if isinstance(e, ast.Name):
            return self._name(e)
        if isinstance(e, ast.Constant):
            return self._constant(e)
        if isinstance(e, ast.BinOp):
            symbol = BINARY.get(type(e.op))
            if symbol is None:
                self._fail(UnsupportedError, f"the operator {BINARY_WORDS.get(type(e.op), '?')} is not supported", e)
            return self._apply(op_table.OPERATOR_OPS[symbol], [self._expr(e.left), self._expr(e.right)], {}, e)
        if isinstance(e, ast.UnaryOp):
            if isinstance(e.op, ast.UAdd):
                return self._expr(e.operand)
            if isinstance(e.op, ast.USub):
                return self._apply(op_table.OPERATOR_OPS["-x"], [self._expr(e.operand)], {}, e)
            self._fail(UnsupportedError, "only unary - and + are supported", e)
        if isinstance(e, ast.Attribute):
            if e.attr != "T":
                self._fail(UnsupportedError, f"the attribute .{e.attr} is not supported; only .T (transpose) is", e)
            return self._apply(op_table.OPERATOR_OPS[".T"], [self._expr(e.value)], {}, e)
        if isinstance(e, ast.Call):
            return self._call(e)
        if isinstance(e, ast.Subscript):
            return parse_joins.subscript(self, e)
        if isinstance(e, ast.Compare):
            symbol = COMPARE.get(type(e.ops[0]))
            if len(e.ops) != 1 or symbol is None:
                self._fail(UnsupportedError, "only one comparison at a time (x > 0), with > >= < <=", e)
            args = [self._expr(e.left), self._expr(e.comparators[0])]
            return self._apply(op_table.OPERATOR_OPS[symbol], args, {}, e)
        self._fail(UnsupportedError, f"{_describe(e)} is not allowed in a formula", e)

    def _name(self, e: ast.Name) -> Node:
        name = e.id
        if name in self.names:
            return self.names[name]
        if name == self.assigning:  # `a = a + x`: a would be an input and the result computed from it
            self._fail(
                ParseError,
                f"{name} is used in its own assignment: a name that is assigned is an intermediate, so it "
                "cannot also be an input; give the result another name",
                e,
            )
        self._check_name(name, e)
        if name in self.dim_names and name not in self.declared and name not in self.cli_shapes:
            node = self._new(kind="const", value=Dim(name), place=self._place(e))
            return node
        if name in CONSTANT_NAMES and name not in self.declared and name not in self.cli_shapes:
            return self._new(kind="const", value=getattr(sympy, CONSTANT_NAMES[name]), place=self._place(e))
        node = self._new(kind="var", name=name, place=self._place(e))
        node.user_named = True
        given = self.cli_shapes.get(name, self.declared.get(name))
        node.shape = given if given is not None else None  # None: inferred later
        self.names[name] = node
        self.variables.append(node)
        return node

    def _constant(self, e: ast.Constant) -> Node:
        value = e.value
        if type(value) is int:
            if value > FLOAT_MAX:
                self._fail(ParseError, f"the number is larger than a float64 can hold ({FLOAT_MAX:.4g})", e)
            return self._new(kind="const", value=sympy.Integer(value), place=self._place(e))
        if type(value) is float:
            if value != value or value in (float("inf"), float("-inf")):
                self._fail(ParseError, "the number is not finite", e)
            return self._new(kind="const", value=sympy.Float(value), place=self._place(e))
        self._fail(UnsupportedError, f"{_describe(e)} is not allowed in a formula; only numbers are", e)

    def _call(self, e: ast.Call, part: int | None = None) -> Node:  # part: of chunk/split, chunk(Z, 4)[2]
        if not isinstance(e.func, ast.Name):
            self._fail(UnsupportedError, "only the functions of backstep's op table can be called (sin(x), sum(X))", e)
        fname = e.func.id
        op = op_table.FUNCTION_OPS.get(fname)
        if op is None:
            hint = op_table.unknown_function_hint(fname)
            self._fail(ParseError, unknown_name_message("unknown function", fname, op_table.FUNCTION_OPS, hint), e.func)
        n_args = op.arity
        positional = list(e.args)
        for a in positional:
            if isinstance(a, ast.Starred):
                self._fail(UnsupportedError, "*args is not allowed in a formula", a)
        params = dict(op.params)
        given: dict[str, str] = {}  # each parameter given, and how (Python's ast accepts axis=0, axis=1)
        keywords = {kw.arg for kw in e.keywords}
        # einsum("ij,jk->ik", a, b), unless given by keyword: einsum(a, b, equation="ij,jk->ik")
        leading = [p for p in op.parameters if p.leading and not keywords & {p.name, *p.aliases}]
        for param, pnode in zip(leading, positional):
            params[param.name] = self._param_value(param, pnode)
            given[param.name] = "by position"
        positional = positional[len(leading) :]
        operands = positional[:n_args]
        if parse_joins.is_variadic(op):  # cat((a, b), axis=1): the operands are one tuple
            operands, rest = parse_joins.split_operands(self, op, positional, e)
            positional, n_args = [e.args[0], *rest], 1
        if len(positional) < n_args:
            self._fail(
                ParseError, f"{fname} takes {n_args} argument{'s' if n_args > 1 else ''}, got {len(positional)}", e
            )
        extra = positional[n_args:]
        if len(extra) > len([p for p in op.parameters if not p.leading]):
            self._fail(
                ParseError, f"{fname} takes {n_args} argument{'s' if n_args > 1 else ''}, got {len(positional)}", e
            )
        for param, pnode in zip([p for p in op.parameters if not p.leading], extra):
            if param.keyword_only:
                self._fail(ParseError, f"{fname} takes {param.name} by keyword only: {param.keyword_only}", pnode)
            params[param.name] = self._param_value(param, pnode)
            given[param.name] = "by position"  # (a keyword is recorded as "axis=")
        for kw in e.keywords:
            if kw.arg is None:
                self._fail(UnsupportedError, "**kwargs is not allowed in a formula", kw.value)
            param = op.param(kw.arg)  # its name, or torch's (dim=, keepdim=)
            if param is None:
                allowed = ", ".join(op.params) or "none"
                self._fail(ParseError, f"{fname} has no parameter {kw.arg} (it takes: {allowed})", kw.value)
            key = param.name
            if key in given:
                how = "" if given[key] == f"{kw.arg}=" else f" ({given[key]} and {kw.arg}=)"
                self._fail(ParseError, f"{key} is given twice{how}", kw)
            given[key] = f"{kw.arg}="
            params[key] = self._param_value(param, kw.value)
        for param in op.parameters:
            if param.required and params[param.name] is None:
                self._fail(ParseError, f"{fname} needs {param.name} ({PARAM_KINDS[param.kind]})", e)
        if op in parse_joins.PART_OPS:
            params["index"] = parse_joins.part_index(self, op, params, part, e)
        args = [self._expr(a) for a in operands]
        return self._apply(op, args, params, e)

    def _param_value(self, param: Param, node: ast.expr):
        """A keyword parameter, read as its kind says: a choice, a bool, a size (an integer or a
        dimension name), a tuple (a pair, sizes, a shape), or a number (None where that is the default)."""
        pname = param.name
        if param.kind == "choice":
            if isinstance(node, ast.Constant) and node.value in param.choices:
                return node.value
            self._fail(ParseError, f"{pname} must be one of {', '.join(map(repr, param.choices))}", node)
        if param.kind == "subscripts":
            if isinstance(node, ast.Constant) and type(node.value) is str and len(node.value) <= MAX_SUBSCRIPTS:
                return node.value
            self._fail(ParseError, f'{pname} must be a string of index letters such as "ij,jk->ik"', node)
        if param.kind == "bool":
            if isinstance(node, ast.Constant) and type(node.value) is bool:
                return node.value
            self._fail(ParseError, f"{pname} must be True or False", node)
        if param.kind == "size":
            if isinstance(node, ast.Name) and node.id in self.dim_names:
                return node.id
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value >= 1:
                return node.value
            self._fail(ParseError, f"{pname} must be a positive integer or a dimension name from a shape", node)
        if isinstance(node, ast.Tuple) and param.kind in TUPLE_KINDS:
            return self._param_tuple(param, node)
        return self._param_number(param, node)

    def _param_tuple(self, param: Param, node: ast.Tuple) -> tuple:
        """A pair, stride=(2, 1), or a shape, reshape(x, (-1, 96)); a shape's sizes may be dimension names."""
        items = []
        for item in node.elts:
            if param.kind == "shape" and isinstance(item, ast.Name) and item.id in self.dim_names:
                items.append(item.id)  # broadcast_to(b, (n, d)); the op's shape rule decides
                continue
            neg = isinstance(item, ast.UnaryOp) and isinstance(item.op, ast.USub)
            value = item.operand if neg else item
            if not (isinstance(value, ast.Constant) and type(value.value) is int):
                names = " or a dimension name from a shape" if param.kind == "shape" else ""
                self._fail(ParseError, f"{param.name} must be an integer or a tuple of integers{names}", item)
            items.append(-value.value if neg else value.value)
        return tuple(items)

    def _param_number(self, param: Param, node: ast.expr):
        """A signed literal: a float for a "number" (an integer literal too), else an integer."""
        pname, real = param.name, param.kind == "number"
        sign = 1
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sign, node = -1, node.operand
        if isinstance(node, ast.Constant) and type(node.value) in (int, float) and not abs(node.value) <= MAX_PARAM:
            self._fail(ParseError, f"{pname} must be a finite number of at most {MAX_PARAM:g} in size", node)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return float(sign * node.value) if real else sign * node.value
        if isinstance(node, ast.Constant) and type(node.value) is float and real:
            return sign * node.value
        if isinstance(node, ast.Constant) and node.value is None and param.default is None:
            return None
        self._fail(ParseError, f"{pname} must be {'a number' if real else 'an integer'}", node)

    # --- nodes ---------------------------------------------------------------------------------

    def _new(self, **kw) -> Node:
        node = Node(id=len(self.nodes), **kw)
        self.nodes.append(node)
        if len(self.nodes) > self.limits.max_nodes:
            raise ParseError(f"the formula has more than {self.limits.max_nodes} operations (--max-nodes)")
        return node

    def _apply(self, op: Op, args: list[Node], params: dict, e: ast.AST) -> Node:
        place = self._place(e)
        if op.arity == 0:  # a constant array such as eye(n)
            shape = op.shape(self.env, [], params)
            return self._new(kind="const", value=op.sympy([], [], params), shape=shape, place=place)
        if op is POW and args[1].is_const:
            exponent = args[1].value
            if exponent.is_Number and abs(exponent) > self.limits.max_exponent:
                self._fail(
                    ParseError, f"the exponent {exponent} is larger than {self.limits.max_exponent} (--max-exponent)", e
                )
        if op is POW and args[0].is_const and not args[1].is_const and not args[0].value.is_positive:
            # d/dy b**y = b**y log(b): real only for b > 0 (0 ** y has no derivative at y = 0 either)
            self._fail(
                ParseError,
                "the base of a power whose exponent varies must be a positive constant (its derivative has log(base))",
                e.left if isinstance(e, ast.BinOp) else e,
            )
        if op is DIV and args[1].is_const and args[1].value.is_zero:
            if args[0].is_const:
                self._fail(ParseError, "this constant expression is not a finite real number (division by zero)", e)
            self._fail(ParseError, "division by zero", e.right if isinstance(e, ast.BinOp) else e)
        if all(a.is_const for a in args):
            # A constant: folded (`2 * eye(n)` is a constant array), never a node to differentiate.
            shapes = [a.shape for a in args]
            try:
                shape = op.shape(self.env, shapes, params)
                value = op.sympy([a.value for a in args], shapes, params)
            except ShapeMismatch as err:
                self._fail(ShapeError, str(err), e)
            except (ZeroDivisionError, OverflowError, ValueError):
                self._fail(ParseError, "this constant expression is not a finite real number", e)
            self._check_constant(value, e)  # (first: SymPy's is_real may evaluate a tower of exps)
            if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) or value.is_real is False:
                self._fail(ParseError, "this constant expression is not a finite real number", e)
            return self._new(kind="const", value=value, shape=shape, place=place)
        return self._new(kind="op", op=op, inputs=args, params=params, place=place)

    def _check_constant(self, value: sympy.Expr, e: ast.AST) -> None:
        """A folded constant must be a float64 (the verifier computes in float64) and print in a
        few hundred digits: `(2**1000)**15` is 4,516 digits, past Python's int-to-text limit.

        Checked at every fold, so that each constant SymPy evaluates is built from float64-sized
        ones: `exp(exp(exp(exp(exp(exp(1))))))` stops at the fifth exp, before the sixth would have
        SymPy work with numbers of millions of digits (a hang, not an answer)."""
        if value.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo):
            return  # (the caller says: not a finite real number)
        if not value.free_symbols and not value.is_Number:  # exp(2), log(3), 2**0.5: its size, numerically
            try:
                approx = value.evalf(17)
            except (ArithmeticError, ValueError, TypeError, RecursionError):
                self._fail(ParseError, "this constant expression is not a finite real number", e)
            if approx.is_Number and abs(approx) > FLOAT_MAX:
                self._fail(ParseError, f"this constant is larger than a float64 can hold ({FLOAT_MAX:.4g})", e)
        for number in value.atoms(sympy.Number):
            if abs(number) > FLOAT_MAX:
                self._fail(ParseError, f"this constant is larger than a float64 can hold ({FLOAT_MAX:.4g})", e)
            if number.is_Rational and max(abs(number.p), number.q).bit_length() > MAX_CONSTANT_BITS:
                digits = round(MAX_CONSTANT_BITS * 0.30103)
                self._fail(ParseError, f"this constant has more than {digits} digits", e)

    # --- shapes --------------------------------------------------------------------------------

    def _finish(self, output: Node) -> Graph:
        live = _ancestors(output)
        dead = [n for n in self.nodes if n.kind == "op" and n.user_named and n.id not in live]
        notes = [f"{n.name} is assigned but not used by the output" for n in dead]
        unused_vars = [v for v in self.variables if v.id not in live]
        notes += [f"{v.name} does not reach the output" for v in unused_vars]
        notes += [note for v in self.variables if v.id in live and (note := constant_note(v.name))]
        self.variables = [v for v in self.variables if v.id in live]
        nodes = [n for n in self.nodes if n.id in live and n.kind != "const"]
        annotations.infer_shapes(self, nodes)
        for check in self.after_shapes:
            check()
        dims = annotations.name_dims(self, nodes)
        notes += annotations.inference_notes(self, nodes)
        for const in (n for n in self.nodes if n.id in live and n.is_const):  # `1 / n` uses n too
            dims += sorted({s.name for s in const.value.free_symbols if isinstance(s, Dim)} - set(dims))
        self._name_intermediates(nodes, output)
        return Graph(
            source=self.source,
            nodes=nodes,
            variables=self.variables,
            output=output,
            dims=dims,
            notes=notes,
            statements=self.statements,
            domains={k: v for k, v in self.declared_domains.items() if any(x.name == k for x in self.variables)},
        )

    def _name_intermediates(self, nodes: list[Node], output: Node) -> None:
        taken = {n.name for n in nodes if n.name} | set(self.dim_names) | set(self.names)
        if output.kind == "op" and output.name is None:
            output.name = next(c for c in ("y", "z", "out", "f", "L") if c not in taken)
            taken.add(output.name)
        counter = 0
        for n in nodes:
            if n.kind == "op" and n.name is None:
                counter += 1
                while f"v{counter}" in taken:
                    counter += 1
                n.name = f"v{counter}"


def _ancestors(output: Node) -> set[int]:
    return reachable(output, lambda n: n.inputs, key=lambda n: n.id)


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "a lambda",
        "ListComp": "a list comprehension",
        "SetComp": "a set comprehension",
        "DictComp": "a dict comprehension",
        "GeneratorExp": "a generator expression",
        "JoinedStr": "an f-string",
        "NamedExpr": "the walrus operator :=",
        "Subscript": "indexing with [ ]",
        "Compare": "a comparison",
        "BoolOp": "and/or",
        "IfExp": "a conditional expression",
        "List": "a list",
        "Tuple": "a tuple",
        "Dict": "a dict",
        "Set": "a set",
        "Await": "await",
        "Yield": "yield",
        "YieldFrom": "yield from",
        "Starred": "*",
        "Slice": "a slice",
        "Import": "import",
        "ImportFrom": "import",
        "FunctionDef": "def",
        "ClassDef": "class",
        "Delete": "del",
        "AugAssign": "an augmented assignment (+=)",
        "For": "a for loop",
        "While": "a while loop",
        "If": "an if statement",
        "With": "with",
        "Raise": "raise",
        "Try": "try",
        "Assert": "assert",
        "Global": "global",
        "Nonlocal": "nonlocal",
        "Pass": "pass",
        "Break": "break",
        "Continue": "continue",
        "Return": "return",
        "AsyncFunctionDef": "async def",
        "Match": "match",
    }
    if isinstance(node, ast.Constant):
        return f"the {type(node.value).__name__} constant {node.value!r}"[:80]
    return names.get(type(node).__name__, f"the syntax {type(node).__name__}")
