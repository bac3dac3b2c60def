"""A formula checked against claims: Problem parses and derives it once, holds its names (what a
claim may write, and what each name means), and checks a claim for the adjoint (or the value) of
one of its nodes: shape, circularity, values at the points (points.py), a proof (proof.py), and a
diagnosis when it is wrong (diagnose.py, chain.py). Derivation files are read in files.py."""

from __future__ import annotations

import re
import unicodedata

from .. import symbolic as sb
from ..derive import build_derivation
from ..errors import CannotPrint, ParseError, UsageError
from ..lookalike import unknown_name_message
from ..ops import POW
from ..parser import Limits, deep_recursion, parse, parse_expression
from ..printing import to_lang, to_text
from ..shapes import fmt_shape_plain
from ..util import reachable
from .chain import Sites
from .claims import (
    _FRACTION,
    _IDENTIFIER,
    LOSS_NAMES,
    ClaimShapeError,
    Term,
    _term_of,
    _walk,
    adjoint_spellings,
    broadcasts_to,
    infer_shapes,
    term_to_sympy,
)
from .diagnose import Diagnosis
from .files import check_lines, resolve_lhs
from .points import MAX_BYTES, MAX_ELEMENTS, Point, Sampler, _close, _torch
from .proof import DEFAULT_BUDGET, Truth
from .records import Result, Scope, Target


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
        from ..render.common import Notation

        self.notation = Notation(d)
        self.node_shape = {n.name: tuple(n.shape) for n in graph.nodes}
        self.adjoint = {d.output: d.seed.name}  # node -> canonical symbol of its adjoint
        for s in d.backward:
            if s.kind == "sum" or s.partial is None:
                self.adjoint[s.of] = s.target
        self.base_scope = self._formula_scope()
        self._dim_carrier: dict[str, str] = {}  # a dimension name -> a name whose shape has it
        for name, shape in self.base_scope.shape_of.items():
            for dim in shape:
                if isinstance(dim, str):
                    self._dim_carrier.setdefault(dim, name)
        self.forward_names = {f.name for f in d.forward}
        self.has_square = any(n.op is POW and n.inputs[1].is_const and n.inputs[1].value == 2 for n in graph.op_nodes)
        self.truth = Truth(d, graph, self.adjoint, budget)
        self.sites = Sites(d, graph)
        self.adjoint_node = {symbol: node for node, symbol in self.adjoint.items()}
        self._inputs_of = {n.name: [a.name for a in n.inputs if not a.is_const] for n in graph.nodes}
        self._users_of: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
        for n in graph.nodes:
            for a in self._inputs_of[n.name]:
                self._users_of[a].append(n.name)
        self._relatives: dict[str, tuple[set[str], set[str]]] = {}
        self.sampler = Sampler(
            d, graph, self.adjoint, points=points, seed=seed, max_elements=max_elements, max_bytes=max_bytes
        )
        self.size_sets = self.sampler.size_sets

    def _formula_scope(self) -> Scope:
        """The formula's own names: written names -> canonical symbols, and each symbol's shape."""
        d = self.derivation
        scope = Scope({}, {}, {symbol: node for node, symbol in self.adjoint.items()}, {})
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
        return scope

    @property
    def points(self) -> list[Point]:
        """The random points every claim is checked at (drawn on first use)."""
        return self.sampler.points

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
        text = self.truth.node_text(node)
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
                    f"and the adjoints of the nodes computed from {self.truth.node_text(target.node)}"
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
        result.sizes = self.sampler.sizes_text()
        result.points = len(self.points)
        shape_problem = None
        claim_expr = None
        try:
            shapes = infer_shapes(term, scope.shape_of)
        except ClaimShapeError as err:
            shape_problem = f"the claim does not type-check: {err.message}"
            shapes = None
        if shapes is not None:
            self.sampler.check_claim_sizes(shapes)
            result.claim_shape = shapes[term]
            if not broadcasts_to(shapes[term], target.shape):
                shape_problem = f"shape {fmt_shape_plain(shapes[term])}, expected {fmt_shape_plain(target.shape)}"
            claim_expr = term_to_sympy(term, shapes, scope.name_of)
        torch = _torch()
        envs = [self.sampler.env_with(p, scope.helpers, scope.env_cache) for p in self.points]
        truths = [self.sampler.truth_value(p, target) for p in self.points]
        values = None
        if shape_problem is None:
            values = self.sampler.values(claim_expr, envs, target)
            if isinstance(values, str):
                shape_problem = values
                values = None
        if shape_problem is None:
            bad = [i for i, (v, t) in enumerate(zip(values, truths)) if not _close(torch, v, t)]
            if not bad:
                result.verdict = "right"
                proved = self.truth.prove(claim_expr, target, scope)
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
        ctx = Diagnosis(self, target, term, shapes, claim_expr, values, truths, envs, scope)
        result.mistake = ctx.run()
        if result.mistake is None:
            result.reason += "; I could not name the mistake"
        if values is not None:
            result.counterexample = self.sampler.counterexample(target, claim_expr, scope)
        return result

    def _fill_expected(self, result: Result, target: Target, local: bool = False) -> None:
        if local or target.kind == "forward":
            expr = self.truth.local_expr(target)
        else:
            full = self.truth.in_inputs(target)
            expr = full if full is not None else self.truth.expr(target)
        try:
            with deep_recursion():
                result.expected = to_lang(expr, self.derivation.symbols)
                result.expected_text = to_text(expr, self.derivation.symbols)
        except (CannotPrint, RecursionError):
            result.expected = result.expected_text = None

    def check_lines(self, text: str, deadline: float | None = None, timeout: float | None = None) -> list[Result]:
        """Check a derivation file (see files.check_lines): one result a line, in the file's order."""
        return check_lines(self, text, deadline, timeout)


def _reach(start: str, edges: dict[str, list[str]]) -> set[str]:
    """Every node reachable from `start` along `edges`, without `start` itself (the graph has no cycle)."""
    return reachable(start, lambda name: edges.get(name, ()), key=lambda name: name) - {start}


def _strip_lhs(claim: str, problem: Problem, target: Target, scope: Scope) -> str:
    """`dL/dW1 = x.T @ g` as a claim: the left side must name the target; the right side is the claim."""
    m = re.match(r"^([^=]*?)(?<![<>=!])=(?!=)(.*)$", claim, re.S)
    if not m:
        return claim
    try:
        kind, node = resolve_lhs(problem, m.group(1), scope)
    except ParseError:
        return claim
    if kind == "adjoint" and node != target.node:
        raise UsageError(f"the claim is written for ∂/∂{node}, but --wrt is {target.node}")
    return m.group(2) if kind == "adjoint" else claim
