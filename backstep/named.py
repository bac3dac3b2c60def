"""Final gradients in named form, as a textbook writes them (d2l: ∂J/∂W⁽²⁾ = ∂J/∂o hᵀ + λW⁽²⁾).

A gradient written out in the inputs repeats every forward value it needs: a network's become
walls. The named form keeps the names the person chose instead — the program's named
intermediates (`h`, `z`, `xhat`) and their adjoints (ō, h̄) — and writes out only what backstep
named itself (`v1`, partial contributions ``x̄⁽¹⁾``, adjoints of unnamed nodes), where that is
short. Each adjoint a named form refers to gets its own named form (the ``where`` lines), so the
list can be read without the backward pass.

The definitions are visited once, in order (forward steps, then backward steps): each is written
with the earlier decisions substituted and rebuilt (SymPy's automatic simplification), then
either kept as a name or, when short and not the user's, substituted wherever it is used. An
unnamed forward value equal to an earlier one (`x - mu` written again where `xc = x - mu` names
it) is replaced by that earlier name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sympy import Expr

from . import symbolic as sb
from .budget import BudgetExpired, TimeBudget
from .errors import CannotPrint
from .model import BackwardStep, ForwardStep

# A name backstep chose is written out where it stands when its definition prints in at most this
# many characters (and, first, has at most 1.5 nodes a character: a cheap bound before printing);
# an adjoint that one step uses, in at most INLINE_ONCE_CHARS.
INLINE_CHARS = 40
INLINE_ONCE_CHARS = 80


@dataclass
class NamedForms:
    gradients: dict[str, Expr]  # each leaf's adjoint symbol -> its named form
    adjoints: dict[str, Expr]  # each kept adjoint symbol a named form refers to (transitively) -> its named form


def named_forms(
    forward: list[ForwardStep],
    steps: list[BackwardStep],
    keep: set[str],
    leaf_adjoints: list[str],
    seconds: float | None,
    rebuild: Callable[[Expr, dict, dict], Expr],
    tidy: Callable[[Expr], Expr],
    printed: Callable[[Expr], str],
) -> NamedForms | None:
    """The named forms of the leaves' adjoints (`leaf_adjoints`: their symbols). `keep`: the
    symbols that stay names (the user's intermediates and their final adjoints). None when
    rebuilding them ran out of time (the gradients are then shown as before). `rebuild(expr,
    substitute, memo)`: expr with names substituted, rebuilt; `tidy`: the steps' tidying;
    `printed`: an expression as the terminal prints it."""

    def short(value: Expr, chars: int = INLINE_CHARS) -> bool:
        if size_exceeds(value, 3 * chars // 2):
            return False
        try:
            return len(printed(value)) <= chars
        except CannotPrint:  # (zoo, where a step is undefined: the derivation refuses it after)
            return False

    def once(value: Expr) -> bool:  # an adjoint used once is written out where it is used unless long
        return short(value, INLINE_ONCE_CHARS)

    budget = TimeBudget(seconds)
    substitute: dict[Expr, Expr] = {}  # a name -> what stands in its place
    named: dict[str, Expr] = {}
    memo: dict = {}
    try:
        with budget:
            seen: dict[Expr, Expr] = {}  # a forward value, in named form -> the name that stands for it
            for f in forward:
                symbol = sb.var(f.name)
                value = rebuild(f.expr, substitute, memo)
                if f.name in keep:
                    seen.setdefault(value, symbol)
                elif value in seen:
                    substitute[symbol] = seen[value]
                elif short(value):
                    substitute[symbol] = value
                else:
                    seen[value] = symbol
            leaves = set(leaf_adjoints)
            uses: dict[str, int] = {}  # how many steps use each step's adjoint
            for s in steps:
                for used in s.result.free_symbols:
                    uses[used.name] = uses.get(used.name, 0) + 1
            for s in steps:
                symbol = sb.var(s.target)
                value = tidy(rebuild(s.result, substitute, memo))
                named[s.target] = value
                ours = s.target not in keep and s.target not in leaves
                if value.is_Number or (ours and (short(value) or uses.get(s.target) == 1 and once(value))):
                    substitute[symbol] = value  # (an adjoint that is a number, s̄ = 1, needs no name)
    except BudgetExpired as err:
        if err.budget is not budget:
            raise
        return None
    gradients = {a: named[a] for a in leaf_adjoints if a in named}
    # the adjoints the gradients refer to, and those they refer to, in the order of the backward pass
    wanted: set[str] = set()
    stack = [e for e in gradients.values()]
    while stack:
        for symbol in stack.pop().free_symbols:
            name = symbol.name
            if name in named and name not in wanted and name not in leaves:
                wanted.add(name)
                stack.append(named[name])
    adjoints = {s.target: named[s.target] for s in steps if s.target in wanted}
    return NamedForms(gradients, adjoints)


def size_exceeds(expr: Expr, limit: int) -> bool:
    """Whether the printed tree of expr has more than limit nodes, looking at no more than limit + 1."""
    count = 0
    stack = [expr]
    while stack:
        count += 1
        if count > limit:
            return True
        stack.extend(stack.pop().args)
    return False
