"""The arithmetic of the derivation's expressions: definitions expanded into the inputs (iteratively,
under a size budget), steps rebuilt and tidied within a time budget, tree sizes.

SymPy simplifies as it builds: rebuilding an expression made under ``evaluate(False)`` is the
simplification (no `1 ·`, no `x^(2−1)`); `tidy` then pulls common factors out as a person writes them.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from . import symbolic as sb
from .budget import BudgetExpired, TimeBudget
from .named import size_exceeds

# SymPy's automatic simplification while expanding seldom shrinks a tree by more than this.
ESTIMATE_MARGIN = 4


def _estimated_size(expr: Expr, defs: dict, memo: dict) -> int:
    """The tree size of expr with every name replaced by its definition, before any
    simplification: counted, not built, so that it costs one pass over the definitions."""
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        parts = (defs[e],) if e.is_Symbol and e in defs else e.args
        if not parts:
            memo[e] = 1
        elif ready:
            own = 0 if e.is_Symbol else 1  # a name is replaced by its definition
            memo[e] = min(own + sum(memo[a] for a in parts), 1 << 62)
        else:
            stack.append((e, True))
            stack.extend((a, False) for a in parts if a not in memo)
    return memo[expr]


WORK_PER_BUDGET = 5  # how much building an expansion may cost, in multiples of its size budget


class TooLarge(Exception):
    """An expansion passed its size budget: keep the named form instead."""


def _expand(expr: Expr, defs: dict, memo: dict, budget: int | None = None, sizes: dict | None = None) -> Expr:
    """Substitute definitions for names, bottom-up, rebuilding (and so re-simplifying) each node.

    Iterative post-order, so that deep graphs do not overflow the stack. With a budget, a result
    whose tree would pass that many nodes raises TooLarge before the work becomes quadratic.
    """
    sizes = {} if sizes is None else sizes  # tree size of each memo entry
    work = 0  # SymPy's constructors look at the whole argument: building costs about its size
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if e.is_Symbol and e in defs:
            d = defs[e]
            if ready:
                memo[e] = memo[d]
                sizes[e] = sizes.get(d, 1)
            else:
                stack.append((e, True))
                stack.append((d, False))
            continue
        if not e.args:
            memo[e] = e
            continue
        if ready:
            memo[e] = e.func(*[memo[a] for a in e.args])
            if budget is not None:
                sizes[e] = 1 + sum(sizes.get(a, 1) for a in e.args)
                work += sizes[e]
                if sizes[e] > budget or work > WORK_PER_BUDGET * budget:
                    raise TooLarge
        else:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if a not in memo)
    return memo[expr]


def reevaluate(expr: Expr) -> Expr:
    """Rebuild an expression made under `evaluate(False)`, letting SymPy simplify as it goes."""
    return tidy(_expand(expr, {}, {}))


TIDY_MAX_SIZE = 300


def simplify(expr: Expr, seconds: float | None, rebuild: bool = True) -> tuple[Expr, str]:
    """`expr` rebuilt (SymPy's automatic simplification) and tidied, within `seconds` of wall time.

    Returns (the result, "") or, when the budget runs out, (the furthest form reached, why): a
    step that would take too long keeps its unsimplified form and says so."""
    done = expr
    budget = TimeBudget(seconds)
    try:
        with budget:
            if rebuild:
                done = _expand(expr, {}, {})
            return tidy(done), ""
    except BudgetExpired as e:
        if e.budget is not budget:
            raise
        return done, f"simplifying it took longer than {seconds:g} s (--simplify-budget)"


def simplify_step(applied: Expr, seconds: float | None) -> tuple[Expr, Expr, str]:
    """A step's rule as applied, rebuilt (SymPy's arithmetic: no `1 ·`, no `x^(2−1)`, no reordering
    shown as a simplification), and its tidied result, within `seconds`; (…, why) when the budget
    runs out, as `simplify`."""
    rebuilt = applied
    budget = TimeBudget(seconds)
    try:
        with budget:
            rebuilt = _expand(applied, {}, {})
            return rebuilt, tidy(rebuilt), ""
    except BudgetExpired as e:
        if e.budget is not budget:
            raise
        return applied, rebuilt, f"simplifying it took longer than {seconds:g} s (--simplify-budget)"


def tidy(expr: Expr) -> Expr:
    """Pull common factors out of sums, as a person writes them: (a − b)/4, not a/4 − b/4.

    Bounded: an expression above TIDY_MAX_SIZE nodes is left as it is (the step stays linear)."""
    if size_exceeds(expr, TIDY_MAX_SIZE):
        return expr
    return sympy.factor_terms(collect_products(expr))


def collect_products(expr: Expr) -> Expr:
    """A x + Aᵀ x = (A + Aᵀ) x: matrix products that share a right (or left) factor are collected."""
    if not expr.is_Add:
        return expr
    for side in (1, 0):
        groups: dict = {}
        rest = []
        for term in expr.args:
            if isinstance(term, sb.MatrixProduct):
                key = (term.operands[side], term.in_shapes)
                groups.setdefault(key, []).append(term.operands[1 - side])
            else:
                rest.append(term)
        if any(len(v) > 1 for v in groups.values()):
            terms = list(rest)
            for (shared, shapes), others in groups.items():
                pair = [sympy.Add(*others), shared] if side == 1 else [shared, sympy.Add(*others)]
                terms.append(sb.MatrixProduct.build(pair, shapes))
            return sympy.Add(*terms)
    return expr


def expr_size(expr: Expr) -> int:
    """The number of nodes of the printed tree (shared subtrees counted each time)."""
    memo: dict = {}
    stack = [(expr, False)]
    while stack:
        e, ready = stack.pop()
        if e in memo:
            continue
        if ready:
            memo[e] = 1 + sum(memo[a] for a in e.args)
        else:
            stack.append((e, True))
            stack.extend((a, False) for a in e.args if a not in memo)
    return memo[expr]
