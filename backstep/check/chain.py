"""The diagnoses built from the derivation's own steps: the true gradient with one chain-rule
factor left out (or put in twice), or with one term of the multivariable chain rule left out, each
tested by re-running the backward pass with that step changed."""

from __future__ import annotations

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..derive import sum_to
from ..ops import Ctx
from ..simplify import reevaluate
from .points import _close
from .records import Mistake


class Sites:
    """The chain-rule sites of one derivation, found on first use and shared by its claims."""

    def __init__(self, derivation, graph):
        self.derivation = derivation
        self.graph = graph
        self._sites: list[tuple] | None = None

    def all(self) -> list[tuple]:
        """(step, node, input index) of every rule step, and each sum step (step, None, None)."""
        if self._sites is not None:
            return self._sites
        by_name = {n.name: n for n in self.graph.op_nodes}
        out = []
        for s in self.derivation.backward:
            if s.kind == "sum":
                out.append((s, None, None))
            elif (node := by_name.get(s.node)) is not None and s.input_index is not None:
                out.append((s, node, s.input_index))  # the model records which input the rule is for
        self._sites = out
        return out


def local_factor(node, i: int) -> Expr | None:
    """f such that this rule is ā = ȳ ⊙ f (an elementwise op's inner derivative), else None.

    The rule ran on these inputs when the formula was derived, with a real symbol as ȳ: run again
    with another real symbol and with 1, it cannot fail where it did not (hence no try)."""
    op = node.op
    if not op.elementwise:  # (add, sub and neg have number factors, ±1: refused below)
        return None
    args = tuple(a.value if a.is_const else sb.var(a.name) for a in node.inputs)
    shapes = tuple(a.shape for a in node.inputs)
    g = sympy.Symbol("_g", real=True)
    rule = op.backward[i](Ctx(g, args, sb.var(node.name), shapes, node.shape, node.params))
    factor = op.backward[i](Ctx(sympy.Integer(1), args, sb.var(node.name), shapes, node.shape, node.params))
    if factor.is_number or sympy.expand(rule - g * factor) != 0:
        return None
    return factor


class ChainRuleFamilies:
    """Diagnosis's families that change a step of the true derivation (mixed into Diagnosis, whose
    p, target, values, torch, tried and lang they use)."""

    def _site_candidates(self):
        p = self.p
        for step, node, i in p.sites.all():
            if node is None:
                continue
            factor = local_factor(node, i)
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
        for point, value in zip(self.p.sampler.points, self.values):
            if not _close(self.torch, value, self.p.sampler.rerun(point, changed, self.target)):
                return False
        return True

    def _factor_text(self, factor: Expr) -> str:
        full = self.p.truth.expand(factor)
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
        for step, _, _ in self.p.sites.all():
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
        full = self.p.truth.expand(sb.var(node.name))
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
