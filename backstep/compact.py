"""The compact derivation (``--compact``): pass-through backward steps collapsed.

(Hand-written layers, shown as one op's rule, are found while deriving: backstep/layers.py.)

A backward step whose result is just another adjoint, unchanged (``v̄4 = v̄5`` through an add
without broadcasting), says nothing a reader needs: it is dropped, and every later step, named
adjoint and gradient refers to the adjoint it copied instead. The steps kept are renumbered. The
compaction happens before verification, so the verifier checks the steps as they are shown (each
kept step's result against autograd's gradient of what it is the adjoint of).

A leaf's own adjoint step is kept even when it is a copy: it is the gradient the reader asked for
(a copied contribution to it, x̄⁽¹⁾ = v̄4, goes: the sum refers to v̄4).
"""

from __future__ import annotations

import dataclasses

from sympy import Expr

from .model import BackwardStep, Derivation


def compact(derivation: Derivation) -> Derivation:
    """`derivation` with its pass-through backward steps dropped (in place; returned for chaining)."""
    leaves = {v.name for v in derivation.variables}
    copied: dict[str, Expr] = {}  # a dropped step's target -> the adjoint it copied
    kept: list[BackwardStep] = []
    for step in derivation.backward:
        result = _renamed(step.result, copied)
        if _is_adjoint_copy(result, derivation) and (step.of not in leaves or step.partial is not None):
            copied[step.target] = result
            continue
        kept.append(step)
    derivation.compact = True
    layers = {step.node: step for step in derivation.backward if step.layer is not None}
    for node, step in layers.items():
        derivation.notes.append(
            f"--compact: {', '.join(step.layer.steps)} compute {step.op} as written by hand: the backward pass "
            f"takes {step.op}'s rule at {node}, one step per input, in place of theirs"
        )
    if not copied:
        return derivation
    table = derivation.symbols.table
    shown = ", ".join(
        f"{table[t].text} = {table[str(c)].text}" for t, c in copied.items() if t in table and str(c) in table
    )
    if shown:  # (the rule beside a later step names the copy: c̄ there is the adjoint it copied)
        derivation.notes.append(
            f"--compact: not shown, as they pass an adjoint through unchanged (later steps use it): {shown}"
        )
    derivation.backward = [
        dataclasses.replace(
            step,
            index=number,
            applied=_renamed(step.applied, copied),
            result=_renamed(step.result, copied),
        )
        for number, step in enumerate(kept, start=1)
    ]
    derivation.named_adjoints = [
        dataclasses.replace(a, expr=_renamed(a.expr, copied))
        for a in derivation.named_adjoints
        if a.symbol not in copied
    ]
    for gradient in derivation.gradients.values():
        gradient.expr = _renamed(gradient.expr, copied)
        if gradient.named is not None:
            gradient.named = _renamed(gradient.named, copied)
    return derivation


def _is_adjoint_copy(result: Expr, derivation: Derivation) -> bool:
    """Whether `result` is exactly one adjoint symbol (the seed's, or an earlier step's)."""
    name = getattr(result, "name", None)
    return isinstance(name, str) and name in derivation.adjoint_of and not result.args


def _renamed(expr, copied: dict[str, Expr]):
    """`expr` with each dropped adjoint replaced by the adjoint it copied."""
    if expr is None or not copied or not hasattr(expr, "free_symbols"):
        return expr
    mapping = {s: copied[s.name] for s in expr.free_symbols if getattr(s, "name", None) in copied}
    return expr.xreplace(mapping) if mapping else expr
