"""`backstep check`: is a hand-derived gradient right — and if not, where and why.

A *claim* is an expression in backstep's input language for the gradient of a formula with
respect to one of its variables (or the adjoint of one of its named intermediates). It is parsed
by backstep's own parser (never evaluated as Python), over the names of the formula: its
variables, its intermediates, the dimension names, and the adjoints (``grad_y``, ``y_bar``,
``dL/dy`` …; see ``adjoint_spellings``).

Deciding. A claim is right only when it matches the true gradient everywhere it is evaluated:
numerically always — float64, at random points inside the domains, at two sets of distinct,
non-square sizes, the truth coming from torch autograd — and, where SymPy can prove the
equality within a time budget, symbolically too. A claim of the wrong shape is wrong.

Diagnosing. When a claim is wrong, candidate mistakes are tried one by one, each by *applying
the fix* and testing the fixed claim against the truth at every point: the claim transposed,
one operand transposed (or one transpose removed), a matrix product's order swapped, a sum over
another axis, the claim summed over a broadcast axis, the claim divided by a constant (a sign, a
factor of 2, a mean's 1/n), A replaced by A + Aᵀ, and — built from the derivation's own steps —
the true gradient with one chain-rule factor left out (or put in twice) or with one term of the
multivariable chain rule left out. Only a fix that makes the claim equal to the truth at every
point is reported; otherwise the answer is "I could not name the mistake".

Derivation files (one ``name = expression`` per line) are checked line by line against the true
adjoint of each named node; every adjoint a line uses is bound to its *true* value, so that a
line is judged as if the lines before it were right.

Circular claims. Since the adjoints a claim uses are bound to their true values, a claim may use
only what the true derivation has before the quantity it claims (see ``Problem.circular``):
otherwise ``grad_W1 = grad_W1``, or two lines that each use the other's adjoint, would be right.
"""

from __future__ import annotations

import ast
import itertools
import re
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from fractions import Fraction
from itertools import combinations

import sympy
from sympy import Expr

from . import symbolic as sb
from .budget import BudgetExpired, TimeBudget, can_interrupt
from .derive import MAX_EXPANDED_SIZE, TooLarge, _expand, build_derivation, reevaluate, sum_to
from .errors import BackstepError, DomainError, ParseError, UsageError
from .lookalike import lookalike_note, unknown_name_message
from .ops import OPS, Ctx
from .parser import Limits, deep_recursion, parse, parse_expression
from .printing import to_lang, to_text
from .shapes import ShapeEnv, ShapeMismatch, concrete, fmt_shape_plain, free_sizes
from .util import reachable

RTOL, ATOL = 1e-7, 1e-9
MAX_DRAWS = 200
MAX_CANDIDATES = 400
DEFAULT_BUDGET = 2.0  # seconds SymPy may spend proving one claim equal to the truth
# The sizes a claim is checked at: one array (a variable, an intermediate, a value a claim builds)
# may have at most MAX_ELEMENTS numbers, and the formula's arrays MAX_BYTES together (float64), so
# that one line of a batch (`"shapes": {"X": [9000, 9000]}`) cannot take the grader's memory.
MAX_ELEMENTS = 10**7
MAX_BYTES = 2**30
# A second set of sizes, each different from the first set's size of the same dimension, so that a
# factor such as 1/n (a mean) can be told from a constant.
SIZES_B = [3, 4, 7, 5, 6, 2, 9, 8, 11, 13, 10, 14, 12, 16, 17, 18, 19]
# Names a loss goes by in dL/dx: the output's own name, or these.
LOSS_NAMES = ("L", "loss", "J", "E", "ℓ")

MISTAKE_KINDS = {
    "transposed": "the whole result is transposed",
    "missing_transpose": "a missing transpose on one operand",
    "extra_transpose": "an extra transpose",
    "swapped_product": "a matrix product in the wrong order",
    "wrong_axis": "a sum or mean over the wrong axis",
    "missing_broadcast_sum": "a forgotten sum over a broadcast axis",
    "sign": "a sign error",
    "constant_factor": "a constant factor (e.g. the 2 of a square)",
    "mean_instead_of_sum": "a mean where the gradient sums (an extra 1/n)",
    "sum_instead_of_mean": "a missing 1/n of a mean",
    "missing_chain_factor": "a missing chain-rule factor (an inner derivative)",
    "extra_chain_factor": "a chain-rule factor applied twice",
    "missing_chain_term": "a missing term of the multivariable chain rule",
    "symmetric_part": "A where A + Aᵀ belongs",
}


# --- spellings of adjoints ---------------------------------------------------------------------


def adjoint_spellings(name: str, output: str) -> list[str]:
    """The identifiers that mean ∂L/∂name in a claim or a derivation file.

    ``grad_H``, ``H_grad``, ``H_bar``, ``H̄`` (a combining macron), ``dH``, ``dL_dH``,
    ``d<output>_d<H>``, ``delta_H``; ``dL/dH`` and ``∂L/∂H`` are rewritten to ``grad_H`` before parsing.
    """
    spellings = [
        f"grad_{name}",
        f"{name}_grad",
        f"{name}_bar",
        unicodedata.normalize("NFKC", name + "\u0304"),
        f"d{name}",
        f"dL_d{name}",
        f"d{output}_d{name}",
        f"delta_{name}",
    ]
    return list(dict.fromkeys(s for s in spellings if s.isidentifier()))


_FRACTION = re.compile(r"(?<![\w.])[d∂]\s*([^\W\d]\w*)\s*/\s*[d∂]\s*([^\W\d]\w*)")
# Left sides that can only mean an adjoint: grad_P, P_bar, P_grad, dL_dP (P then must be a node).
_ADJOINT_LIKE = re.compile(r"grad_(\w+)|(\w+?)_bar|(\w+?)_grad|dL_d(\w+)")


# --- claims as terms ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """A parsed claim as an immutable tree, so that candidate fixes can rebuild it."""

    kind: str  # "var", "const" or "op"
    name: str | None = None  # a var: the name as written
    value: object = None  # a const: a SymPy number or dimension
    op: str | None = None
    params: tuple = ()
    args: tuple = ()
    text: str | None = field(default=None, compare=False)  # the source text, where known

    def show(self) -> str:
        if self.text:
            return self.text
        if self.kind == "var":
            return self.name
        if self.kind == "const":
            return to_lang(self.value)
        if self.op == "transpose":
            return _wrap(self.args[0].show()) + ".T"
        if self.op == "matmul":
            return f"{_wrap(self.args[0].show())} @ {_wrap(self.args[1].show())}"
        inner = ", ".join([a.show() for a in self.args] + [f"{k}={v}" for k, v in self.params if v is not None])
        return f"{OPS[self.op].syntax}({inner})"


def _wrap(text: str) -> str:
    """Parentheses around a snippet unless it is a name, a call or an attribute."""
    try:
        body = ast.parse(text, mode="eval").body
    except SyntaxError:
        return f"({text})"
    return text if isinstance(body, (ast.Name, ast.Call, ast.Attribute, ast.Constant)) else f"({text})"


def _term_of(node, lines: list[str], memo: dict) -> Term:
    if node.id in memo:
        return memo[node.id]
    text = None
    place = node.place
    if place is not None and place.end_col is not None and 1 <= place.line <= len(lines):
        text = lines[place.line - 1][place.col - 1 : place.end_col - 1] or None
    if node.kind == "var":
        term = Term("var", name=node.name, text=node.name)
    elif node.kind == "const":
        term = Term("const", value=node.value, text=text)
    else:
        args = tuple(_term_of(a, lines, memo) for a in node.inputs)
        term = Term("op", op=node.op.name, params=tuple(sorted(node.params.items())), args=args, text=text)
    memo[node.id] = term
    return term


def _replace_at(root: Term, path: tuple, new: Term) -> Term:
    if not path:
        return new
    args = list(root.args)
    args[path[0]] = _replace_at(args[path[0]], path[1:], new)
    return replace(root, args=tuple(args), text=None)


def _transposed(t: Term) -> Term:
    """tᵀ, written without a double transpose."""
    if t.kind == "op" and t.op == "transpose":
        return t.args[0]
    return Term("op", op="transpose", args=(t,))


def _walk(root: Term, path: tuple = ()) -> Iterator[tuple[tuple, Term]]:
    """Every subterm with its path, innermost first (so that a fix names the smallest part)."""
    for i, a in enumerate(root.args):
        yield from _walk(a, path + (i,))
    yield path, root


class _RigidEnv(ShapeEnv):
    """Shape unification where two different dimension names never become one (d ≠ h)."""

    def unify(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb and ra not in self.fresh_dims and rb not in self.fresh_dims:
            raise ShapeMismatch(f"{ra} != {rb}")
        return super().unify(a, b)


class ClaimShapeError(Exception):
    def __init__(self, term: Term, message: str):
        super().__init__(message)
        self.term = term
        self.message = message


def infer_shapes(root: Term, shape_of: dict[str, tuple]) -> dict[Term, tuple]:
    """The shape of every subterm, with the formula's dimensions held fixed."""
    env = _RigidEnv()
    memo: dict[Term, tuple] = {}
    stack = [(root, False)]
    while stack:
        t, ready = stack.pop()
        if t in memo:
            continue
        if t.kind == "var":
            memo[t] = tuple(shape_of[t.name])
        elif t.kind == "const":
            memo[t] = ()
        elif not ready:
            stack.append((t, True))
            stack.extend((a, False) for a in t.args)
        else:
            ins = [memo[a] for a in t.args]
            try:
                memo[t] = env.resolve(OPS[t.op].shape(env, ins, dict(t.params)))
            except ShapeMismatch as err:
                raise ClaimShapeError(t, str(err)) from None
    return memo


def term_to_sympy(root: Term, shapes: dict[Term, tuple], name_of: dict[str, str] | None = None) -> Expr:
    """The SymPy expression of a shaped term; `name_of` maps written names to canonical symbols."""
    memo: dict[Term, Expr] = {}
    stack = [(root, False)]
    while stack:
        t, ready = stack.pop()
        if t in memo:
            continue
        if t.kind == "var":
            memo[t] = sb.var(name_of.get(t.name, t.name) if name_of else t.name)
        elif t.kind == "const":
            memo[t] = t.value
        elif not ready:
            stack.append((t, True))
            stack.extend((a, False) for a in t.args)
        else:
            memo[t] = OPS[t.op].sympy([memo[a] for a in t.args], [shapes[a] for a in t.args], dict(t.params))
    return memo[root]


def broadcasts_to(have: tuple, want: tuple) -> bool:
    if len(have) > len(want):
        return False
    return all(h == 1 or h == w for h, w in zip(reversed(have), reversed(want)))


def broadcast_sum_axes(have: tuple, want: tuple) -> list[int] | None:
    """The axes of `have` a sum must remove (or keep as 1) to give `want`; None if no sum does."""
    if len(have) < len(want):
        return None
    lead = len(have) - len(want)
    axes = list(range(lead))
    for k, (h, w) in enumerate(zip(have[lead:], want)):
        if h == w:
            continue
        if w == 1:
            axes.append(lead + k)
        else:
            return None
    return axes or None


# --- numbers -----------------------------------------------------------------------------------


@dataclass
class Point:
    """One random point: the sizes, every symbol's value (forward and backward), autograd's adjoints."""

    sizes: dict[str, int]
    env: dict  # symbol name -> tensor: variables, seed, forward values, backward steps
    truth: dict  # node name -> the adjoint torch autograd gives
    leaves: dict  # variable name -> value (for showing a counterexample)


def _torch():
    from .numeric import torch_module

    return torch_module()


def _close(torch, a, b) -> bool:
    if a.shape != b.shape:
        try:
            a = torch.broadcast_to(a, b.shape)
        except RuntimeError:
            return False
    if not bool(torch.isfinite(a).all()):
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL * max(1.0, scale)))


# --- symbolic proof ----------------------------------------------------------------------------


_LINEAR = (sb.TransposeOp, sb.SumOp, sb.MeanOp, sb.UnsqueezeOp)
_BILINEAR = (sb.MatrixProduct, sb.OuterProduct)


def _scalar_factor(f: Expr) -> bool:
    return f.is_number or (not f.atoms(sb.TensorOp) and all(isinstance(s, sb.Dim) for s in f.free_symbols))


def _split(x: Expr) -> list[tuple[Expr, Expr]]:
    """x = Σ c·t with scalar constants c (numbers, dimensions)."""
    out = []
    for term in sympy.Add.make_args(sympy.expand(x)):
        scalars, rest = [], []
        for f in sympy.Mul.make_args(term):
            (scalars if _scalar_factor(f) else rest).append(f)
        out.append((sympy.Mul(*scalars), sympy.Mul(*rest)))
    return out


def normalize(expr: Expr, rank_of) -> Expr:
    """A canonical form for proofs: linear ops distributed over sums, constants pulled out,
    transposes pushed through elementwise operations down to the leaves, then expanded."""
    memo: dict[Expr, Expr] = {}

    def transpose(x: Expr, shape) -> Expr:
        if x.is_number or isinstance(x, sb.Dim) or (x.is_Symbol and rank_of(x) == 0):
            return x
        if (x.is_Add or x.is_Mul or x.is_Pow or (x.is_Function and not isinstance(x, sb.TensorOp))) and x.args:
            return x.func(*[transpose(a, shape) for a in x.args])
        return sb.TransposeOp(x, shape)

    def matmul(a: Expr, b: Expr, sa, sb_) -> Expr:
        """(A B) C -> A (B C): products associated to the right, when A B has the operand's own shape."""
        if isinstance(a, sb.MatrixProduct) and len(sb_.args) >= 1:
            a1, a2 = a.operands
            s1, s2 = a.args[2], a.args[3]
            if len(s1.args) >= 1 and len(s2.args) >= 1 and tuple(s1.args[:-1]) + tuple(s2.args[1:]) == tuple(sa.args):
                inner_shape = sympy.Tuple(*(tuple(s2.args[:-1]) + tuple(sb_.args[1:])))
                return matmul(a1, matmul(a2, b, s2, sb_), s1, inner_shape)
        return sb.MatrixProduct(a, b, sa, sb_)

    def rebuild(e: Expr) -> Expr:
        if isinstance(e, sb.TensorOp):
            n = e.n_operands
            ops = [norm(a) for a in e.operands]
            rest = e.args[n:]
            if "axis" in e.param_names and len(rest) > len(e.param_names):  # axis=-1 is axis=rank-1
                k = e.param_names.index("axis")
                raw, rank = rest[k], len(rest[len(e.param_names)].args)
                if isinstance(raw, sympy.Tuple) and raw.args and raw.args[0].is_Integer and raw.args[0] < 0 and rank:
                    rest = rest[:k] + (sympy.Tuple(sympy.Integer(int(raw.args[0]) % rank)),) + rest[k + 1 :]
                    if not isinstance(e, (*_LINEAR, *_BILINEAR)):
                        return e.func(*ops, *rest)
            if isinstance(e, sb.TransposeOp) and len(rest[-1].args) == 2:
                return sympy.Add(*[c * transpose(t, rest[-1]) for c, t in _split(ops[0])])
            if isinstance(e, sb.MeanOp):  # mean = sum / size
                shape = rest[-1].args
                axis = e.params.get("axis")
                count = sympy.Mul(*(shape if axis is None else [shape[axis % len(shape)]]))
                return sympy.Add(*[c / count * sb.SumOp(t, *rest) for c, t in _split(ops[0])])
            if isinstance(e, _LINEAR):
                return sympy.Add(*[c * e.func(t, *rest) for c, t in _split(ops[0])])
            if isinstance(e, sb.MatrixProduct):
                sa, sb_ = rest
                return sympy.Add(
                    *[ca * cb * matmul(ta, tb, sa, sb_) for ca, ta in _split(ops[0]) for cb, tb in _split(ops[1])]
                )
            if isinstance(e, _BILINEAR):
                return sympy.Add(
                    *[ca * cb * e.func(ta, tb, *rest) for ca, ta in _split(ops[0]) for cb, tb in _split(ops[1])]
                )
            return e.func(*ops, *rest)
        if not e.args:
            return e
        return e.func(*[norm(a) for a in e.args])

    def norm(e: Expr) -> Expr:
        if e not in memo:
            memo[e] = rebuild(e)
        return memo[e]

    return sympy.expand(norm(expr))


def _simplify(expr: Expr) -> Expr:
    # σ(a) = 1 / (1 + e^(-a)), so that a claim written with exponentials can be proved.
    return sympy.simplify(expr.replace(sb.Sigmoid, lambda a: 1 / (1 + sympy.exp(-a))))


def _collapse(expr: Expr) -> Expr:
    """Products that share an operand gathered again, A B + A C = A (B + C), and the gathered
    operand simplified: SymPy's simplify does not know that a matrix product is bilinear."""
    for side in (0, 1):
        groups: dict = {}
        rest = []
        for term in sympy.Add.make_args(expr):
            c, f = term.as_coeff_Mul()
            if isinstance(f, _BILINEAR):
                key = (f.func, f.operands[side], f.args[2:])
                groups.setdefault(key, []).append(c * f.operands[1 - side])
            else:
                rest.append(term)
        out = list(rest)
        for (func, shared, tail), others in groups.items():
            inner = _simplify(sympy.Add(*others))
            if inner != 0:
                out.append(func(*([shared, inner] if side == 0 else [inner, shared]), *tail))
        expr = sympy.Add(*out)
    return _simplify(expr)


# --- results -----------------------------------------------------------------------------------


@dataclass
class Mistake:
    kind: str
    message: str
    fix: str | None = None  # the corrected claim, in the input language


@dataclass
class Result:
    verdict: str  # right, wrong, error
    reason: str
    target: str = ""  # ∂L/∂W1
    claim: str = ""
    mistake: Mistake | None = None
    expected: str | None = None  # the true gradient, input language
    expected_text: str | None = None  # … as the terminal prints it
    claim_shape: tuple | None = None
    expected_shape: tuple | None = None
    proof: str | None = None  # symbolic or numeric (right claims)
    points: int = 0
    sizes: list = field(default_factory=list)
    counterexample: dict | None = None
    # derivation files
    line: int | None = None
    written: str | None = None
    step: str | None = None
    node: str | None = None  # the node whose adjoint (or value) the line gives
    timed_out: bool = False  # stands for the lines not checked when a submission's time ran out

    @property
    def exit_code(self) -> int:
        return {"right": 0, "wrong": 1}.get(self.verdict, 2)

    def to_dict(self) -> dict:
        return {
            "verdict": self.verdict,
            "reason": self.reason,
            "mistake": self.mistake.message if self.mistake else None,
            "mistake_kind": self.mistake.kind if self.mistake else None,
            "fix": self.mistake.fix if self.mistake else None,
            "target": self.target,
            "claim": self.claim,
            "expected": self.expected,
            "expected_text": self.expected_text,
            "claim_shape": list(self.claim_shape) if self.claim_shape is not None else None,
            "expected_shape": list(self.expected_shape) if self.expected_shape is not None else None,
            "proof": self.proof,
            "points": self.points,
            "sizes": self.sizes,
            "counterexample": self.counterexample,
        }


@dataclass
class Target:
    """What a claim is about: the adjoint of a node (a variable or an intermediate), or its value."""

    node: str
    kind: str  # adjoint, forward
    shape: tuple
    symbol: str  # the canonical symbol whose value is the truth
    label: str  # ∂L/∂W1, or H for a forward line


@dataclass
class Helper:
    """A name a student defines in a derivation file that is not an adjoint (mask = step(Z))."""

    name: str
    expr: Expr
    shape: tuple


@dataclass
class Scope:
    """The names a claim may use: the formula's, and those a derivation file adds."""

    name_of: dict[str, str]  # a written name -> its canonical symbol
    shape_of: dict[str, tuple]  # a written name -> its shape
    spelled_node: dict[str, str]  # a spelling of an adjoint (grad_H, H_bar, …) -> the node
    node_of: dict[str, str]  # a plain name (for dL/dH) -> the node
    helpers: list[Helper] = field(default_factory=list)
    # per point, the values of the helpers evaluated so far (helpers are only ever appended)
    env_cache: dict = field(default_factory=dict, repr=False, compare=False)
    _ascii_seen: int = field(default=0, repr=False, compare=False)
    _non_ascii: bool = field(default=False, repr=False, compare=False)

    def copy(self) -> Scope:
        return Scope(
            dict(self.name_of), dict(self.shape_of), dict(self.spelled_node), dict(self.node_of), list(self.helpers)
        )

    def add_helper(self, helper: Helper) -> None:
        self.name_of[helper.name] = helper.name
        self.shape_of[helper.name] = helper.shape
        self.helpers.append(helper)

    def has_non_ascii_name(self) -> bool:
        """Whether a name here is not ASCII (a look-alike hint is possible); each name looked at once."""
        if not self._non_ascii and self._ascii_seen < len(self.shape_of):
            names = list(self.shape_of)[self._ascii_seen :]
            self._non_ascii = not all(name.isascii() for name in names)
            self._ascii_seen = len(self.shape_of)
        return self._non_ascii


# --- the problem -------------------------------------------------------------------------------


class Problem:
    """One formula, derived once, with its random points; many claims are checked against it."""

    def __init__(
        self,
        source: str,
        shapes: dict[str, tuple] | None = None,
        wrt: list[str] | str | None = None,
        assume: dict[str, str] | None = None,
        *,
        points: int = 3,
        seed: int = 0,
        budget: float = DEFAULT_BUDGET,
        limits: Limits | None = None,
        max_elements: int | None = MAX_ELEMENTS,
        max_bytes: int | None = MAX_BYTES,
    ):
        if isinstance(wrt, str):
            wrt = [w.strip() for w in wrt.split(",") if w.strip()]
        self.source = source
        self.points_per_set = points
        self.seed = seed
        self.budget = budget
        with deep_recursion():
            graph = parse(source, shapes or {}, limits)
            var_names = [v.name for v in graph.variables]
            node_names = {n.name for n in graph.nodes}
            for w in wrt or []:
                if w not in node_names:
                    then = f", which is not a name of the formula (its variables: {', '.join(var_names)})"
                    raise UsageError(unknown_name_message("--wrt names", w, var_names, then=then))
            wrt_vars = list(wrt) if wrt and all(w in var_names for w in wrt) else None
            self.derivation = d = build_derivation(graph, wrt_vars, assume or {})
        self.graph = graph
        from .render.common import Notation

        self.notation = Notation(d)
        self.node_shape = {n.name: tuple(n.shape) for n in graph.nodes}
        self.adjoint = {d.output: d.seed.name}  # node -> canonical symbol of its adjoint
        for s in d.backward:
            if s.kind == "sum" or s.partial is None:
                self.adjoint[s.of] = s.target
        # Written names -> canonical symbols, and each symbol's shape.
        scope = self.base_scope = Scope({}, {}, {symbol: node for node, symbol in self.adjoint.items()}, {})
        for v in d.variables:
            scope.name_of[v.name] = v.name
            scope.shape_of[v.name] = tuple(v.shape)
            scope.node_of[v.name] = v.name
        for f in d.forward:
            scope.name_of[f.name] = f.name
            scope.shape_of[f.name] = tuple(f.shape)
            scope.node_of[f.name] = f.name
        for node, symbol in self.adjoint.items():
            scope.name_of[symbol] = symbol
            scope.shape_of[symbol] = self.node_shape[node]
        for node in self.adjoint:
            self.add_spellings(scope, node, node)
        self._dim_carrier: dict[str, str] = {}  # a dimension name -> a name whose shape has it
        for name, shape in scope.shape_of.items():
            for dim in shape:
                if isinstance(dim, str):
                    self._dim_carrier.setdefault(dim, name)
        self.forward_names = {f.name for f in d.forward}
        self.has_square = any(
            n.op.name == "pow" and n.inputs[1].is_const and n.inputs[1].value == 2 for n in graph.op_nodes
        )
        # Definitions of every name, for symbolic proofs.
        self.defs: dict[Expr, Expr] = {}
        for f in d.forward:
            self.defs[sb.var(f.name)] = reevaluate(f.expr)
        for s in d.backward:
            self.defs[sb.var(s.target)] = s.result
        if d.seed.is_one:
            self.defs[sb.var(d.seed.name)] = sympy.Integer(1)
        self.adjoint_node = {symbol: node for node, symbol in self.adjoint.items()}
        self._inputs_of = {n.name: [a.name for a in n.inputs if not a.is_const] for n in graph.nodes}
        self._users_of: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
        for n in graph.nodes:
            for a in self._inputs_of[n.name]:
                self._users_of[a].append(n.name)
        self._relatives: dict[str, tuple[set[str], set[str]]] = {}
        self._expand_memo: dict = {}
        self._points: list[Point] | None = None
        self._sites = None
        self._local_defs: dict | None = None
        ints = {x for shape in self.node_shape.values() for x in shape if isinstance(x, int)}
        # distinct sizes for any number of dimensions (zip stops at the last dimension)
        free_a = free_sizes(ints)
        extra_b = (s for s in itertools.count(20) if s not in ints)
        free_b = itertools.chain((s for s in SIZES_B if s not in ints), extra_b)
        self.size_sets = [dict(zip(d.dims, free_a))]
        if d.dims:
            self.size_sets.append(dict(zip(d.dims, free_b)))
        self.max_elements = max_elements
        self._check_sizes(max_elements, max_bytes)

    def _check_sizes(self, max_elements: int | None, max_bytes: int | None) -> None:
        """Refuse (UsageError), before any number is drawn, a formula whose arrays are too big."""
        nodes = [n for n in self.graph.nodes if n.kind != "const"]
        for sizes in self.size_sets:
            total = 0
            for n in nodes:
                count = _elements(n.shape, sizes)
                if max_elements is not None and count > max_elements:
                    raise UsageError(
                        f"{n.name} would have {count:,} elements ({_times(n.shape, sizes)}); the limit is "
                        f"{max_elements:,} per array: give smaller sizes (the gradient's form does not depend on "
                        "them; a dimension name such as n is checked at small sizes)"
                    )
                total += count
            if max_bytes is not None and 8 * total > max_bytes:
                raise UsageError(
                    f"the formula's arrays would take {8 * total / 2**30:.1f} GiB in float64 ({total:,} numbers); "
                    f"the limit is {max_bytes / 2**30:g} GiB: give smaller sizes (a dimension name such as n is "
                    "checked at small sizes)"
                )

    # --- names and targets ---------------------------------------------------------------------

    def scope(self) -> Scope:
        """A fresh copy of the formula's names, for one claim or one derivation file."""
        return self.base_scope.copy()

    def add_spellings(self, scope: Scope, name: str, node: str) -> None:
        """Let `name` (the node's own name, or a student's name for it) spell the node's adjoint."""
        if node not in self.adjoint:
            return
        symbol = self.adjoint[node]
        for spelling in adjoint_spellings(name, self.derivation.output):
            if spelling not in scope.name_of and spelling not in self.derivation.dims:
                scope.name_of[spelling] = symbol
                scope.shape_of[spelling] = self.node_shape[node]
                scope.spelled_node[spelling] = node

    def alias(self, scope: Scope, name: str, node: str) -> None:
        """A student's own name for a node of the formula (Z = X @ W1 names v1)."""
        scope.name_of[name] = node
        scope.shape_of[name] = self.node_shape[node]
        scope.node_of[name] = node
        self.add_spellings(scope, name, node)

    def rewrite(self, text: str, scope: Scope) -> str:
        """dL/dH and ∂L/∂H -> the canonical adjoint symbol of H."""
        numerators = {self.derivation.output, *LOSS_NAMES}

        def sub(m: re.Match) -> str:
            num, den = m.group(1), m.group(2)
            if num not in numerators or (f"d{num}" in scope.name_of and f"d{num}" not in scope.spelled_node):
                return m.group(0)  # a true division, or not a derivative of the loss
            node = scope.node_of.get(den)
            if node not in self.adjoint:
                if node is not None:
                    raise ParseError(f"{m.group(0)}: {den} needs no gradient here")
                raise ParseError(
                    unknown_name_message(f"{m.group(0)}:", den, scope.node_of, then=" is not a node of the formula")
                )
            return self.adjoint[node]

        return _FRACTION.sub(sub, text)

    def target(self, name: str) -> Target:
        """The adjoint of a variable or an intermediate, by its plain name."""
        if name not in self.adjoint:
            if name in self.node_shape:
                raise UsageError(f"{name} needs no gradient here (it does not depend on a variable in --wrt)")
            names = [v.name for v in self.derivation.variables]
            then = f", which is not a name of the formula (its variables: {', '.join(names)})"
            raise UsageError(unknown_name_message("--wrt names", name, names, then=then))
        return Target(name, "adjoint", self.node_shape[name], self.adjoint[name], self.label(name))

    def label(self, node: str, ascii_only: bool = False) -> str:
        """∂L/∂W1, or ∂L/∂(X @ W1) for a node the formula did not name."""
        text = self.node_text(node)
        text = text if text.isidentifier() else f"({text})"
        loss = self.notation.loss_name()
        return f"d{loss}/d{text}" if ascii_only else f"∂{loss}/∂{text}"

    def relatives(self, node: str) -> tuple[set[str], set[str]]:
        """(the nodes `node` is computed from, the nodes computed from it), by name; per node on
        demand, since all of them at once would be quadratic in a long chain."""
        if node not in self._relatives:
            self._relatives[node] = (_reach(node, self._inputs_of), _reach(node, self._users_of))
        return self._relatives[node]

    def circular(self, target: Target, term: Term, scope: Scope) -> str | None:
        """Why a claim may not use something it uses, or None.

        Every adjoint a claim uses is bound to its true value, so a claim for ∂L/∂T may use only
        what the true backward pass has before ∂L/∂T and computes it from: the forward values, the
        seed, and the adjoints of the nodes computed from T. Its own adjoint would make
        `grad_W1 = grad_W1` right, an upstream one (computed from ∂L/∂T) a cycle of two lines, and
        one of another path a pair of lines that vouch for each other. A forward line for T may use
        the variables and the values T is computed from."""
        upstream, downstream = self.relatives(target.node)
        reasons = []  # (how bad, why): the claim's own quantity is named first
        for symbol in self._symbols_used(term, scope):
            node = self.adjoint_node.get(symbol)
            if target.kind == "forward":
                if node is not None:
                    why = f"the line uses {self.label(node)}, a gradient: a forward value comes before any gradient"
                    reasons.append((2, why))
                elif symbol == target.node:
                    reasons.append((0, f"circular: the line uses {symbol}, the value it claims"))
                elif symbol in downstream:
                    reasons.append((1, f"circular: the line uses {symbol}, which is computed from {target.node}"))
                elif symbol in self.forward_names and symbol not in upstream:
                    reasons.append((2, f"the line uses {symbol}, which {target.node} is not computed from"))
                continue
            if node is None or node == self.derivation.output or node in downstream:
                continue  # a forward value, the seed, or an adjoint ∂L/∂T is computed from
            used = self.label(node)
            if node == target.node:
                reasons.append((0, f"circular: the claim uses {used}, the gradient it claims"))
            elif node in upstream:
                reasons.append((1, f"circular: the claim uses {used}, which is computed from {target.label}"))
            else:
                why = (
                    f"the claim uses {used}, which is not available for {target.label}: a claim may use the seed "
                    f"and the adjoints of the nodes computed from {self.node_text(target.node)}"
                )
                reasons.append((2, why))
        return min(reasons, key=lambda r: r[0])[1] if reasons else None

    def _symbols_used(self, term: Term, scope: Scope) -> list[str]:
        """The canonical symbols a claim's value depends on, through the student's own names too."""
        helpers = {h.name: h.expr for h in scope.helpers}
        written = [t.name for _, t in _walk(term) if t.kind == "var"]
        todo = [scope.name_of.get(name, name) for name in written]
        seen: dict[str, None] = {}
        while todo:
            symbol = todo.pop(0)
            if symbol in seen:
                continue
            seen[symbol] = None
            if symbol in helpers:
                todo += sorted(s.name for s in helpers[symbol].free_symbols if not isinstance(s, sb.Dim))
        return list(seen)

    def resolve_lhs(self, lhs: str, scope: Scope) -> tuple[str, str | None]:
        """A derivation line's left side -> ("adjoint", node), ("forward", node), ("alias", node)
        (a student's own name for a node) or ("helper", None)."""
        text = unicodedata.normalize("NFKC", lhs.strip())
        text = self.rewrite(text, scope).strip()
        if text in scope.spelled_node:
            return "adjoint", scope.spelled_node[text]
        if text in self.forward_names:
            return "forward", text
        if text in scope.node_of and text not in self.node_shape:
            return "alias", scope.node_of[text]
        m = _FRACTION.fullmatch(text) or _ADJOINT_LIKE.fullmatch(text)
        if m:
            then = " is not a node of the formula (use the formula's names, or define it first, e.g. Z = X @ W1)"
            raise ParseError(unknown_name_message(f"{lhs.strip()}:", m.group(m.lastindex), scope.node_of, then=then))
        if text.isidentifier() and text not in scope.name_of and text not in self.derivation.dims:
            return "helper", None
        if text in scope.name_of:
            raise ParseError(f"{lhs.strip()} is an input of the formula; a line cannot redefine it")
        raise ParseError(f"{lhs.strip()} is not a name this line can define (write dL/dH = ..., grad_W1 = ...)")

    # --- points --------------------------------------------------------------------------------

    @property
    def points(self) -> list[Point]:
        if self._points is None:
            torch = _torch()
            generator = torch.Generator().manual_seed(self.seed)
            pts = []
            for k, sizes in enumerate(self.size_sets):
                count = self.points_per_set if k == 0 else max(1, self.points_per_set - 1)
                pts += [self.make_point(sizes, generator) for _ in range(count)]
            self._points = pts
        return self._points

    def make_point(self, sizes: dict[str, int], generator, rounded: bool = False) -> Point:
        """Leaves inside their domains (redrawn until every op's input is), and a truth that is finite."""
        bad = None
        for attempt in range(MAX_DRAWS):
            point, bad = self._try_point(sizes, generator, rounded and attempt < MAX_DRAWS // 2)
            if point is not None:
                return point
        raise DomainError(f"could not draw a point inside every function's domain in {MAX_DRAWS} tries: {bad}")

    def _try_point(self, sizes: dict[str, int], generator, rounded: bool) -> tuple[Point | None, str | None]:
        from .numeric import Evaluator, draw
        from .verify import _run

        torch = _torch()
        d, graph = self.derivation, self.graph
        leaves = {}
        for v in d.variables:
            value = draw(torch, generator, concrete(v.shape, sizes), v.domain)
            if rounded:
                value = torch.round(value * 10) / 10
            leaves[v.name] = value.requires_grad_(v.requires_grad)
        nodes, bad = _run(torch, graph, leaves, sizes)
        if bad is not None:
            return None, bad
        if d.seed.is_one:
            seed_value = torch.ones((), dtype=torch.float64)
        else:
            seed_value = draw(torch, generator, concrete(d.seed.shape, sizes), "real")
            if rounded:
                seed_value = torch.round(seed_value * 10) / 10
        out = nodes[graph.output.id]
        if not bool(torch.isfinite(out).all()):
            return None, "the formula's value is not finite there (it overflows)"
        if out.requires_grad:
            out.backward(gradient=seed_value)
        truth = {}
        for n in graph.nodes:
            if n.name in self.adjoint:
                t = nodes[n.id]
                truth[n.name] = (
                    seed_value.expand(t.shape)
                    if n is graph.output
                    else (t.grad.detach() if t.grad is not None else torch.zeros_like(t.detach()))
                )
                if not bool(torch.isfinite(truth[n.name]).all()):
                    return None, f"the gradient of {n.name} is not finite there (it overflows)"
        env = {name: t.detach() for name, t in leaves.items()}
        env[d.seed.name] = seed_value
        evaluator = Evaluator(env, sizes)
        for step in d.forward:
            env[step.name] = evaluator(step.expr)
        for step in d.backward:
            shape = concrete(d.symbols.table[step.target].shape, sizes)
            env[step.target] = torch.broadcast_to(evaluator(step.result), shape)
        return Point(sizes, env, truth, {k: v.detach() for k, v in leaves.items()}), None

    def truth_value(self, point: Point, target: Target):
        torch = _torch()
        shape = concrete(target.shape, point.sizes)
        if target.kind == "adjoint":
            return point.truth[target.node]
        return torch.broadcast_to(point.env[target.node], shape)

    def truth_expr(self, target: Target) -> Expr:
        """The truth as a SymPy expression over named intermediates and adjoints (the derivation's step)."""
        symbol = sb.var(target.symbol)
        if target.kind == "forward":
            return self.defs[symbol]
        expr = self.defs.get(symbol, symbol)
        partials = {sb.var(s.target): s.result for s in self.derivation.backward if s.partial is not None}
        return expr.xreplace(partials) if partials else expr

    def node_text(self, node: str) -> str:
        """A node of the formula as a person reads it: its name if they chose it, else its expression."""
        n = next(x for x in self.graph.nodes if x.name == node)
        if n.user_named:
            return node
        return to_lang(self.local(self.defs[sb.var(node)]))

    def local(self, expr: Expr) -> Expr:
        """An expression in terms of the names a person chose (H, grad_H, grad_y): the formula's
        automatic names (v1, grad_v1) and partial contributions are replaced by their definitions."""
        if self._local_defs is None:
            user = {n.name for n in self.graph.nodes if n.user_named or n is self.graph.output}
            keep = user | {self.adjoint[n] for n in user if n in self.adjoint}
            if self.derivation.seed.is_one:
                keep.discard(self.derivation.seed.name)
            self._local_defs = {k: v for k, v in self.defs.items() if k.name not in keep}
        try:
            with deep_recursion():
                return _expand(expr, self._local_defs, {}, MAX_EXPANDED_SIZE)
        except TooLarge:
            return expr

    def truth_local(self, target: Target) -> Expr:
        return self.local(self.truth_expr(target))

    def truth_in_inputs(self, target: Target) -> Expr | None:
        if target.kind == "adjoint" and target.node in self.derivation.gradients:
            g = self.derivation.gradients[target.node]
            if g.in_inputs:
                return g.expr
        return self.expand(sb.var(target.symbol))

    def expand(self, expr: Expr, extra: dict | None = None) -> Expr | None:
        defs = self.defs if not extra else {**self.defs, **extra}
        memo = self._expand_memo if not extra else {}
        try:
            with deep_recursion():
                return _expand(expr, defs, memo, MAX_EXPANDED_SIZE)
        except TooLarge:
            return None

    def env_with(self, point: Point, helpers: list[Helper], cache: dict | None = None) -> dict:
        """The point's values with the student's helpers evaluated. With `cache` (a scope's
        env_cache) a helper is evaluated once per point, not once per line that follows it."""
        if not helpers:
            return point.env
        from .numeric import Evaluator

        torch = _torch()
        done, env = 0, None
        if cache is not None and id(point) in cache:
            kept, done, env = cache[id(point)]
            if kept is not point or done > len(helpers):
                done, env = 0, None
        env = dict(point.env) if env is None else env
        for h in helpers[done:]:
            env[h.name] = torch.broadcast_to(Evaluator(env, point.sizes)(h.expr), concrete(h.shape, point.sizes))
        if cache is not None:
            cache[id(point)] = (point, len(helpers), env)
        return env

    def sizes_text(self) -> list[dict]:
        return [dict(s) for s in self.size_sets]

    # --- the chain-rule sites of the derivation ----------------------------------------------

    def sites(self) -> list[tuple]:
        """(step, node, input index) of every rule step, and each sum step (step, None, None)."""
        if self._sites is not None:
            return self._sites
        by_name = {n.name: n for n in self.graph.op_nodes}
        seen: dict[tuple[str, str], int] = {}
        out = []
        for s in self.derivation.backward:
            if s.kind == "sum":
                out.append((s, None, None))
                continue
            node = by_name.get(s.node)
            if node is None:
                continue
            matches = [i for i, a in enumerate(node.inputs) if not a.is_const and a.name == s.of]
            k = seen.get((s.node, s.of), 0)
            seen[(s.node, s.of)] = k + 1
            # The sweep visits a node's inputs last to first.
            matches.reverse()
            if k < len(matches):
                out.append((s, node, matches[k]))
        self._sites = out
        return out

    def local_factor(self, node, i: int) -> Expr | None:
        """f such that this rule is ā = ȳ ⊙ f (an elementwise op's inner derivative), else None."""
        op = node.op
        if not op.elementwise or op.name in ("add", "sub", "neg"):
            return None
        args = tuple(a.value if a.is_const else sb.var(a.name) for a in node.inputs)
        shapes = tuple(a.shape for a in node.inputs)
        g = sympy.Symbol("_g", real=True)
        try:
            rule = op.backward[i](Ctx(g, args, sb.var(node.name), shapes, node.shape, node.params))
            factor = op.backward[i](Ctx(sympy.Integer(1), args, sb.var(node.name), shapes, node.shape, node.params))
        except Exception:  # an op whose rule is not of this form
            return None
        if factor.is_number or sympy.expand(rule - g * factor) != 0:
            return None
        return factor

    def rerun(self, point: Point, changed: dict[int, Expr], target: Target):
        """The target's adjoint at a point when some backward steps' results are replaced."""
        from .numeric import Evaluator

        torch = _torch()
        d = self.derivation
        first = min(changed)
        env = {k: v for k, v in point.env.items()}
        evaluator = Evaluator(env, point.sizes)
        for step in d.backward:
            if step.index < first:
                continue
            expr = changed.get(step.index, step.result)
            shape = concrete(d.symbols.table[step.target].shape, point.sizes)
            env[step.target] = torch.broadcast_to(evaluator(expr), shape)
        return torch.broadcast_to(env[target.symbol], concrete(target.shape, point.sizes))

    # --- checking a claim --------------------------------------------------------------------

    def check_claim(self, wrt: str, claim: str) -> Result:
        """Check one claim for ∂L/∂wrt."""
        target = self.target(wrt)
        scope = self.base_scope
        return self.check(target, _strip_lhs(claim, self, target, scope), scope)

    def parse_claim(self, text: str, scope: Scope) -> Term:
        source = self.rewrite(text.strip(), scope)
        with deep_recursion():
            node = self._parse(source, scope)
        return _term_of(node, source.splitlines(), {})

    def _parse(self, source: str, scope: Scope):
        """parse_expression over the names the source uses (and a name carrying each dimension it
        uses), not the whole scope: a derivation file's names grow with its length, and handing
        the parser all of them at every line made a long file quadratic. An unknown name is
        parsed again over every name when a look-alike hint ("did you mean х?") could differ."""
        shape_of = scope.shape_of
        if len(shape_of) <= 64:
            return parse_expression(source, shape_of)
        few = {}
        for token in dict.fromkeys(_IDENTIFIER.findall(unicodedata.normalize("NFKC", source))):
            if token in shape_of:
                few[token] = shape_of[token]
            elif token in self._dim_carrier:
                carrier = self._dim_carrier[token]
                few[carrier] = self.base_scope.shape_of[carrier]
        try:
            return parse_expression(source, few)
        except ParseError:
            if source.isascii() and not scope.has_non_ascii_name():
                raise
            return parse_expression(source, shape_of)

    def check(self, target: Target, claim: str, scope: Scope | None = None, local: bool = False) -> Result:
        """Check a claim against a target; `local`: show the truth in the formula's own names."""
        scope = scope or self.base_scope
        term = self.parse_claim(claim, scope)
        result = Result("wrong", "", target=target.label, claim=claim.strip(), expected_shape=target.shape)
        self._fill_expected(result, target, local)
        circular = self.circular(target, term, scope)
        if circular is not None:  # wrong whatever its value: nothing is tested (points stays 0)
            result.reason = circular
            return result
        result.sizes = self.sizes_text()
        result.points = len(self.points)
        shape_problem = None
        claim_expr = None
        try:
            shapes = infer_shapes(term, scope.shape_of)
        except ClaimShapeError as err:
            shape_problem = f"the claim does not type-check: {err.message}"
            shapes = None
        if shapes is not None:
            self._check_claim_sizes(shapes)
            result.claim_shape = shapes[term]
            if not broadcasts_to(shapes[term], target.shape):
                shape_problem = f"shape {fmt_shape_plain(shapes[term])}, expected {fmt_shape_plain(target.shape)}"
            claim_expr = term_to_sympy(term, shapes, scope.name_of)
        torch = _torch()
        envs = [self.env_with(p, scope.helpers, scope.env_cache) for p in self.points]
        truths = [self.truth_value(p, target) for p in self.points]
        values = None
        if shape_problem is None:
            values = self._values(claim_expr, envs, target)
            if isinstance(values, str):
                shape_problem = values
                values = None
        if shape_problem is None:
            bad = [i for i, (v, t) in enumerate(zip(values, truths)) if not _close(torch, v, t)]
            if not bad:
                result.verdict = "right"
                proved = self.prove(claim_expr, target, scope)
                result.proof = "symbolic" if proved else "numeric"
                how = "proved symbolically and equal" if proved else "equal"
                result.reason = f"{how} at {len(values)} random points (float64)"
                if not proved:
                    result.reason += "; SymPy could not prove it symbolically"
                return result
            nonfinite = [i for i in bad if not bool(torch.isfinite(values[i]).all())]
            if nonfinite:
                result.reason = f"the claim is not finite at {len(nonfinite)} of {len(values)} points inside the domain"
            else:
                result.reason = f"differs from {target.label} at {len(bad)} of {len(values)} points"
        else:
            result.reason = shape_problem
        ctx = _Diagnosis(self, target, term, shapes, claim_expr, values, truths, envs, scope)
        result.mistake = ctx.run()
        if result.mistake is None:
            result.reason += "; I could not name the mistake"
        if values is not None:
            result.counterexample = self.counterexample(target, claim_expr, scope)
        return result

    def _check_claim_sizes(self, shapes: dict[Term, tuple]) -> None:
        """A claim that would build an array over the limit (x.T @ x for a long x) is refused."""
        if self.max_elements is None:
            return
        for term, shape in shapes.items():
            for sizes in self.size_sets:
                count = _elements(shape, sizes)
                if count > self.max_elements:
                    raise UsageError(
                        f"the claim builds {term.show()} of {count:,} elements ({_times(shape, sizes)}); the limit "
                        f"is {self.max_elements:,} per array: give smaller sizes"
                    )

    def _values(self, expr: Expr, envs: list[dict], target: Target):
        from .numeric import Evaluator

        torch = _torch()
        out = []
        for p, env in zip(self.points, envs):
            try:
                v = Evaluator(env, p.sizes)(expr)
                v = torch.broadcast_to(v, concrete(target.shape, p.sizes))
            except (RuntimeError, TypeError, ValueError, KeyError, ArithmeticError) as err:
                return f"the claim cannot be evaluated ({err})"
            out.append(v)
        return out

    def _fill_expected(self, result: Result, target: Target, local: bool = False) -> None:
        if local or target.kind == "forward":
            expr = self.truth_local(target)
        else:
            full = self.truth_in_inputs(target)
            expr = full if full is not None else self.truth_expr(target)
        try:
            with deep_recursion():
                result.expected = to_lang(expr, self.derivation.symbols)
                result.expected_text = to_text(expr, self.derivation.symbols)
        except (TypeError, RecursionError):
            result.expected = result.expected_text = None

    # --- symbolic proof ------------------------------------------------------------------------

    def prove(self, claim_expr: Expr, target: Target, scope: Scope) -> bool:
        extra = {sb.var(h.name): h.expr for h in scope.helpers}
        claim_full = self.expand(claim_expr, extra)
        truth_full = self.expand(sb.var(target.symbol))
        if claim_full is None or truth_full is None:
            return False
        diff = claim_full - truth_full
        if diff == 0:
            return True
        table = self.derivation.symbols.table

        def rank_of(symbol) -> int:
            info = table.get(symbol.name)
            if info is not None:
                return len(info.shape)
            return len(scope.shape_of.get(symbol.name, (0, 0)))

        if self.budget <= 0 or not can_interrupt():  # no budget could stop it: numbers decide
            return False
        budget = TimeBudget(self.budget)
        try:
            with budget, deep_recursion():
                diff = normalize(diff, rank_of)
                if diff == 0:
                    return True
                return _collapse(diff) == 0
        except BudgetExpired as err:
            if err.budget is not budget:
                raise  # an outer budget (a submission's time when grading): not this proof's to end
            return False
        except (RecursionError, TypeError, ValueError, AttributeError, NotImplementedError):
            return False

    # --- a counterexample ----------------------------------------------------------------------

    def counterexample(self, target: Target, claim_expr: Expr, scope: Scope) -> dict | None:
        """A small point (small sizes, numbers with one decimal) where the claim and the truth differ."""
        from .numeric import Evaluator, to_value

        torch = _torch()
        d = self.derivation
        generator = torch.Generator().manual_seed(self.seed + 7919)
        tried = [dict.fromkeys(d.dims, 1)] + self.size_sets[:1] if d.dims else self.size_sets[:1]
        for sizes in tried:
            for _ in range(8):
                try:
                    p = self.make_point(sizes, generator, rounded=True)
                    env = self.env_with(p, scope.helpers)
                    v = torch.broadcast_to(Evaluator(env, sizes)(claim_expr), concrete(target.shape, sizes))
                except (BackstepError, RuntimeError, TypeError, ValueError, ArithmeticError):
                    continue
                t = self.truth_value(p, target)
                if _close(torch, v, t) or not bool(torch.isfinite(v).all()):
                    continue  # a point where the claim is inf or NaN shows nothing one can print or read
                values = {k: to_value(x) for k, x in p.leaves.items()}
                if not d.seed.is_one:
                    values[d.seed.name] = to_value(p.env[d.seed.name])
                return {
                    "sizes": {k: sizes[k] for k in d.dims},
                    "values": values,
                    "claim": to_value(v),
                    "expected": to_value(t),
                }
        return None

    # --- derivation files --------------------------------------------------------------------

    def check_lines(self, text: str, deadline: float | None = None, timeout: float | None = None) -> list[Result]:
        """Check a derivation file: one `name = expression` per line, in the student's own order.

        First the student's own names for forward values are identified (a line `Z = X @ W1`
        whose values equal a node's names that node, so that `dL/dZ` means its adjoint); then
        every line is checked in order against the true adjoint (or value) of its node, with
        every adjoint it uses bound to the true value.

        `deadline` (a time.monotonic() value; `timeout` the seconds it stands for, for the
        message): once it passes — or a TimeBudget around this call expires — the lines not yet
        checked are not checked, and one result with `timed_out` set says so."""
        lines = list(split_lines(text))
        scope = self.scope()
        results: list[Result] = []
        try:
            self._identify_aliases(lines, scope, deadline)
        except BudgetExpired:
            return [_timed_out(lines, 0, timeout)]
        for k, (number, lhs, rhs, raw) in enumerate(lines):
            if deadline is not None and time.monotonic() > deadline:
                results.append(_timed_out(lines, k, timeout))
                break
            try:
                if lhs is None:
                    raise ParseError("write one `name = expression` per line")
                try:
                    kind, node = self.resolve_lhs(lhs, scope)
                except ParseError:
                    self._keep_as_helper(lhs, rhs, scope)  # so that later lines using it can be checked
                    raise
                name = unicodedata.normalize("NFKC", lhs.strip())
                if kind == "alias":
                    r = Result("defined", f"{name} names {self.node_text(node)}", claim=rhs.strip(), step=name)
                elif kind == "helper":
                    term = self.parse_claim(rhs, scope)
                    try:
                        shapes = infer_shapes(term, scope.shape_of)
                    except ClaimShapeError as err:
                        raise ParseError(f"{name} does not type-check: {err.message}") from None
                    scope.add_helper(Helper(name, term_to_sympy(term, shapes, scope.name_of), shapes[term]))
                    # a look-alike letter makes grаd_W1 (Cyrillic а) a name of the student's own: say so
                    what = f"defines {name}{lookalike_note(name)} (a name of your own, not checked)"
                    r = Result("defined", what, claim=rhs.strip())
                    r.step = name
                else:
                    if kind == "adjoint":
                        target = self.target(node)
                    else:
                        target = Target(node, "forward", self.node_shape[node], node, node)
                    r = self.check(target, rhs, scope, local=True)
                    r.node = node if kind == "adjoint" else None
                    r.step = node if kind == "forward" else self.label(node, ascii_only=True)
            except BackstepError as err:
                r = Result("error", err.message, claim=(rhs or "").strip())
            except RecursionError:
                r = Result("error", "the expression is nested too deeply", claim=(rhs or "").strip())
            except BudgetExpired:  # the submission's budget (SymPy's own is caught inside prove)
                results.append(_timed_out(lines, k, timeout))
                break
            r.line, r.written = number, raw.strip()
            results.append(r)
        return results

    def _keep_as_helper(self, lhs: str, rhs: str, scope: Scope) -> None:
        name = unicodedata.normalize("NFKC", lhs.strip())
        if not name.isidentifier() or name in scope.name_of:
            return
        try:
            term = self.parse_claim(rhs, scope)
            shapes = infer_shapes(term, scope.shape_of)
        except (BackstepError, ClaimShapeError, RecursionError):
            return
        scope.add_helper(Helper(name, term_to_sympy(term, shapes, scope.name_of), shapes[term]))

    def _identify_aliases(self, lines: list, scope: Scope, deadline: float | None = None) -> None:
        """Lines that define a new name: when its value is a node's value everywhere, it names that node.

        One pass, in dependency order: a line is looked at once, after the lines defining the new
        names it uses (whatever their order in the file), so a file of n lines costs n parses, not
        the n² of retrying every unresolved line until nothing changes. Names that depend on each
        other in a cycle are taken in the file's order (they cannot name a node anyway)."""
        from .numeric import Evaluator

        torch = _torch()
        pending = []
        for _number, lhs, rhs, _ in lines:
            if lhs is None:
                continue
            name = unicodedata.normalize("NFKC", lhs.strip())
            if name.isidentifier() and name not in scope.name_of and name not in self.derivation.dims:
                if not _ADJOINT_LIKE.fullmatch(name):
                    pending.append((name, rhs))
        for name, rhs in _dependency_order(pending, self.derivation.output):
            if deadline is not None and time.monotonic() > deadline:
                return  # the lines left are checked as they are (check_lines reports the time-out)
            try:
                term = self.parse_claim(rhs, scope)
                shapes = infer_shapes(term, scope.shape_of)
            except (BackstepError, ClaimShapeError, RecursionError):
                continue
            expr = term_to_sympy(term, shapes, scope.name_of)
            shape = shapes[term]
            candidates = [n for n in self.graph.nodes if n.kind != "const" and tuple(n.shape) == tuple(shape)]
            if not candidates:
                continue
            try:
                values = [
                    Evaluator(self.env_with(p, scope.helpers, scope.env_cache), p.sizes)(expr) for p in self.points
                ]
            except (RuntimeError, TypeError, ValueError, KeyError, ArithmeticError):
                continue
            for node in candidates:
                if all(_close(torch, v, p.env[node.name]) for v, p in zip(values, self.points)):
                    self.alias(scope, name, node.name)
                    break


_IDENTIFIER = re.compile(r"[^\W\d]\w*")


def _dependency_order(pending: list[tuple[str, str]], output: str) -> list[tuple[str, str]]:
    """`pending` (name, right side) reordered so that each comes after the items defining the names
    its right side uses (as written, or as an adjoint spelling such as grad_Z); otherwise in the
    file's order. Linear in the total length of the lines: one depth-first search, no retries."""
    defines: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(pending):
        for spelling in (name, *adjoint_spellings(name, output)):
            defines.setdefault(spelling, []).append(i)
    uses = []
    for i, (_, rhs) in enumerate(pending):
        tokens = dict.fromkeys(_IDENTIFIER.findall(unicodedata.normalize("NFKC", rhs or "")))
        uses.append([j for t in tokens for j in defines.get(t, ()) if j != i])
    order: list[int] = []
    state = [0] * len(pending)  # 0 not seen, 1 on the stack, 2 done
    for start in range(len(pending)):
        if state[start]:
            continue
        state[start] = 1
        stack = [(start, iter(uses[start]))]
        while stack:  # iterative: a chain of 10,000 lines must not reach the recursion limit
            i, children = stack[-1]
            for j in children:
                if state[j] == 0:
                    state[j] = 1
                    stack.append((j, iter(uses[j])))
                    break
            else:
                stack.pop()
                state[i] = 2
                order.append(i)
    return [pending[i] for i in order]


def _elements(shape: tuple, sizes: dict[str, int]) -> int:
    count = 1
    for d in shape:
        count *= d if isinstance(d, int) else sizes.get(d, 1)
    return count


def _times(shape: tuple, sizes: dict[str, int]) -> str:
    return " × ".join(str(d if isinstance(d, int) else sizes.get(d, d)) for d in shape) or "a scalar"


def _reach(start: str, edges: dict[str, list[str]]) -> set[str]:
    """Every node reachable from `start` along `edges`, without `start` itself (the graph has no cycle)."""
    return reachable(start, lambda name: edges.get(name, ()), key=lambda name: name) - {start}


def _strip_lhs(claim: str, problem: Problem, target: Target, scope: Scope) -> str:
    """`dL/dW1 = x.T @ g` as a claim: the left side must name the target; the right side is the claim."""
    m = re.match(r"^([^=]*?)(?<![<>=!])=(?!=)(.*)$", claim, re.S)
    if not m:
        return claim
    try:
        kind, node = problem.resolve_lhs(m.group(1), scope)
    except ParseError:
        return claim
    if kind == "adjoint" and node != target.node:
        raise UsageError(f"the claim is written for ∂/∂{node}, but --wrt is {target.node}")
    return m.group(2) if kind == "adjoint" else claim


def _timed_out(lines: list, k: int, timeout: float | None) -> Result:
    """The result standing for lines[k:], not checked: the submission's time ran out."""
    budget = f"the {timeout:g} s budget" if timeout else "the time budget"
    if k >= len(lines):
        r = Result("error", f"timed out: {budget} for this submission ran out")
        r.timed_out = True
        return r
    first, last = lines[k][0], lines[-1][0]
    which = f"line {first}" if first == last else f"lines {first}–{last}"
    r = Result("error", f"timed out: {budget} for this submission ran out; {which} not checked")
    r.line, r.written, r.timed_out = first, lines[k][3].strip(), True
    return r


def split_text(text: str) -> list[str]:
    """A derivation file's lines: ended by \\n, \\r\\n or \\r only (not by U+2028, U+0085 or a form
    feed, as str.splitlines would), a byte-order mark at the start dropped."""
    return _LINE_END.split(text.removeprefix("\ufeff"))


_LINE_END = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> Iterator[tuple[int, str | None, str | None, str]]:
    """(line number, left side, right side, the line) for each line that is not blank or a comment.

    Lines end at \\n (and \\r\\n, \\r) only: str.splitlines would also end one at U+2028, U+0085 or
    a form feed inside a student's line. A byte-order mark at the start is not part of line 1."""
    for number, raw in enumerate(split_text(text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.match(r"^(.*?)(?<![<>=!])=(?!=)(.*)$", line)
        if not m or not m.group(1).strip() or not m.group(2).strip():
            yield number, None, None, raw
            continue
        yield number, m.group(1), m.group(2), raw


# --- diagnosis ---------------------------------------------------------------------------------


class _Diagnosis:
    """Try candidate fixes for a wrong claim; the first that makes it equal the truth everywhere."""

    def __init__(self, problem, target, term, shapes, claim_expr, values, truths, envs, scope: Scope):
        self.p = problem
        self.target = target
        self.term = term
        self.shapes = shapes
        self.claim_expr = claim_expr
        self.values = values
        self.truths = truths
        self.envs = envs
        self.name_of = scope.name_of
        self.shape_of = scope.shape_of
        self.torch = _torch()
        self.tried = 0

    def run(self) -> Mistake | None:
        families = [self.ratio, self.symmetric, self.chain, self.structural, self.broadcast_sum, self.extra_factor]
        for family in families:
            try:
                found = family()
            except (RuntimeError, TypeError, ValueError, ZeroDivisionError, RecursionError, ClaimShapeError):
                found = None
            if found is not None:
                return found
        return None

    # helpers

    def matches(self, expr: Expr) -> bool:
        self.tried += 1
        values = self.p._values(expr, self.envs, self.target)
        if isinstance(values, str):
            return False
        return all(_close(self.torch, v, t) for v, t in zip(values, self.truths))

    def shaped(self, term: Term):
        """(expr, shapes) of a candidate term that type-checks and has a usable shape, else None."""
        try:
            shapes = infer_shapes(term, self.shape_of)
        except ClaimShapeError:
            return None
        if not broadcasts_to(shapes[term], self.target.shape):
            return None
        return term_to_sympy(term, shapes, self.name_of), shapes

    def lang(self, expr: Expr) -> str:
        try:
            return to_lang(expr, self.p.derivation.symbols)
        except TypeError:
            return str(expr)

    def written(self, term: Term) -> str:
        """A candidate fix as the student would write it (their names)."""
        try:
            shapes = infer_shapes(term, self.shape_of)
            return to_lang(term_to_sympy(term, shapes))
        except (ClaimShapeError, TypeError):
            return term.show()

    # families

    def ratio(self) -> Mistake | None:
        """claim = c · truth: a sign, a constant factor, or a dimension (a mean's 1/n)."""
        if self.values is None:
            return None
        torch = self.torch
        ratios = []
        start = 0
        for k, _ in enumerate(self.p.size_sets):
            count = self.p.points_per_set if k == 0 else max(1, self.p.points_per_set - 1)
            vals = self.values[start : start + count]
            truths = self.truths[start : start + count]
            start += count
            flat_t = torch.cat([t.reshape(-1) for t in truths])
            flat_v = torch.cat([v.reshape(-1) for v in vals])
            if flat_t.numel() == 0:
                return None
            i = int(flat_t.abs().argmax())
            if abs(float(flat_t[i])) < 1e-9:
                return None
            c = float(flat_v[i] / flat_t[i])
            if c == 0 or not all(_close(torch, v / c, t) for v, t in zip(vals, truths)):
                return None
            ratios.append(c)
        if len(set(round(r, 9) for r in ratios)) == 1 or len(ratios) == 1:
            return self._constant(ratios[0])
        return self._dimension(ratios)

    def _constant(self, c: float) -> Mistake | None:
        frac = Fraction(c).limit_denominator(1000)
        if abs(float(frac) - c) > 1e-9 * max(1.0, abs(c)):
            # e or π, perhaps (our own number: nsimplify never sees the user's text)
            exact = sympy.nsimplify(c, [sympy.E, sympy.pi], tolerance=1e-10, rational=False)
            if exact.is_Float or abs(float(exact) - c) > 1e-9 * max(1.0, abs(c)):
                exact = sympy.Float(c, 12)
                desc = f"{c:.6g}"
            else:
                desc = to_lang(exact)
        else:
            exact = sympy.Rational(frac.numerator, frac.denominator)
            desc = str(frac)
        fixed = self.claim_expr / exact
        if not self.matches(fixed):
            return None
        fix = self.lang(fixed)
        if exact == -1:
            return Mistake("sign", "a sign error: the claim is the negative of the gradient", fix)
        sign = "a sign error and " if c < 0 else ""
        a = abs(frac)
        if a.denominator == 1 and a.numerator > 1 and exact.is_Rational:
            return Mistake(
                "constant_factor",
                f"{sign}an extra factor of {a.numerator}: the claim is {desc} × the gradient",
                fix,
            )
        if a.numerator == 1 and a.denominator > 1 and exact.is_Rational:
            hint = (
                " — the 2 that differentiating a square brings down" if a.denominator == 2 and self.p.has_square else ""
            )
            return Mistake(
                "constant_factor",
                f"{sign}a missing factor of {a.denominator}: the claim is {desc} × the gradient{hint}",
                fix,
            )
        return Mistake("constant_factor", f"{sign}a constant factor: the claim is {desc} × the gradient", fix)

    def _dimension(self, ratios: list[float]) -> Mistake | None:
        """c = ±(product of dimensions)^±1, the same at both sets of sizes: a mean's 1/n."""
        dims = self.p.derivation.dims
        sets = self.p.size_sets
        for r in range(1, min(3, len(dims)) + 1):
            for combo in combinations(dims, r):
                sizes = [float(sympy.prod([s[dm] for dm in combo])) for s in sets]
                for power in (-1, 1):
                    for sign in (1, -1):
                        if all(abs(c - sign * size**power) <= 1e-9 * abs(c) for c, size in zip(ratios, sizes)):
                            dim_expr = sympy.Mul(*[sb.Dim(dm) for dm in combo])
                            fixed = self.claim_expr / (sign * dim_expr**power)
                            if not self.matches(fixed):
                                continue
                            name = "·".join(combo)
                            over = name
                            name = name if r == 1 else f"({name})"
                            signed = "a sign error and " if sign < 0 else ""
                            if power == -1:
                                return Mistake(
                                    "mean_instead_of_sum",
                                    f"{signed}an extra factor 1/{name}: a mean over {over} where the gradient sums",
                                    self.lang(fixed),
                                )
                            return Mistake(
                                "sum_instead_of_mean",
                                f"{signed}a missing factor 1/{name}: the formula takes a mean over {over}, "
                                f"so its gradient carries 1/{name}",
                                self.lang(fixed),
                            )
        return None

    def structural(self) -> Mistake | None:
        """Transposes removed or added, a product's order swapped, another axis — one edit at a time.

        Edits that remove or reorder come first; then a missing transpose, innermost first, so that
        the fix names the smallest part; the whole claim transposed comes last."""
        root = self.term
        shapes = self.shapes or {}
        nodes = list(_walk(root))
        edits = []
        for path, t in nodes:
            if t.kind == "op" and t.op == "transpose":
                edits.append(
                    ("extra_transpose", f"an extra transpose: {t.show()} should be {t.args[0].show()}", path, t.args[0])
                )
        for path, t in nodes:
            if t.kind == "op" and t.op == "matmul":
                a, b = t.args
                # B A, and the column-vector habit: A B where the row convention needs B Aᵀ (or Bᵀ A)
                for args in ((b, a), (b, _transposed(a)), (_transposed(b), a)):
                    new = Term("op", op="matmul", args=args)
                    message = f"the matrix product is in the wrong order: {t.show()} should be {new.show()}"
                    edits.append(("swapped_product", message, path, new))
        for path, t in nodes:
            params = dict(t.params)
            if t.kind == "op" and t.op in ("sum", "mean") and params.get("axis") is not None:
                rank = len(shapes.get(t.args[0], ())) or 2
                for k in range(rank):
                    if k == params["axis"] % rank:
                        continue
                    new = replace(t, params=tuple(sorted({**params, "axis": k}.items())), text=None)
                    message = f"{t.op} over the wrong axis: axis={params['axis']} should be axis={k}"
                    edits.append(("wrong_axis", message, path, new))
        for path, t in nodes:
            if t.kind == "const" or (t.kind == "op" and t.op == "transpose"):
                continue
            if t in shapes and len(shapes[t]) < 2:
                continue
            new = Term("op", op="transpose", args=(t,))
            if path:
                edits.append(
                    ("missing_transpose", f"a missing transpose: {t.show()} should be {new.show()}", path, new)
                )
            else:
                message = "the claim is the transpose of the gradient (transpose the whole result)"
                edits.append(("transposed", message, path, new))
        for kind, message, path, new in edits:
            if self.tried > MAX_CANDIDATES:
                return None
            candidate = _replace_at(root, path, new)
            shaped = self.shaped(candidate)
            if shaped is None:
                continue
            expr, _ = shaped
            if self.matches(expr):
                return Mistake(kind, message, self.written(candidate))
        return None

    def broadcast_sum(self) -> Mistake | None:
        """A claim shaped like the broadcast result (n×h for a bias of shape (h,)): sum it back."""
        if self.shapes is None or self.claim_expr is None:
            return None
        have = self.shapes[self.term]
        axes = broadcast_sum_axes(have, self.target.shape)
        if axes is None:
            return None
        fixed = sum_to(self.claim_expr, have, self.target.shape)
        if not self.matches(fixed):
            return None
        where = ", ".join(f"{k} ({have[k]})" for k in axes)
        return Mistake(
            "missing_broadcast_sum",
            f"a forgotten sum over the broadcast {'axes' if len(axes) > 1 else 'axis'} {where}: "
            f"{self.target.node} is broadcast along it in the forward pass, so its gradient sums over it",
            self.lang(fixed),
        )

    def symmetric(self) -> Mistake | None:
        """A (or 2A) where A + Aᵀ belongs: the rule for xᵀAx used as if A were symmetric."""
        if self.claim_expr is None:
            return None
        for name, shape in self.shape_of.items():
            if len(shape) != 2 or shape[0] != shape[1] or name not in {v.name for v in self.p.derivation.variables}:
                continue
            a = sb.var(name)
            if a not in self.claim_expr.free_symbols:
                continue
            sym = a + sb.TransposeOp.build([a], [shape])
            for replacement, what in ((sym, name), (sym / 2, f"2·{name}")):
                fixed = self.claim_expr.xreplace({a: replacement})
                if self.matches(fixed):
                    return Mistake(
                        "symmetric_part",
                        f"{what} where {name} + {name}.T belongs: that holds only for a symmetric {name}",
                        self.lang(normalize(fixed, lambda s: len(self.shape_of.get(s.name, ())))),
                    )
        return None

    def _site_candidates(self):
        p = self.p
        for step, node, i in p.sites():
            if node is None:
                continue
            factor = p.local_factor(node, i)
            if factor is None:
                continue
            inp = node.inputs[i]
            g = self._adjoint_of_node(node)
            yield step, node, inp, factor, g

    def _adjoint_of_node(self, node) -> Expr:
        d = self.p.derivation
        if node.name == d.output and d.seed.is_one:
            return sympy.Integer(1)
        return sb.var(self.p.adjoint[node.name])

    def _matches_modified(self, changed: dict[int, Expr]) -> bool:
        if self.values is None or self.target.kind != "adjoint":
            return False
        self.tried += 1
        for point, value in zip(self.p.points, self.values):
            if not _close(self.torch, value, self.p.rerun(point, changed, self.target)):
                return False
        return True

    def _factor_text(self, factor: Expr) -> str:
        full = self.p.expand(factor)
        return self.lang(full if full is not None else factor)

    def chain(self) -> Mistake | None:
        """The truth with one inner derivative left out, or one term of a sum of paths left out."""
        if self.values is None or self.target.kind != "adjoint":
            return None
        for step, node, inp, factor, g in self._site_candidates():
            changed = {step.index: sum_to(g, node.shape, inp.shape)}
            if self._matches_modified(changed):
                return Mistake(
                    "missing_chain_factor", f"a missing chain-rule factor: {self._derivative(node, inp, factor)}"
                )
        for step, _, _ in self.p.sites():
            if step.kind != "sum":
                continue
            terms = sympy.Add.make_args(step.result)
            for j, term in enumerate(terms):
                changed = {step.index: sympy.Add(*[t for k, t in enumerate(terms) if k != j])}
                if not self._matches_modified(changed):
                    continue
                partial = next((s for s in self.p.derivation.backward if sb.var(s.target) == term), None)
                through = ""
                if partial is not None and partial.node:
                    node = next(n for n in self.p.graph.op_nodes if n.name == partial.node)
                    through = f" through {self._expression(node)}"
                return Mistake(
                    "missing_chain_term",
                    f"a missing term of the multivariable chain rule: {step.of} is used more than once, "
                    f"and the term from its path{through} is left out",
                )
        return None

    def extra_factor(self) -> Mistake | None:
        if self.values is None or self.target.kind != "adjoint":
            return None
        for step, node, inp, factor, g in self._site_candidates():
            changed = {step.index: sum_to(g * factor * factor, node.shape, inp.shape)}
            if self._matches_modified(changed):
                return Mistake(
                    "extra_chain_factor",
                    f"a chain-rule factor applied twice: {self._derivative(node, inp, factor)} appears twice",
                )
        return None

    def _expression(self, node) -> str:
        """A node in terms of the inputs when that is short, else by its name."""
        full = self.p.expand(sb.var(node.name))
        text = self.lang(full) if full is not None else None
        if text is not None and len(text) <= 60:
            return text
        step = next(f for f in self.p.derivation.forward if f.name == node.name)
        return f"{node.name} = {self.lang(reevaluate(step.expr))}"

    def _derivative(self, node, inp, factor: Expr) -> str:
        """relu′(x @ W1) = step(x @ W1), or ∂(a * b)/∂a = b: the inner derivative, named."""
        factor_text = self._factor_text(factor)
        if node.op.arity == 1:
            inner = self._expression(inp) if inp.kind == "op" else inp.name
            return f"{node.op.syntax}′({inner}) = {factor_text}"
        return f"∂({self._expression(node)})/∂{self._expression(inp) if inp.kind == 'op' else inp.name} = {factor_text}"
