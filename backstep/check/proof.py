"""The symbolic side of a check: every name's definition, the true gradient as an expression (over
the formula's names, or its inputs), the normal form two expressions are compared in, and the proof,
within a time budget, that a claim equals the truth."""

from __future__ import annotations

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..budget import BudgetExpired, TimeBudget, can_interrupt
from ..derive import MAX_EXPANDED_SIZE
from ..parser import deep_recursion
from ..printing import to_lang
from ..simplify import TooLarge, _expand, reevaluate
from .records import Scope, Target

DEFAULT_BUDGET = 2.0  # seconds SymPy may spend proving one claim equal to the truth


class Truth:
    """The formula's names defined symbolically: forward values by their expressions, adjoints by
    their backward steps; the truth of a target in the formula's names or its inputs; proofs."""

    def __init__(self, derivation, graph, adjoint: dict[str, str], budget: float = DEFAULT_BUDGET):
        d = self.derivation = derivation
        self.graph = graph
        self.adjoint = adjoint  # node -> canonical symbol of its adjoint
        self.budget = budget
        # Definitions of every name, for symbolic proofs.
        self.defs: dict[Expr, Expr] = {}
        for f in d.forward:
            self.defs[sb.var(f.name)] = reevaluate(f.expr)
        for s in d.backward:
            self.defs[sb.var(s.target)] = s.result
        if d.seed.is_one:
            self.defs[sb.var(d.seed.name)] = sympy.Integer(1)
        self._expand_memo: dict = {}
        self._local_defs: dict | None = None

    def expr(self, target: Target) -> Expr:
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

    def local_expr(self, target: Target) -> Expr:
        return self.local(self.expr(target))

    def in_inputs(self, target: Target) -> Expr | None:
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

    def prove(self, claim_expr: Expr, target: Target, scope: Scope) -> bool:
        """Whether SymPy proves the claim equal to the truth within the budget (False: not proved,
        the numbers decide)."""
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


# --- the normal form ---------------------------------------------------------------------------


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
                axes = range(len(shape)) if axis is None else [axis] if isinstance(axis, int) else axis
                count = sympy.Mul(*[shape[k % len(shape)] for k in axes])
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
