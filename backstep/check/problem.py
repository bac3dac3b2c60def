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

import itertools
import re
import time
import unicodedata
from collections.abc import Iterator

import sympy
from sympy import Expr

from .. import symbolic as sb
from ..budget import BudgetExpired, TimeBudget, can_interrupt
from ..derive import MAX_EXPANDED_SIZE, TooLarge, _expand, build_derivation, reevaluate
from ..errors import BackstepError, DomainError, ParseError, UsageError
from ..lookalike import lookalike_note, unknown_name_message
from ..ops import Ctx
from ..parser import Limits, deep_recursion, parse, parse_expression
from ..printing import to_lang, to_text
from ..shapes import concrete, fmt_shape_plain, free_sizes
from ..util import reachable
from .claims import (  # noqa: F401  (re-exported: `from backstep.check import Result` as before)
    _ADJOINT_LIKE,
    _BILINEAR,
    _FRACTION,
    _LINEAR,
    ClaimShapeError,
    Helper,
    Mistake,
    Point,
    Result,
    Scope,
    Target,
    Term,
    _close,
    _collapse,
    _replace_at,
    _RigidEnv,
    _scalar_factor,
    _simplify,
    _split,
    _term_of,
    _torch,
    _transposed,
    _walk,
    _wrap,
    broadcast_sum_axes,
    broadcasts_to,
    infer_shapes,
    normalize,
    term_to_sympy,
)
from .diagnose import Diagnosis

MAX_DRAWS = 200
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
        from ..render.common import Notation

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
        from ..numeric import Evaluator, draw
        from ..verify import _run

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
        from ..numeric import Evaluator

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
        from ..numeric import Evaluator

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
        ctx = Diagnosis(self, target, term, shapes, claim_expr, values, truths, envs, scope)
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
        from ..numeric import Evaluator

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
        from ..numeric import Evaluator, to_value

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
        from ..numeric import Evaluator

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
