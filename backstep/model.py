"""The derivation data model: pure data, produced by ``derive`` and only read by renderers.

Expressions are SymPy expressions over the symbols in ``Derivation.symbols`` (variables,
named intermediates, adjoints ``grad_*``, partial adjoints ``grad_*_k``, and the generic
symbols of the general rules, whose names start with ``_``). Renderers print them through
``backstep.printing`` with that table.

Nothing here imports a printer, a renderer or the verifier: they read this model, and the
methods users call on a derivation (``to_text()``, ``verify()``, ...) are added by
``backstep.facade``. The op table is imported, for the shapes of its expressions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sympy import Expr

from .ops import OP_OF_CLASS
from .shapes import ShapeEnv, ShapeMismatch
from .symbolic import Dim, TensorOp

# A number as a renderer shows it: a float, or nested lists of floats for an array.
Value = Any


@dataclass
class Variable:
    name: str
    shape: tuple
    requires_grad: bool
    domain: str  # where the verifier draws it: real, positive, ...


@dataclass
class ForwardStep:
    name: str
    op: str
    expr: Expr  # the op applied to the names of its inputs
    shape: tuple
    grad_fn: str | None  # the torch grad_fn this node appears as (None: not differentiable)
    line: int | None = None
    col: int | None = None
    value: Value = None  # with --at


@dataclass
class Rule:
    """The general local rule of an op for one input: `y = f(a, b)  ⇒  ā = …`, at one node's shapes
    (with the sum over broadcast axes they need)."""

    forward_lhs: Expr
    forward_rhs: Expr
    adjoint_lhs: Expr
    adjoint_rhs: Expr


@dataclass
class Layer:
    """Forward steps written by hand that compute an op of the table (`X @ W + b`, softmax then log
    then pick): with --compact, their backward steps are that op's, one per input (backstep.layers)."""

    steps: tuple[str, ...]  # the forward steps it stands for, in order (its output last)
    forward: Expr  # the op applied to the layer's inputs: addmm(b, X, W), cross_entropy(z, t)


@dataclass
class BackwardStep:
    index: int  # 1-based, in the order of the reverse sweep
    target: str  # the symbol this step defines: grad_x, or grad_x_2 for a partial
    of: str  # the name whose adjoint this is (x)
    kind: str  # "rule" (one edge of the graph) or "sum" (the multivariable chain rule)
    node: str | None  # the forward node whose rule this is (kind "rule")
    op: str | None
    # The general rule (kind "rule"), in letters that are none of the program's names: it yields `result`.
    rule: Rule | None
    applied: Expr  # the rule with these names, before simplification
    result: Expr  # the simplified result
    partial: int | None = None  # k when this is the k-th contribution to `of`
    input_index: int | None = None  # kind "rule": the position of `of` among the inputs of `node`
    value: Value = None  # with --at
    unsimplified: str = ""  # why `result` is shown as built (simplification ran out of time)
    general: Rule | None = None  # the same rule in the op's own letters (a, b, y), as the op catalog shows it
    layer: Layer | None = None  # the hand-written layer this step is the op rule of (--compact), if any


@dataclass
class Seed:
    """The upstream gradient of the output: 1 for a scalar, else a symbol of the output's shape."""

    name: str  # the symbol (grad_y), even for a scalar output
    shape: tuple
    is_one: bool


@dataclass
class Gradient:
    name: str  # the variable
    expr: Expr  # in terms of the inputs (and the seed for a non-scalar output)
    shape: tuple
    in_inputs: bool = True  # False: too large to expand, written with named intermediates
    value: Value = None  # with --at
    unsimplified: str = ""  # why `expr` is shown as built (simplification ran out of time)
    # The named form, what the documents show (d2l's ∂J/∂W2 = hᵀ ō + λW2): in terms of the program's
    # named intermediates and their adjoints (Derivation.named_adjoints); None where it is `expr`.
    named: Expr | None = None

    @property
    def shown(self) -> Expr:
        """The form the documents show unless asked for the expanded one."""
        return self.expr if self.named is None else self.named


@dataclass
class NamedAdjoint:
    """An adjoint that the named forms of the gradients refer to, in named form itself."""

    symbol: str  # the adjoint's symbol (a backward step's target)
    of: str  # the intermediate it is the adjoint of
    expr: Expr
    shape: tuple
    partial: int | None = None  # k for the k-th contribution to `of`'s adjoint (x̄⁽ᵏ⁾), not all of it


@dataclass
class Check:
    """One comparison of a symbolic quantity with torch autograd, over all points."""

    name: str  # a variable, or the symbol of an intermediate's adjoint
    ok: bool
    max_abs_err: float
    max_rel_err: float
    kind: str = "gradient"  # gradient, adjoint, forward, grad_fn
    detail: str = ""


@dataclass
class Verification:
    points: int
    dtype: str
    sizes: dict[str, int]  # the sample size of each symbolic dimension
    seed: int
    gradients: list[Check] = field(default_factory=list)
    adjoints: list[Check] = field(default_factory=list)  # every intermediate (retain_grad)
    forward: list[Check] = field(default_factory=list)
    grad_fns: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    grad_fn_names: dict[str, str | None] = field(default_factory=dict)  # each forward step's, as torch names it
    notes: list[str] = field(default_factory=list)  # what differs from the op table without being wrong

    @property
    def ok(self) -> bool:
        checks = self.gradients + self.adjoints + self.forward + self.grad_fns
        return not self.problems and all(c.ok for c in checks)

    @property
    def first_failure(self) -> Check | None:
        for c in self.forward + self.adjoints + self.gradients + self.grad_fns:
            if not c.ok:
                return c
        return None


@dataclass
class SymbolInfo:
    """How one symbol prints, and its shape."""

    text: str
    latex: str
    lang: str
    shape: tuple


@dataclass
class Symbols:
    """The symbols of one derivation: names for each target, and shapes (for ⊙ and ᵀ)."""

    table: dict[str, SymbolInfo] = field(default_factory=dict)

    def add(self, name: str, shape: tuple, text: str, latex: str) -> None:
        self.table[name] = SymbolInfo(text, latex, name, tuple(shape))

    def rank(self, expr: Expr, memo: dict | None = None) -> int:
        memo = {} if memo is None else memo
        if expr in memo:
            return memo[expr]
        if isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            r = 0
        elif expr.is_Symbol:
            info = self.table.get(expr.name)
            r = len(info.shape) if info else 0
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            r = len(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
        else:
            r = max((self.rank(a, memo) for a in expr.args), default=0)
        memo[expr] = r
        return r

    def shape(self, expr: Expr, memo: dict | None = None) -> tuple | None:
        """The shape of an expression over these symbols (None where it cannot be told)."""
        memo = {} if memo is None else memo
        if expr in memo:
            return memo[expr]
        if isinstance(expr, Dim) or expr.is_Number or expr.is_NumberSymbol:
            out = ()
        elif expr.is_Symbol:
            info = self.table.get(expr.name)
            out = info.shape if info else None
        elif isinstance(expr, TensorOp):
            op = OP_OF_CLASS[type(expr)]
            try:
                out = tuple(op.shape(ShapeEnv(), list(expr.in_shapes), expr.params))
            except ShapeMismatch:
                out = None
        else:  # elementwise: NumPy broadcasting of the operands' shapes
            shapes = [self.shape(a, memo) for a in expr.args]
            out = None if any(s is None for s in shapes) else _broadcast_plain(shapes)
        memo[expr] = out
        return out


def _broadcast_plain(shapes: list[tuple]) -> tuple:
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(1, rank + 1):
        sizes = {s[-i] for s in shapes if i <= len(s)} - {1}
        out.append(sizes.pop() if len(sizes) == 1 else (1 if not sizes else min(sizes, key=str)))
    return tuple(reversed(out))


@dataclass(repr=False)
class Derivation:
    """The backpropagation of one function, as data (``backstep.derive`` returns it with its
    methods: ``backstep.facade.Derivation``)."""

    source: str
    output: str
    output_shape: tuple
    output_expr: Expr  # the output in terms of the inputs
    variables: list[Variable]
    dims: list[str]
    forward: list[ForwardStep]
    seed: Seed
    backward: list[BackwardStep]
    gradients: dict[str, Gradient]
    symbols: Symbols
    edges: list[tuple[str, str]]  # (input name, node name) of the computational graph
    # Every adjoint symbol -> the name it is the adjoint of: the seed, each backward step's target,
    # and the generic symbols of the general rules (`_r5_gB` is the adjoint of `_r5_B`).
    adjoint_of: dict[str, str]
    program: list[str] = field(default_factory=list)  # the statements as written (no annotations)
    at: dict[str, Value] | None = None  # the point of --at, with drawn values filled in
    sizes: dict[str, int] = field(default_factory=dict)  # sizes used for --at values
    verification: Verification | None = None
    notes: list[str] = field(default_factory=list)
    # The adjoints the named gradients refer to, in the order of the backward pass (empty: none do).
    named_adjoints: list[NamedAdjoint] = field(default_factory=list)
    expand: bool = False  # show the gradients in terms of the inputs (--expand), not in named form
    compact: bool = False  # pass-through backward steps dropped (--compact): see backstep/compact.py
    graph: Any = field(default=None, repr=False, compare=False)  # the parse it came from (for the verifier)

    @property
    def wrt(self) -> list[str]:
        """The variables that get gradients, in order."""
        return [v.name for v in self.variables if v.requires_grad]

    def adjoint_step(self, name: str) -> BackwardStep | None:
        """The step that defines `name`'s adjoint last (the sum, after its partial contributions);
        None for the output (its adjoint is the seed) and for a name without a gradient."""
        found = None
        for s in self.backward:
            if s.of == name and s.partial is None:
                found = s
        return found

    def grad_fn_of(self, step: ForwardStep) -> str | None:
        """The grad_fn of a forward step as shown: the one torch reported, once verified; before,
        the op table's (the documented expectation)."""
        v = self.verification
        if v is not None and step.name in v.grad_fn_names:
            return v.grad_fn_names[step.name]
        return step.grad_fn

    def shown_gradient(self, name: str) -> Expr:
        """A gradient as the documents show it: named form, or expanded with `expand`."""
        g = self.gradients[name]
        return g.expr if self.expand else g.shown

    @property
    def shown_adjoints(self) -> list[NamedAdjoint]:
        """The named adjoints the shown gradients refer to (none when they are shown expanded)."""
        return [] if self.expand else self.named_adjoints

    @property
    def all_notes(self) -> list[str]:
        """The derivation's notes, then the verification's."""
        return self.notes + (self.verification.notes if self.verification is not None else [])
