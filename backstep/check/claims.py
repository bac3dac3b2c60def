"""Claims as backstep check reads them: a claim's terms, their shapes, their SymPy meaning, the
normal form two claims are compared in, and the records a check returns (Result, Mistake, Scope, ...)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..ops import OPS
from ..printing import to_lang
from ..shapes import ShapeEnv, ShapeMismatch

RTOL, ATOL = 1e-7, 1e-9


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
    from ..numeric import torch_module

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
