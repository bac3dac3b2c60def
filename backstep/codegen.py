"""`backstep codegen`: a derivation written out as a `torch.autograd.Function`.

The generated module holds one ``torch.autograd.Function`` subclass. ``forward`` computes the
forward steps and saves what the backward needs; ``backward`` computes the derivation's backward
steps one line each, in the derivation's order, in plain torch operations (never autograd),
each beside a comment with the step as backstep prints it. A step is computed only when an
input that needs its gradient (``ctx.needs_input_grad``) depends on it. Every adjoint has its
symbol's exact shape (a step that relies on broadcasting is expanded), so each input's gradient
has that input's shape, a broadcast bias included. A ``gradcheck()`` function checks the module
against finite differences in float64.

The module text comes from the jinja2 template ``backstep/templates/codegen/function.py.j2``; the code
lines are made here. They are laid out the way ``ruff format`` lays them out, within 88
columns (ruff's default), so that the module is clean under ruff's defaults and under this
project's settings: a step too long for one line is split into named parts (``t1 = ...``).

``--check`` and ``--against`` run code: the generated module (backstep's own text) and, for
``--against``, the user's file, which is imported as Python (that is what the user asks for).
So no user text ever becomes code in the module: the program, its comments and the regenerate
command reach it only inside the docstring, written by ``literal_text`` (every quote that could
close it, every backslash, every control or line-separator character escaped); names only as
identifiers in the form Python reads them (NFKC) that clash with nothing; comments only through
``comment`` (control characters made visible). ``generate`` parses the module it made and checks
its docstring and its top level before handing it out. The user's own code runs only inside
``user_code``: sys.exit() in it, or a run over ``USER_CODE_SECONDS``, is a UsageError (exit 2),
never backstep's exit (exit 0 from ``--against`` says that every gradient agrees).
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import keyword
import re
import sys
import textwrap
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import sympy
from sympy import Expr, Function

from .budget import TimeBudget
from .errors import UnsupportedError, UsageError
from .model import Derivation
from .ops import OP_OF_CLASS, PREC_ADD, PREC_ATOM, PREC_MUL, PREC_POSTFIX, PREC_POW, PREC_UNARY
from .printing import Printer, SymbolInfo, Symbols, to_text
from .shapes import ShapeEnv
from .symbolic import Dim, MatrixProduct, OuterProduct, TensorOp, shape_from_sympy, shape_to_sympy

LINE = 88  # ruff's default line length: the module is clean under the defaults and under ours
INDENT = 4

# Names the generated module uses itself: a user's name equal to one of these gets a suffix.
RESERVED = {
    "torch",
    "math",
    "ctx",
    "self",
    "generator",
    "draw",
    "inputs",
    "seed",
    "gradcheck",
    "staticmethod",
    "None",
    "True",
    "False",
}
# Elementwise functions of plain numbers (a size such as n) are Python's `math` functions.
MATH_FUNCTIONS = {"exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "erf"}
SIMPLE_POW_OPERAND = re.compile(r"-?([A-Za-z_]\w*(\.[A-Za-z_]\w*)*|\d+(\.\d*)?(e[-+]?\d+)?)")

# How a variable is drawn for the gradcheck, by its domain (backstep.numeric.draw, in code).
DRAW = {
    "real": "4 * draw({shape}) - 2",
    "positive": "0.5 + 1.5 * draw({shape})",
    "nonnegative": "2 * draw({shape})",
    "nonzero": "(0.5 + 1.5 * draw({shape})) * torch.sign(draw({shape}) - 0.5)",
    "probability": "torch.softmax(4 * draw({shape}) - 2, dim=-1)",
    "symmetric": "(lambda m: (m + m.T) / 2)(2 * draw({shape}) - 1)",
    "orthogonal": "torch.linalg.qr(2 * draw({shape}) - 1)[0]",
}
DOMAIN_OPS = {"log", "sqrt", "pow", "div", "logdet", "det", "inv", "tan", "norm"}


class CodegenError(UnsupportedError):
    """A derivation that backstep cannot write as torch code (an op without a torch template)."""

    kind = "codegen"


class Fit(Function):
    """`x` laid out to `shape`: what backstep's evaluator does by broadcasting, written as code
    (`x.expand(n, d)`, or `grad.new_full((n, d), c)` for a number)."""

    is_commutative = True

    @classmethod
    def eval(cls, x, shape):
        return None


# --- shapes of expressions -------------------------------------------------------------------------


def broadcast_plain(a: tuple, b: tuple) -> tuple:
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        da = a[-i] if i <= len(a) else 1
        db = b[-i] if i <= len(b) else 1
        out.append(db if da == 1 else da)
    return tuple(reversed(out))


def is_number(expr: Expr) -> bool:
    """No array in it: numbers and dimension names only (a Python number in generated code)."""
    if isinstance(expr, Fit):
        return False
    return all(isinstance(s, Dim) for s in expr.free_symbols) and not expr.has(TensorOp)


class ShapeOf:
    """The shape an expression has when it is evaluated as written (before any broadcast)."""

    def __init__(self, shapes: dict[str, tuple]):
        self.shapes = shapes
        self.memo: dict[Expr, tuple] = {}

    def __call__(self, expr: Expr) -> tuple:
        if expr in self.memo:
            return self.memo[expr]
        if isinstance(expr, Fit):
            out = shape_from_sympy(expr.args[1])
        elif isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            out = ()
        elif expr.is_Symbol:
            out = tuple(self.shapes[expr.name])
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            out = tuple(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
        else:
            out = ()
            for a in expr.args:
                out = broadcast_plain(out, self(a))
        self.memo[expr] = out
        return out


def fit(expr: Expr, shape: tuple, shape_of: ShapeOf) -> Expr:
    """`expr` with `shape` exactly: wrapped in Fit where it relies on broadcasting to get there."""
    have = shape_of(expr)
    if tuple(have) == tuple(shape):
        return expr
    if len(have) > len(shape) or broadcast_plain(have, shape) != tuple(shape):
        raise CodegenError(f"internal: an expression of shape {have} cannot be laid out as {shape}")
    return Fit(expr, shape_to_sympy(shape))


# --- the printer -------------------------------------------------------------------------------------


class CodePrinter(Printer):
    """backstep's torch printer, with what generated code needs on top:

    - names renamed where they would clash with the module's own (`ctx`, `torch`, …);
    - operands of shape-dependent ops laid out to the shape the op recorded (as the evaluator
      does), and Fit printed as `.expand(...)` / `.new_full(...)`;
    - functions of plain numbers as `math.*`; `**` and `/` spaced as ruff formats them;
    - composite parts of a long expression named (`t1 = ...`), so that every line fits.
    """

    def __init__(self, symbols: Symbols, dims: dict[str, str], shape_of: ShapeOf, like: str):
        super().__init__("torch", symbols)
        self.dim_names = dims
        self.shape_of = shape_of
        self.like = like  # a tensor in scope whose dtype and device new numbers take
        self.used: set[str] = set()  # symbols and dimensions the printed code reads
        self.taken: set[str] = set()
        self.budget: int | None = None
        self.hoisted: dict[Expr, str] = {}
        self.pending: list[tuple[str, str]] = []
        self._count = 0

    # Statements ------------------------------------------------------------------------------

    def statement(self, target: str, expr: Expr, indent: int) -> list[str]:
        """`target = expr` as lines of code (named parts first), each within LINE columns."""
        budget = LINE - indent - len(target) - 3
        while True:
            self.hoisted, self.pending = {}, []
            used_before = set(self.used)
            self.budget = max(budget, 8)
            try:
                body = self(expr)
            finally:
                self.budget = None
            pending = list(self.pending)
            # a part named, then printed differently after all (a sign pulled out): drop it
            while True:
                later = " ".join(code for _, code in pending) + " " + body
                unused = [p for p in pending if not re.search(rf"\b{p[0]}\b", later)]
                if not unused:
                    break
                pending = [p for p in pending if p not in unused]
            lines = [f"{name} = {code}" for name, code in pending] + [f"{target} = {body}"]
            if all(indent + len(line) <= LINE for line in lines):
                return lines
            if budget < 12:
                # one op's torch template is longer than a line: its call split as ruff splits it,
                # else (a chain of calls) the line left long
                out = []
                for line in lines:
                    if indent + len(line) <= LINE:
                        out.append(line)
                        continue
                    name, _, code = line.partition(" = ")
                    split = split_call(name, code, indent)
                    out += split if split else [line + "  # noqa: E501  # fmt: skip"]
                return out
            self.used = used_before
            budget = budget * 2 // 3

    def temp(self) -> str:
        while True:
            self._count += 1
            name = f"t{self._count}"
            if name not in self.taken:
                self.taken.add(name)
                return name

    # Dispatch --------------------------------------------------------------------------------

    def print(self, expr: Expr) -> tuple[str, int]:
        if expr in self.hoisted:
            return self.hoisted[expr], PREC_ATOM
        if isinstance(expr, Fit):
            s, prec = self._fit(expr)
        elif isinstance(expr, TensorOp):
            s, prec = super().print(self._laid_out(expr))
        else:
            s, prec = super().print(expr)
        if self.budget is not None and len(s) > self.budget and expr.args and not isinstance(expr, Dim):
            parts = [p for p in _parts(expr) if p.args and not isinstance(p, Dim) and not p.is_Number]
            for part in parts:
                self._hoist(part)
            if parts:
                s, prec = self.print(expr)
        return s, prec

    def _hoist(self, expr: Expr) -> None:
        if expr in self.hoisted:
            return
        code = self.print(expr)[0]
        name = self.temp()
        self.pending.append((name, code))
        self.hoisted[expr] = name

    def _laid_out(self, expr: TensorOp) -> Expr:
        """A shape-dependent op whose operands are broadcast to the shapes it recorded."""
        n = expr.n_operands
        if n == 0:
            return expr
        operands = [fit(a, s, self.shape_of) for a, s in zip(expr.operands, expr.in_shapes)]
        if all(a is b for a, b in zip(operands, expr.operands)):
            return expr
        return type(expr)(*operands, *expr.args[n:])

    def _fit(self, expr: Fit) -> tuple[str, int]:
        inner, shape = expr.args[0], shape_from_sympy(expr.args[1])
        sizes = [self._size(d) for d in shape]
        if is_number(inner):
            self.used.add(self.like)
            shape_s = "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"
            if inner == 0:
                return f"{self.like}.new_zeros({shape_s})", PREC_POSTFIX
            return f"{self.like}.new_full({shape_s}, {self.print(inner)[0]})", PREC_POSTFIX
        if not shape:
            return self.print(inner)
        return f"{self.wrap(inner, PREC_POSTFIX)}.expand({', '.join(sizes)})", PREC_POSTFIX

    def _size(self, d) -> str:
        if isinstance(d, int):
            return str(d)
        self.used.add(d)
        return self.dim_names.get(d, d)

    def _symbol(self, expr) -> str:
        self.used.add(expr.name)
        return super()._symbol(expr)

    def _dim(self, expr) -> str:
        self.used.add(expr.name)
        return self.dim_names.get(expr.name, expr.name)

    def _op(self, op, operands, params: dict, in_shapes: tuple = ()) -> tuple[str, int]:
        if not in_shapes and op.name in MATH_FUNCTIONS and all(is_number(a) for a in operands):
            return f"math.{op.name}({self.print(operands[0])[0]})", PREC_ATOM
        if op.name in ("sum", "mean") and params.get("axis") is None and params.get("keepdims"):
            # the table's template would write torch.sum(x, keepdim=True), which torch rejects
            dims_ = tuple(range(len(in_shapes[0])))
            return f"torch.{op.name}({self.print(operands[0])[0]}, dim={dims_}, keepdim=True)", PREC_ATOM
        if op.name == "logsumexp" and params.get("axis") is not None:
            # the table's torch template reduces over every axis; this one reduces over one
            return f"torch.logsumexp({self.print(operands[0])[0]}, dim={params['axis']})", PREC_ATOM
        params = {k: self._sizes(v) for k, v in params.items()}  # dimension names: onehot's classes, a shape
        if not getattr(op.printing, "torch", ""):
            raise CodegenError(
                f"the op {op.name} has no torch code template yet (ops.py: its Printing lacks torch=...), "
                "so backstep cannot write this derivation as code"
            )
        return super()._op(op, operands, params, in_shapes)

    def _sizes(self, value):
        """A parameter that names dimensions, with those names as the code has them (and marked used)."""
        if isinstance(value, tuple):
            return tuple(self._sizes(v) for v in value)
        if isinstance(value, str) and value in self.dim_names:
            self.used.add(value)
            return self.dim_names[value]
        return value

    # Formatting as ruff does -------------------------------------------------------------------

    def _number(self, expr) -> tuple[str, int]:
        if expr.is_Rational and not expr.is_Integer:
            return f"{expr.p} / {expr.q}", PREC_MUL
        return super()._number(expr)

    def _pow(self, expr) -> tuple[str, int]:
        base, exp = expr.base, expr.exp
        if exp == sympy.S.Half or base is sympy.E or (exp.is_Number and exp.is_negative):
            return super()._pow(expr)
        base_s = self.wrap(base, PREC_POW + 1)
        exp_s = self.wrap(exp, PREC_ATOM)
        simple = SIMPLE_POW_OPERAND.fullmatch(base_s) and SIMPLE_POW_OPERAND.fullmatch(exp_s)
        return base_s + ("**" if simple else " ** ") + exp_s, PREC_POW

    def _negative(self, expr: Expr) -> str:
        """`-expr` as ruff writes it: -(x**2) and -(x**2) / 2, never -x**2."""
        if expr.is_Pow and not (expr.exp.is_Number and expr.exp.is_negative) and expr not in self.hoisted:
            return "-" + self.paren(self.print(expr)[0])
        self._negating = expr.is_Mul
        try:
            s, prec = self.print(expr)
        finally:
            self._negating = False
        return "-" + (s if prec > PREC_ADD else self.paren(s))

    _negating = False

    def _product(self, factors: list[Expr]) -> tuple[str, int]:
        first_pow = self._negating and factors and factors[0].is_Pow and factors[0] not in self.hoisted
        self._negating = False
        if not first_pow:
            return super()._product(factors)
        parts = [self.paren(self.print(factors[0])[0])]
        for f in factors[1:]:
            if isinstance(f, (MatrixProduct, OuterProduct)):
                parts.append(self.paren(self.print(f)[0]))
            else:
                parts.append(self.wrap(f, PREC_MUL + 1))
        return " * ".join(parts), (PREC_MUL if len(parts) > 1 else PREC_ATOM)

    def _mul(self, expr) -> tuple[str, int]:
        coeff, factors = expr.as_coeff_mul()
        flat = []
        for f in factors:
            flat.extend(sympy.Mul.make_args(f))
        factors = tuple([f for f in flat if f.is_Number] + [f for f in flat if not f.is_Number])
        if coeff.is_negative:
            self._negating = (-coeff).is_Rational and (-coeff).p == 1
            try:
                s, prec = self._mul_positive(-coeff, factors)
            finally:
                self._negating = False
            return "-" + (s if prec > PREC_ADD else self.paren(s)), PREC_UNARY
        self._negating = False
        return self._mul_positive(coeff, factors)

    def _add(self, expr) -> tuple[str, int]:
        terms = [t for t in expr.args if not t.is_Number] + [t for t in expr.args if t.is_Number]
        first = next((i for i, t in enumerate(terms) if not t.could_extract_minus_sign()), 0)
        terms.insert(0, terms.pop(first))
        out = ""
        for i, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            if i == 0:
                out = self._negative(-term) if negative else self.wrap(term, PREC_ADD)
            else:
                out += (" - " if negative else " + ") + self.wrap(-term if negative else term, PREC_ADD + 1)
        return out, PREC_ADD


def split_call(target: str, code: str, indent: int) -> list[str] | None:
    """`target = f(a, b, k=c)` over lines, one argument a line with a trailing comma (as ruff keeps
    it at any line length), for a call of a dotted name."""
    import ast

    try:
        call = ast.parse(code, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(call, ast.Call) or not _dotted(call.func):
        return None
    segment = ast.get_source_segment
    args = [segment(code, a) for a in call.args]
    args += [f"{kw.arg}={segment(code, kw.value)}" for kw in call.keywords if kw.arg is not None]
    if None in args or len(args) != len(call.args) + len(call.keywords):
        return None
    head = f"{target} = {segment(code, call.func)}("
    pad = " " * INDENT
    if indent + len(head) > LINE:
        return None
    if all(indent + INDENT + len(a) + 1 <= LINE for a in args):  # one a line: stable at any line length
        return [head] + [pad + a + "," for a in args] + [")"]
    return None


def _dotted(node) -> bool:
    import ast

    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name)


def _parts(expr: Expr) -> list[Expr]:
    """The operands a long expression can be split into (a denominator's base, not its power)."""
    if isinstance(expr, Fit):
        return [expr.args[0]]
    if isinstance(expr, TensorOp):
        return list(expr.operands)
    if expr.is_Mul:
        out = []
        for a in expr.args:
            out.append(a.base if a.is_Pow and a.exp.is_Number and a.exp.is_negative else a)
        return out
    if expr.is_Add:
        return [-a if a.could_extract_minus_sign() else a for a in expr.args]
    return list(expr.args)


# --- the module ----------------------------------------------------------------------------------------


@dataclass
class Block:
    guard: str | None
    lines: list[str] = field(default_factory=list)


def python_name(name: str) -> str:
    """`name` as Python reads an identifier (NFKC): a --shape dimension ｔｏｒｃｈ is torch to Python."""
    return unicodedata.normalize("NFKC", name)


def safe_names(d: Derivation, class_name: str) -> dict[str, str]:
    """Every name of the derivation as a Python identifier that does not clash with the module's
    names nor with another name of the derivation (ﬁ and fi are one name to Python)."""
    names = list(d.symbols.table) + list(d.dims)
    for name in names:
        if not python_name(name).isidentifier():  # the parser and --shape allow only identifiers
            raise CodegenError(f"internal: the name {name!r} is not a Python identifier")
    taken = {python_name(n) for n in names} | RESERVED | {class_name}
    given: set[str] = set()
    out = {}
    for name in names:
        new = python_name(name)
        if new in RESERVED or new == class_name or keyword.iskeyword(new) or new in given:
            while new in taken or new in given or keyword.iskeyword(new):
                new += "_"
            taken.add(new)
        given.add(new)
        out[name] = new
    return out


def visible(text: str) -> str:
    """`text` with each control, format or separator character (other than a space) written as an
    escape: in a comment of the module none can end the line (\\r does, for Python; \\x1c and
    \\u2028 do, for str.splitlines() and editors) or reorder what a reader sees (\\u202e)."""
    return "".join(ch if ch.isprintable() else escape_char(ch) for ch in text)


def escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def literal_text(text: str) -> str:
    """`text` as the inside of a \"\"\"-quoted string literal that reads back as exactly `text`:
    backslashes doubled, each quote that could close the literal (one followed by a quote, or the
    last character) escaped, control and line-separator characters written as escapes."""
    out = []
    for i, ch in enumerate(text):
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"' and (i + 1 == len(text) or text[i + 1] == '"'):
            out.append('\\"')
        else:
            out.append(ch if ch.isprintable() else escape_char(ch))
    return "".join(out)


def comment(text: str, indent: int) -> list[str]:
    width = LINE - indent - 2
    wrapped = textwrap.wrap(visible(text), width, break_long_words=True, break_on_hyphens=False)
    return ["# " + line for line in wrapped]


def check_class_name(name: str, option: str = "--name") -> str:
    """`name` if the generated class can take it, else a UsageError that says why: an ASCII
    identifier that is no keyword, no builtin and no name of the module's own (the module reads
    torch, math, its builtins and gradcheck at module level; a class named so would hide one)."""
    if not (name.isascii() and name.isidentifier()):
        why = "not a Python class name (ASCII letters, digits and _, not starting with a digit)"
    elif keyword.iskeyword(name) or keyword.issoftkeyword(name):
        why = "a Python keyword"
    elif name in RESERVED or (name.startswith("__") and name.endswith("__")):
        why = "a name that the generated module uses itself"
    elif name in dir(builtins):
        why = "a Python builtin, which the class would hide from the generated module"
    else:
        return name
    raise UsageError(f"{option} {name!r}: {why}; choose another class name")


def class_name_for(path: Path | None) -> str:
    if path is None:
        return "DerivedFunction"
    words = re.findall(r"[A-Za-z0-9]+", path.stem)
    name = "".join(w[:1].upper() + w[1:] for w in words) or "Derived"
    if name[0].isdigit():
        name = "F" + name
    name = name if name.endswith("Function") else name + "Function"
    return check_class_name(name, f"-o {path}")


@dataclass
class Generated:
    code: str
    class_name: str
    inputs: list[str]  # variable names, in order (backstep's names)
    sizes: dict[str, int]  # the gradcheck's size of each dimension


def generate(d: Derivation, class_name: str = "DerivedFunction", command: str | None = None) -> Generated:
    """The module text for derivation `d` (see the module docstring)."""
    from .verify import sample_sizes

    check_class_name(class_name)
    if not d.forward:
        raise CodegenError(f"the output {d.output} is an input itself: there is no computation to write")
    rename = safe_names(d, class_name)
    table = {
        name: SymbolInfo(info.text, info.latex, rename.get(name, name), info.shape)
        for name, info in d.symbols.table.items()
    }
    symbols = Symbols(table)
    shapes = {name: info.shape for name, info in d.symbols.table.items()}
    dims = {name: rename.get(name, name) for name in d.dims}
    shape_of = ShapeOf(shapes)
    seed = d.seed.name
    printer = CodePrinter(symbols, dims, shape_of, like=seed)
    printer.taken = set(rename.values()) | RESERVED
    text = Printer("text", d.symbols)

    inputs = [v.name for v in d.variables]
    wanted = [v.name for v in d.variables if v.requires_grad]
    forward_names = set(inputs) | {f.name for f in d.forward}
    step_by_target = {s.target: s for s in d.backward}
    final = {s.of: s.target for s in d.backward if s.partial is None and s.of in wanted}

    # Which inputs need each step: those whose gradient depends on it.
    deps = {s.target: {x.name for x in s.result.free_symbols} & set(step_by_target) for s in d.backward}
    needed_by: dict[str, set[str]] = {s.target: set() for s in d.backward}
    for v in wanted:
        stack = [final[v]]
        while stack:
            t = stack.pop()
            if v in needed_by[t]:
                continue
            needed_by[t].add(v)
            stack.extend(deps[t])

    # --- backward body
    body_indent = 2 * INDENT
    blocks: list[Block] = []
    try:
        for s in d.backward:
            who = needed_by[s.target]
            if not who:
                continue
            guard = None if set(who) == set(wanted) else " or ".join(f"need_{rename[v]}" for v in wanted if v in who)
            if not blocks or blocks[-1].guard != guard:
                blocks.append(Block(guard))
            indent = body_indent + (INDENT if guard else 0)
            value = s.result
            if d.seed.is_one and s.kind == "rule" and s.node == d.output:
                value = sympy.Symbol(seed, real=True) * value  # the upstream gradient of a scalar output
            value = fit(value, shapes[s.target], shape_of)
            block = blocks[-1]
            block.lines += comment(step_comment(d, s, text), indent)
            block.lines += printer.statement(rename[s.target], value, indent)
    except TypeError as err:
        raise CodegenError(f"cannot write this derivation as torch code: {err}") from None

    used = set(printer.used)
    saved = [n for n in inputs + [f.name for f in d.forward] if n in used and n in forward_names]
    backward_dims = [dm for dm in d.dims if dm in used]

    # Dimensions in backward: from the upstream gradient, the saved tensors, else stashed on ctx.
    sources = [(seed, d.seed.shape)] + [(n, shapes[n]) for n in saved]
    backward_dim_lines, stash = dim_lines(backward_dims, sources, rename)

    # --- forward body
    fprinter = CodePrinter(symbols, dims, shape_of, like=inputs[0])
    fprinter.taken = printer.taken
    forward_lines: list[str] = []
    try:
        for f in d.forward:
            forward_lines += comment(f"{f.name} = {text(f.expr)}", body_indent)
            forward_lines += fprinter.statement(rename[f.name], f.expr, body_indent)
    except TypeError as err:
        raise CodegenError(f"cannot write this forward pass as torch code: {err}") from None
    forward_dims = [dm for dm in d.dims if dm in fprinter.used or dm in stash]
    forward_dim_lines, missing = dim_lines(forward_dims, [(n, shapes[n]) for n in inputs], rename)
    if missing:
        raise CodegenError(f"the sizes {', '.join(missing)} are not the size of any input")

    returns = [rename[final[v]] if v in final else "None" for v in inputs]
    code_text = "\n".join(printer_lines_text(blocks))
    module_uses_math = "math." in code_text or any("math." in line for line in forward_lines)

    sizes = sample_sizes(d.dims)
    doc = module_doc(d, class_name, command)
    context = {
        "class_name": class_name,
        "doc": [literal_text(line) for line in doc],
        "import_math": module_uses_math,
        "forward_def": bracketed("def forward(", ["ctx"] + [rename[n] for n in inputs], "):", INDENT),
        "backward_def": bracketed("def backward(", ["ctx", rename.get(seed, seed)], "):", INDENT),
        "forward_dims": forward_dim_lines,
        "forward_lines": forward_lines,
        "stash": [f"ctx.{rename[dm]} = {rename[dm]}" for dm in stash],
        "save": bracketed("ctx.save_for_backward(", [rename[n] for n in saved], ")", body_indent) if saved else [],
        "unpack": unpack_lines([rename[n] for n in saved], "ctx.saved_tensors", body_indent) if saved else [],
        "forward_return": f"return {rename[d.output]}",
        "scalar_note": comment(
            f"{d.output} is a scalar: the steps take the upstream gradient {rename.get(seed, seed)} "
            "(1 for loss.backward()) where they leave the output",
            body_indent,
        )
        if d.seed.is_one
        else [],
        "needs": needs_lines([rename[n] if n in wanted else None for n in inputs], body_indent),
        "nones": none_lines([rename[final[v]] for v in wanted], body_indent),
        "backward_dims": backward_dim_lines + [f"{rename[dm]} = ctx.{rename[dm]}" for dm in stash],
        "blocks": blocks,
        "returns": return_lines(returns, body_indent),
        "check": gradcheck_context(d, class_name, rename, sizes),
    }
    code = render_template(context)
    check_module_text(code, "\n".join(doc) + "\n", class_name)
    return Generated(code=code, class_name=class_name, inputs=inputs, sizes=sizes)


def check_module_text(code: str, doc: str, class_name: str) -> None:
    """Defence in depth: the module parses, each of its lines is one line to every reader, its
    docstring is exactly `doc` (no user text closed it) and its top level is the template's."""
    if code.splitlines() != code.split("\n")[:-1] or "\r" in code or "\x0c" in code:
        raise CodegenError("internal: the generated module has a line break other than \\n")
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise CodegenError(f"internal: the generated module does not parse ({err.msg}, line {err.lineno})") from None
    body = [node for node in tree.body if not isinstance(node, ast.Import)]
    imports = [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
    shape = [type(node).__name__ + ":" + getattr(node, "name", "") for node in body]
    if (
        ast.get_docstring(tree, clean=False) != doc
        or shape != ["Expr:", f"ClassDef:{class_name}", "FunctionDef:gradcheck", "If:"]
        or not set(imports) <= {"math", "torch"}
    ):
        raise CodegenError("internal: the generated module is not laid out as its template lays it out")


def bracketed(head: str, items: list[str], tail: str, indent: int, one_tuple: bool = False) -> list[str]:
    """`head(items)tail` on one line, else one item a line with a trailing comma: the two layouts
    that ruff keeps as they are at any line length (so the module is clean under ruff's default
    88 columns and under a project's longer limit alike)."""
    inner = ", ".join(items) + ("," if one_tuple and len(items) == 1 else "")
    if indent + len(head) + len(inner) + len(tail) <= LINE:
        return [head + inner + tail]
    return [head] + [" " * INDENT + item + "," for item in items] + [tail]


def unpack_lines(names: list[str], rhs: str, indent: int) -> list[str]:
    """`a, b = rhs` (`(a,) = rhs` for one name), else the names one a line in parentheses."""
    lhs = f"({names[0]},)" if len(names) == 1 else ", ".join(names)
    if indent + len(lhs) + 3 + len(rhs) <= LINE:
        return [f"{lhs} = {rhs}"]
    return ["("] + [" " * INDENT + name + "," for name in names] + [f") = {rhs}"]


def printer_lines_text(blocks: list[Block]) -> list[str]:
    return [line for b in blocks for line in b.lines]


def needs_lines(flags: list[str | None], indent: int) -> list[str]:
    if not any(flags):
        return []
    return unpack_lines([f"need_{f}" if f else "_" for f in flags], "ctx.needs_input_grad", indent)


def none_lines(names: list[str], indent: int) -> list[str]:
    line = " = ".join(names + ["None"])
    if not names:
        return []
    if indent + len(line) <= LINE:
        return [line]
    return [f"{name} = None" for name in names]


def return_lines(items: list[str], indent: int) -> list[str]:
    if len(items) > 1 and indent + 7 + len(", ".join(items)) <= LINE:
        return ["return " + ", ".join(items)]
    return bracketed("return (", items, ")", indent, one_tuple=True)


def dim_lines(wanted: list[str], sources: list[tuple[str, tuple]], rename: dict[str, str]):
    """`n, d = X.shape` / `h = W.shape[1]` lines defining `wanted`; and those no tensor has."""
    todo = list(wanted)
    lines = []
    for tensor, shape in sources:
        here = [(i, dm) for i, dm in enumerate(shape) if dm in todo]
        if not here:
            continue
        # first come, first served: each dimension from the first tensor that has it
        seen: set[str] = set()
        picks = []
        for i, dm in here:
            if dm not in seen:
                seen.add(dm)
                picks.append((i, dm))
        name = rename.get(tensor, tensor)
        if len(picks) == len(shape) and len(shape) > 1:
            lines.append(", ".join(rename.get(dm, dm) for _, dm in picks) + f" = {name}.shape")
        else:
            lines += [f"{rename.get(dm, dm)} = {name}.shape[{i}]" for i, dm in picks]
        todo = [dm for dm in todo if dm not in seen]
    return lines, todo


def step_comment(d: Derivation, s, text: Printer) -> str:
    target = text(sympy.Symbol(s.target, real=True))
    if s.kind == "sum":
        parts = len(s.result.args) if s.result.is_Add else (0 if s.result == 0 else 1)
        why = f"{s.of} is used {parts} times: the contributions add up" if parts > 1 else f"{s.of} gets no gradient"
        return f"{s.index}. {target} = {text(s.result)}   ({why})"
    node = next((f for f in d.forward if f.name == s.node), None)
    where = f"   ({s.node} = {text(node.expr)})" if node is not None else ""
    return f"{s.index}. {target} = {text(s.result)}{where}"


def module_doc(d: Derivation, class_name: str, command: str | None) -> list[str]:
    lines = [f"{class_name}: a torch.autograd.Function generated by backstep from", ""]
    for src in d.source.strip().splitlines():
        src = src.rstrip()
        wrapped = textwrap.wrap(src, LINE - 8, break_long_words=True, subsequent_indent="    ") or [""]
        lines += [("    " + w).rstrip() for w in wrapped]  # a blank line with no trailing spaces
    lines.append("")
    shapes = ", ".join(f"{v.name}: {shape_tuple(v.shape)}" for v in d.variables)
    grads = [v.name for v in d.variables if v.requires_grad]
    nograd = [v.name for v in d.variables if not v.requires_grad]
    info = (
        f"Inputs in order: {shapes}; forward returns {d.output}: {shape_tuple(d.output_shape)}. "
        f"backward returns the gradients of {', '.join(grads) or 'none'}"
        + (f" (and None for {', '.join(nograd)})" if nograd else "")
        + ", each computed by backstep's derivation step by step in plain torch operations; "
        "gradcheck() compares them with finite differences in float64."
    )
    lines += textwrap.wrap(info, LINE - 4)
    if command:
        # a newline or tab in an argument shown as an escape, not silently wrapped into a space
        lines += [""] + textwrap.wrap(f"Regenerate with: {visible(command)}", LINE - 4, break_on_hyphens=False)
    return lines


def shape_tuple(shape: tuple) -> str:
    return "(" + ", ".join(str(x) for x in shape) + ("," if len(shape) == 1 else "") + ")"


def gradcheck_context(d: Derivation, class_name: str, rename: dict[str, str], sizes: dict[str, int]) -> dict:
    """The lines of gradcheck(): sizes, inputs drawn inside their domains, the check itself."""
    retry = any(f.op in DOMAIN_OPS for f in d.forward)
    indent = 2 * INDENT if retry else INDENT
    lines = []
    for v in d.variables:
        name = rename[v.name]
        dims = [rename.get(dm, dm) if isinstance(dm, str) else str(dm) for dm in v.shape]
        shape = ", ".join(dims)
        shape_t = "(" + shape + ("," if len(dims) == 1 else "") + ")"
        domain = v.domain
        steps = []  # statements that make the value; the last one gives it
        if domain.startswith("class_index"):
            classes = domain.split(":", 1)[1]
            if not (classes.isdigit() or classes in rename):  # a count or a dimension, never other text
                raise CodegenError(f"internal: the number of classes {classes!r} is neither a number nor a size")
            steps.append(f"torch.randint({rename.get(classes, classes)}, {shape_t}, generator=generator)")
        elif domain == "onehot":
            lead = dims[:-1]
            lead_t = "(" + ", ".join(lead) + ("," if len(lead) == 1 else "") + ")"
            steps.append(f"torch.randint({dims[-1]}, {lead_t}, generator=generator)")
            steps.append(f"torch.nn.functional.one_hot({name}, {dims[-1]}).double()")
        elif domain in ("spd", "invertible"):
            k = dims[0]
            eye = f"torch.eye({k}, dtype=torch.float64)"
            steps.append(f"2 * draw({shape}) - 1")
            steps.append(f"{name} @ {name}.T / {k} + {eye}" if domain == "spd" else f"{name} + (1 + {k}**0.5) * {eye}")
        elif domain == "symmetric":
            steps += [f"2 * draw({shape}) - 1", f"({name} + {name}.T) / 2"]
        else:
            steps.append(DRAW.get(domain, DRAW["real"]).format(shape=shape))
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            if last and v.requires_grad:
                line = f"{name} = ({step}).requires_grad_()"
                if indent + len(line) > LINE:
                    lines += [f"{name} = {step}", f"{name}.requires_grad_()"]
                    continue
            else:
                line = f"{name} = {step}"
            lines.append(line)
    numel = 0
    for v in d.variables:
        count = 1
        for dm in v.shape:
            count *= dm if isinstance(dm, int) else sizes[dm]
        numel += count
    names = [rename[v.name] for v in d.variables]
    check = f"torch.autograd.gradcheck({class_name}.apply, inputs" + (", fast_mode=True" if numel > 2000 else "") + ")"
    return {
        "sizes": unpack_lines([rename.get(dm, dm) for dm in d.dims], ", ".join(str(sizes[dm]) for dm in d.dims), INDENT)
        if len(d.dims) > 1
        else [f"{rename.get(dm, dm)} = {sizes[dm]}" for dm in d.dims],
        "draws": lines + bracketed("inputs = (", names, ")", indent, one_tuple=True),
        "retry": retry,
        "finite": f"if torch.isfinite({class_name}.apply(*inputs)).all():",
        "returns": bracketed("return ", [check], "", INDENT)
        if INDENT + 7 + len(check) <= LINE
        else [
            "return " + check  # a class name this long is the user's choice
        ],
    }


# --- the template -----------------------------------------------------------------------------------


def template_dir() -> Path:
    """The codegen template, package data beside the document templates (`backstep/templates/codegen`)."""
    from importlib import resources

    path = Path(str(resources.files("backstep") / "templates" / "codegen"))
    if not (path / "function.py.j2").is_file():
        raise UsageError(f"backstep's codegen template is missing (looked in {path}); reinstall backstep")
    return path


def render_template(context: dict) -> str:
    import jinja2
    from jinja2.sandbox import SandboxedEnvironment

    # sandboxed although the template is backstep's own: defence in depth, it can reach no Python internals
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(template_dir())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env.get_template("function.py.j2").render(**context)


# --- running generated and user code ---------------------------------------------------------------


def load_generated(code: str, name: str = "backstep_generated") -> ModuleType:
    """The generated module, executed from its text (backstep's own code, not the user's)."""
    module = ModuleType(name)
    module.__file__ = f"<{name}>"
    exec(compile(code, module.__file__, "exec"), module.__dict__)  # noqa: S102 (our generated code)
    return module


# How long the user's code may run at a time (importing the file, tracing, one call of a backward):
# a file that loops or waits at import must not hang backstep. Tests lower it.
USER_CODE_SECONDS = 60.0


class UserCodeTimeout(BaseException):
    """Raised inside the user's code when its time is up: a BaseException, so that an `except
    Exception` in the user's code cannot swallow it."""

    def __init__(self, budget: TimeBudget):
        super().__init__(f"over {budget.seconds:g} s")
        self.budget = budget


class UserCodeBudget(TimeBudget):
    """A TimeBudget (SIGALRM, restored afterwards) whose expiry is a UserCodeTimeout."""

    def _expire(self, signum, frame):
        raise UserCodeTimeout(self)


@contextmanager
def user_code(where: str, doing: str, seconds: float | None = None) -> Iterator[None]:
    """Run the user's code for at most `seconds` (USER_CODE_SECONDS; 0: no limit here, each call
    timed by a UserCodeBudget inside). sys.exit() in it, or running out of time, is a UsageError
    (exit 2) that says `where` (`--torch model.py:Net`) and `doing` (`while backstep imported
    model.py`): never backstep's own exit, whose 0 would say that all went well."""
    try:
        with UserCodeBudget(USER_CODE_SECONDS if seconds is None else seconds):
            yield
    except SystemExit as err:
        raise UsageError(
            f"{where}: its code called sys.exit({err.code!r}) {doing}; that is an error here, "
            "never backstep's own exit status"
        ) from None
    except UserCodeTimeout as err:
        raise UsageError(
            f"{where}: its code was still running after {err.budget.seconds:g} s {doing} "
            "(an endless loop, or waiting for input?); backstep stopped it"
        ) from None


def load_user_object(spec: str, option: str):
    """`path.py:Name` -> the object. This imports (runs) the user's file, as the option asks,
    within user_code's limits."""
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text or not attr:
        raise UsageError(f"{option} {spec}: write FILE.py:NAME (e.g. my_function.py:MyFunction)")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(f"{option} {spec}: no such file {path}")
    module_name = "backstep_user_" + re.sub(r"\W", "_", path.stem)
    spec_obj = importlib.util.spec_from_file_location(module_name, path)
    if spec_obj is None or spec_obj.loader is None:
        raise UsageError(f"{option} {spec}: cannot import {path}")
    module = importlib.util.module_from_spec(spec_obj)
    import torch  # noqa: F401 (before the clock starts: torch's first import takes seconds that are not the file's)

    sys.modules[module_name] = module
    directory = str(path.resolve().parent)
    sys.path.insert(0, directory)  # the file may import its neighbours
    try:
        with user_code(f"{option} {spec}", f"while backstep imported {path}"):
            try:
                spec_obj.loader.exec_module(module)
            except Exception as err:  # the user's code: any failure is theirs to see, as one line
                raise UsageError(f"{option} {spec}: importing {path} failed: {type(err).__name__}: {err}") from None
    except BaseException:
        sys.modules.pop(module_name, None)
        raise
    finally:
        if sys.path and sys.path[0] == directory:
            sys.path.pop(0)
    obj = module
    with user_code(f"{option} {spec}", f"while backstep looked up {attr} in {path}"):  # a module __getattr__ may run
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise UsageError(f"{option} {spec}: {path} has no {attr}")
            obj = getattr(obj, part)
    return obj, path


def run_gradcheck(module: ModuleType) -> tuple[bool, str]:
    """Call the module's own gradcheck(); (passed, message)."""
    try:
        module.gradcheck()
    except Exception as err:  # gradcheck raises GradcheckError with the numbers that differ
        return False, f"{type(err).__name__}: {err}"
    return True, "gradcheck passed (float64, finite differences)"


@dataclass
class InputComparison:
    name: str  # backstep's name
    param: str  # the name in the user's forward, if known
    requires_grad: bool
    ok: bool = True
    max_abs_err: float = 0.0
    max_rel_err: float = 0.0
    error: str = ""  # the user's backward raised, or returned a wrong shape


@dataclass
class Comparison:
    user: str
    points: int
    sizes: dict[str, int]
    forward_ok: bool = True
    forward_err: float = 0.0
    forward_error: str = ""
    inputs: list[InputComparison] = field(default_factory=list)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.forward_ok and all(i.ok for i in self.inputs)


INDEX_IN_ERROR = re.compile(r"at index (\d+)")


def compare_against(d: Derivation, derived_class, user_class, user_name: str, points: int = 3, seed: int = 0):
    """Run the user's autograd.Function and the derived one on the same random inputs."""
    import inspect

    import torch

    from .verify import _draw_point, sample_sizes

    if not (isinstance(user_class, type) and issubclass(user_class, torch.autograd.Function)):
        raise UsageError(f"--against {user_name}: not a torch.autograd.Function subclass")
    names = [v.name for v in d.variables]
    try:
        params = list(inspect.signature(user_class.forward).parameters)[1:]
    except (TypeError, ValueError):
        params = []
    positional = [p for p in params if not p.startswith("*")]
    if params and len(positional) < len(names) and not any(p.startswith("*") for p in params):
        raise UsageError(
            f"--against {user_name}: its forward takes {len(positional)} inputs ({', '.join(positional)}), "
            f"but the formula has {len(names)} ({', '.join(names)}), passed in that order"
        )
    sizes = d.sizes or sample_sizes(d.dims)
    report = Comparison(user=user_name, points=points, sizes=sizes)
    report.inputs = [
        InputComparison(v.name, positional[i] if i < len(positional) else "", v.requires_grad)
        for i, v in enumerate(d.variables)
    ]
    requires = {v.name: v.requires_grad for v in d.variables}
    domains = {v.name: v.domain for v in d.variables}
    generator = torch.Generator().manual_seed(seed)
    from .numeric import draw
    from .shapes import concrete

    # sys.exit() anywhere in the user's code is an error; each call of it is timed in run()
    with user_code(f"--against {user_name}", "while backstep ran it", seconds=0):
        for point in range(points):
            leaves, _ = _draw_point(torch, generator, d.graph, d, sizes, domains, requires, point)
            base = []
            for v in d.variables:
                t = leaves[v.name].detach()
                base.append(t.long() if v.domain.startswith("class_index") else t)
            upstream = draw(torch, generator, concrete(d.output_shape, sizes), "real")

            def run(cls, base=base, upstream=upstream, only=None):
                xs = [
                    t.clone().requires_grad_(requires[n] and (only is None or n == only)) for n, t in zip(names, base)
                ]
                # a UserCodeTimeout (a BaseException) passes the `except Exception` around the user's runs
                with UserCodeBudget(USER_CODE_SECONDS if cls is user_class else 0):
                    out = cls.apply(*xs)
                    grads = torch.autograd.grad(
                        out, [x for x in xs if x.requires_grad], upstream, allow_unused=True, materialize_grads=True
                    )
                it = iter(grads)
                return out.detach(), [next(it) if x.requires_grad else None for x in xs]

            out_derived, grads_derived = run(derived_class)
            try:
                out_user, grads_user = run(user_class)
            except Exception as err:  # the user's function: a failure is a finding, not a crash
                grads_user = None
                message = f"{type(err).__name__}: {first_line(err)}"
                m = INDEX_IN_ERROR.search(str(err))
                if m and int(m.group(1)) < len(names):
                    report.inputs[int(m.group(1))].ok = False
                    report.inputs[int(m.group(1))].error = message
                else:
                    blamed = False
                    for i, n in enumerate(names):
                        if not requires[n]:
                            continue
                        try:
                            run(user_class, only=n)
                        except Exception as err_i:  # noqa: BLE001
                            report.inputs[i].ok = False
                            report.inputs[i].error = f"{type(err_i).__name__}: {first_line(err_i)}"
                            blamed = True
                    if not blamed:
                        report.error = message
                # compare what can be compared: each input alone
                for i, n in enumerate(names):
                    if not requires[n] or report.inputs[i].error:
                        continue
                    try:
                        out_user, g_i = run(user_class, only=n)
                    except Exception:  # noqa: BLE001
                        continue
                    record(report.inputs[i], grads_derived[i], g_i[i], torch)
                continue
            diff = forward_diff(out_derived, out_user, torch)
            if diff is None:
                report.forward_ok = False
                report.forward_error = f"shape {tuple(out_user.shape)}, not {tuple(out_derived.shape)}"
            else:
                report.forward_err = max(report.forward_err, diff)
                if not close(out_user, out_derived, torch):
                    report.forward_ok = False
            for i, _n in enumerate(names):
                if grads_derived[i] is None or report.inputs[i].error:
                    continue
                record(report.inputs[i], grads_derived[i], grads_user[i], torch)
    return report


def first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else ""


def close(a, b, torch) -> bool:
    scale = max(1.0, float(b.abs().max()) if b.numel() else 0.0)
    return bool(torch.allclose(a.to(b.dtype), b, rtol=1e-6, atol=1e-8 * scale))


def forward_diff(a, b, torch) -> float | None:
    if tuple(a.shape) != tuple(b.shape):
        return None
    return float((a.to(torch.float64) - b.to(torch.float64)).abs().max()) if a.numel() else 0.0


def record(item: InputComparison, derived, user, torch) -> None:
    if user is None:
        item.ok = False
        item.error = "the backward returned None for it"
        return
    if tuple(user.shape) != tuple(derived.shape):
        item.ok = False
        item.error = f"the backward returned shape {tuple(user.shape)}, not {tuple(derived.shape)}"
        return
    diff = float((user.to(torch.float64) - derived).abs().max()) if derived.numel() else 0.0
    scale = float(derived.abs().max()) if derived.numel() else 0.0
    item.max_abs_err = max(item.max_abs_err, diff)
    item.max_rel_err = max(item.max_rel_err, diff / scale if scale else diff)
    if not close(user, derived, torch):
        item.ok = False


def comparison_text(d: Derivation, report: Comparison, derived_name: str) -> str:
    """The report of --against, for the terminal."""
    from .printing import to_torch

    sizes = " ".join(f"{k}={v}" for k, v in report.sizes.items())
    out = [
        f"{report.user} against backstep's derivation of {d.output} = {to_text(d.output_expr, d.symbols)}",
        f"{report.points} random points, float64{', ' + sizes if sizes else ''}; the same inputs and upstream "
        "gradient for both",
        "",
    ]
    if report.error:
        out.append(f"✗ {report.user} failed: {report.error}")
    if report.forward_error:
        out.append(f"✗ forward: {report.forward_error}")
    elif not report.forward_ok:
        out.append(f"✗ forward values differ (max abs err {report.forward_err:.3g})")
    else:
        out.append(f"✓ forward values agree (max abs err {report.forward_err:.1g})")
    loss = d.output if d.seed.is_one else "L"
    for i, item in enumerate(report.inputs):
        label = f"input {i + 1} {item.name}" + (f" ({item.param})" if item.param and item.param != item.name else "")
        if not item.requires_grad:
            out.append(f"· {label}: no gradient (not in --wrt, or integer class indices)")
            continue
        if item.ok:
            out.append(f"✓ {label}: gradients agree (max abs err {item.max_abs_err:.1g})")
            continue
        why = item.error or f"max abs err {item.max_abs_err:.3g}, max rel err {item.max_rel_err:.3g}"
        out.append(f"✗ {label}: the gradient differs: {why}")
        g = d.gradients.get(item.name)
        if g is not None:
            out.append(f"    derived: ∂{loss}/∂{item.name} = {to_text(g.expr, d.symbols)}")
            try:
                out.append(f"    as code: {to_torch(g.expr, d.symbols)}")
            except TypeError:
                pass
    out.append("")
    if report.ok:
        out.append(f"✓ {report.user}'s backward agrees with the derivation")
    else:
        out.append(f"✗ {report.user}'s backward disagrees with the derivation; {derived_name}")
    return "\n".join(out)


# --- the command ----------------------------------------------------------------------------------------


def regenerate_command(
    expr: str | None,
    file: Path | None,
    torch_model: str | None,
    shape: list[str],
    wrt: str | None,
    assume: list[str],
    name: str | None,
    output: Path | None,
) -> str:
    """The `backstep codegen ...` line that makes this module again (for its docstring)."""
    import shlex

    parts = ["backstep", "codegen"]
    if expr is not None:
        parts.append(shlex.quote(expr))
    if file is not None:
        parts += ["-f", shlex.quote(str(file))]
    if torch_model is not None:
        parts += ["--torch", shlex.quote(torch_model)]
    for s in shape:
        parts += ["--shape", shlex.quote(s)]
    if wrt:
        parts += ["--wrt", shlex.quote(wrt)]
    for a in assume:
        parts += ["--assume", shlex.quote(a)]
    if name:
        parts += ["--name", shlex.quote(name)]
    if output is not None:
        parts += ["-o", shlex.quote(str(output))]
    return " ".join(parts)


def check_text(generated: Generated, passed: bool, message: str) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in generated.sizes.items())
    where = f" ({sizes})" if sizes else ""
    if passed:
        return f"✓ gradcheck passed: {generated.class_name}'s backward matches finite differences in float64{where}"
    return f"✗ gradcheck failed for {generated.class_name}{where}: {message}"
