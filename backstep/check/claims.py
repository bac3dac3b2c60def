"""Claims as backstep check reads them: the spellings of an adjoint (grad_H, H_bar, dL/dH, ...), a
claim's terms, their shapes and their SymPy meaning."""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from sympy import Expr

from .. import symbolic as sb
from ..ops import MATMUL, OPS, TRANSPOSE
from ..printing import to_lang
from ..shapes import ShapeEnv, ShapeMismatch
from ..util import postorder

# Names a loss goes by in dL/dx: the output's own name, or these.
LOSS_NAMES = ("L", "loss", "J", "E", "ℓ")

_FRACTION = re.compile(r"(?<![\w.])[d∂]\s*([^\W\d]\w*)\s*/\s*[d∂]\s*([^\W\d]\w*)")
# Left sides that can only mean an adjoint: grad_P, P_bar, P_grad, dL_dP (P then must be a node).
_ADJOINT_LIKE = re.compile(r"grad_(\w+)|(\w+?)_bar|(\w+?)_grad|dL_d(\w+)")

_IDENTIFIER = re.compile(r"[^\W\d]\w*")


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
        if self.op == TRANSPOSE.name:
            return _wrap(self.args[0].show()) + ".T"
        if self.op == MATMUL.name:
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
    if t.kind == "op" and t.op == TRANSPOSE.name:
        return t.args[0]
    return Term("op", op=TRANSPOSE.name, args=(t,))


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


def _operands(t: Term) -> tuple:
    return t.args if t.kind == "op" else ()


def infer_shapes(root: Term, shape_of: dict[str, tuple]) -> dict[Term, tuple]:
    """The shape of every subterm, with the formula's dimensions held fixed."""
    env = _RigidEnv()
    memo: dict[Term, tuple] = {}
    for t in postorder(root, _operands, memo.__contains__):
        if t.kind == "var":
            memo[t] = tuple(shape_of[t.name])
        elif t.kind == "const":
            memo[t] = ()
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
    for t in postorder(root, _operands, memo.__contains__):
        if t.kind == "var":
            memo[t] = sb.var(name_of.get(t.name, t.name) if name_of else t.name)
        elif t.kind == "const":
            memo[t] = t.value
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
