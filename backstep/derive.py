"""Reverse-mode derivation over the graph: the textbook algorithm, written out.

1. Every op node gets a name and a forward step ``v = op(inputs)``.
2. The output is seeded: ȳ = 1 for a scalar, else an upstream gradient of its shape.
3. Nodes are visited in reverse topological order. A node whose value feeds several consumers
   first gets a *sum* step (the multivariable chain rule). Then, for each input that needs a
   gradient, the op's backward rule from the op table gives that input's contribution; an
   elementwise op sums its contribution back over broadcast axes.
4. Each step keeps the general rule, the rule applied to these names and the simplified
   result, in terms of named intermediates: the work is linear in the graph size.
5. The final gradients are the leaves' adjoints with every name expanded back into the inputs
   (unless that would make them too large to read), and in named form (backstep.named): in terms
   of the program's named intermediates and their adjoints, as the documents show them.
"""

from __future__ import annotations

import sympy
from sympy import Expr

from . import symbolic as sb
from .budget import BudgetExpired, TimeBudget
from .errors import DomainError, UsageError
from .facade import Derivation
from .graph import Graph, Node
from .indices import INDEX, INDEX_ASSUMPTION, assumed_domains
from .model import BackwardStep, ForwardStep, Gradient, NamedAdjoint, Rule, Seed, Symbols, Variable
from .named import named_forms
from .ops import ONE_HOT_ROWS, Ctx, sum_to
from .parser import Limits, deep_recursion, parse
from .printing import Printer, bar_latex, bar_text, latex_name
from .simplify import ESTIMATE_MARGIN, TooLarge, _estimated_size, _expand, simplify, simplify_step, tidy

# Letters a general rule uses in place of its own where those are the program's names.
SPARE_LOWER = ("u", "w", "p", "q", "r", "s", "f", "k", "m", "e")
SPARE_UPPER = ("P", "Q", "R", "S", "U", "V", "M", "N", "G", "H")

# A final gradient larger than this many tree nodes stays in terms of named intermediates.
MAX_EXPANDED_SIZE = 4000

ASSUMPTIONS = (
    "real",
    "positive",
    "nonnegative",
    "nonzero",
    "spd",
    "symmetric",
    "orthogonal",
    "invertible",
    ONE_HOT_ROWS,
    "probability",
)


def derive(
    source: str,
    shapes: dict[str, tuple] | None = None,
    wrt: list[str] | str | None = None,
    assume: dict[str, str] | None = None,
    limits: Limits | None = None,
    verify: bool = True,
    points: int = 3,
    seed: int = 0,
    at: dict | None = None,
    expand: bool = False,
    compact: bool = False,
) -> Derivation:
    """Derive the backpropagation of `source` (a formula or a program).

    shapes: {"X": ("n", "d"), "b": (5,)}; wrt: the variables that need gradients (default all);
    assume: {"x": "positive"}; verify: check every step against torch autograd, as the CLI does
    (``verify=False`` skips it);
    at: {"x": 2.0} numbers for a hand calculation (arrays as nested lists or numpy arrays);
    expand: show the final gradients written out in the inputs, not in named form (both are kept:
    ``Gradient.expr`` and ``Gradient.named``);
    compact: drop the pass-through backward steps (a result that is just another adjoint) and show
    each layer written by hand as its op's one step per input (backstep.layers), as ``--compact``
    does; the steps kept are the ones verified.
    """
    if isinstance(wrt, str):
        wrt = [w.strip() for w in wrt.split(",") if w.strip()]
    with deep_recursion():
        limits = limits or Limits()
        data_shapes = None
        if at:  # the arrays' shapes are the variables' shapes
            from .numeric.at import value_shapes

            data_shapes = value_shapes(at, limits.max_elements)
        graph = parse(source, shapes or {}, limits, data_shapes=data_shapes)
        derivation = build_derivation(graph, wrt, assume or {}, limits.simplify_seconds, layers=compact)
        derivation.expand = expand
        if compact:  # before the numbers and the check, so that both are of the steps shown
            from .compact import compact as compact_steps

            compact_steps(derivation)
        if at is not None:
            from .numeric import evaluate_at

            evaluate_at(derivation, at, seed=seed, max_elements=limits.max_elements)
        if verify:
            derivation.verify(points=points, seed=seed, max_elements=limits.max_elements)
    return derivation


def build_derivation(
    graph: Graph,
    wrt: list[str] | None,
    assume: dict[str, str],
    simplify_seconds: float | None = None,
    layers: bool = False,
) -> Derivation:
    """The derivation of a parsed graph; `layers`: hand-written layers as one op step each (--compact)."""
    names = [v.name for v in graph.variables]
    if wrt:
        unknown = [w for w in wrt if w not in names]
        if unknown:
            raise UsageError(
                f"--wrt names {', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not a variable "
                f"of the formula (its variables: {', '.join(names)})"
            )
    assume = {**graph.domains, **assume}  # --assume overrides what the program declares
    for name, kind in assume.items():
        if name not in names:
            raise UsageError(f"--assume names {name}, which is not a variable (its variables: {', '.join(names)})")
        if kind not in ASSUMPTIONS and not kind.startswith(INDEX_ASSUMPTION):
            known = ", ".join((*ASSUMPTIONS, f"{INDEX_ASSUMPTION}:V"))
            raise UsageError(f"--assume {name}={kind}: unknown domain (known: {known})")
    assume = assumed_domains(graph, assume, infer_domains(graph))
    wanted = set(wrt) if wrt else set(names)
    seconds = Limits.simplify_seconds if simplify_seconds is None else simplify_seconds
    return _Sweep(graph, wanted, assume, seconds, chosen=bool(wrt), layers=layers).run()


class _Sweep:
    def __init__(
        self,
        graph: Graph,
        wanted: set[str],
        assume: dict[str, str],
        simplify_seconds: float,
        chosen: bool = False,
        layers: bool = False,
    ):
        self.graph = graph
        self.layers = layers
        self.simplify_seconds = simplify_seconds
        # without --wrt, the targets of loss functions are constants, as in PyTorch
        self.wanted = wanted if chosen else (wanted - loss_targets(graph)) or wanted
        self.assume = assume
        self.symbols = Symbols()
        self.taken = {n.name for n in graph.nodes} | set(graph.dims)
        self.sym: dict[int, Expr] = {}  # node id -> its symbol (or number, for constants)
        self.steps: list[BackwardStep] = []
        self.adjoint_of: dict[str, str] = {}  # adjoint symbol -> the name it is the adjoint of
        self.rule_count = 0
        self._expanded: dict[Expr, Expr] = {}  # memo of expand(), shared by all gradients
        self._expanded_sizes: dict[Expr, int] = {}
        self._rules: dict[tuple, Rule] = {}  # general rules, one per op, input and shapes
        self._definitions: dict[Expr, Expr] = {}  # name -> definition, forward and backward
        self._estimates: dict[Expr, int] = {}  # expanded tree sizes before simplification
        self.expansions_timed_out = False  # writing some result out in the inputs ran out of time
        self.named_adjoints: list[NamedAdjoint] = []

    # --- names ---------------------------------------------------------------------------------

    def fresh(self, base: str) -> str:
        name = base
        while name in self.taken:
            name += "_"
        self.taken.add(name)
        return name

    def symbol_of(self, node: Node) -> Expr:
        if node.is_const:
            return node.value
        return self.sym[node.id]

    # --- the sweep -----------------------------------------------------------------------------

    def run(self) -> Derivation:
        g = self.graph
        inferred = infer_domains(g)
        self.domains = {v.name: self.assume.get(v.name) or inferred[v.name] for v in g.variables}
        requires = self.requires_grad()
        for node in g.nodes:
            self.sym[node.id] = sb.var(node.name)
            self.symbols.add(node.name, node.shape, node.name, latex_name(node.name))
        with sympy.evaluate(False):  # forward steps as the user wrote them: `x x`, not `x²`
            self.forward = forward = [self.forward_step(n) for n in g.op_nodes]
        for step, node in zip(forward, g.op_nodes):
            self._definitions[self.sym[node.id]] = step.expr
        out = g.output
        self.seed = seed = self.make_seed(out)

        # How many contributions each node will receive: one per edge into a consumer.
        edges_into: dict[int, int] = {}
        for n in g.op_nodes:
            for a in n.inputs:
                if not a.is_const and requires[a.id]:
                    edges_into[a.id] = edges_into.get(a.id, 0) + 1
        contributions: dict[int, list[str]] = {}
        adjoint: dict[int, Expr] = {out.id: sympy.Integer(1) if seed.is_one else sb.var(seed.name)}
        self.adjoint = adjoint

        def finish(node: Node) -> None:
            """Define the node's adjoint from its contributions (a sum when there are several)."""
            if node.id in adjoint:
                return
            parts = contributions.get(node.id, [])
            if len(parts) == 1:
                adjoint[node.id] = sb.var(parts[0])  # the one rule step defined it directly
                return
            name = self.adjoint_symbol(node)
            terms = [sb.var(p) for p in parts]
            self.steps.append(
                BackwardStep(
                    index=len(self.steps) + 1,
                    target=name,
                    of=node.name,
                    kind="sum",
                    node=None,
                    op=None,
                    rule=None,
                    applied=sympy.Add(*terms, evaluate=False),
                    result=sympy.Add(*terms),
                )
            )
            adjoint[node.id] = sb.var(name)

        # The sweep builds each step's rule *as applied*, unevaluated (one evaluate(False) block:
        # each one clears SymPy's cache). Steps refer to earlier adjoints by their symbols only,
        # so simplifying them afterwards, one by one, gives the same results.
        rule_steps: list[tuple[BackwardStep, Node, int]] = []
        with sympy.evaluate(False):
            for node in reversed(g.op_nodes):
                if not requires[node.id]:
                    continue
                finish(node)
                g_sym = adjoint[node.id]
                for i in reversed(range(len(node.inputs))):
                    inp = node.inputs[i]
                    if inp.is_const or not requires[inp.id]:
                        continue
                    k = len(contributions.get(inp.id, [])) + 1
                    several = edges_into[inp.id] > 1
                    target = self.adjoint_symbol(inp, partial=k if several else None)
                    contributions.setdefault(inp.id, []).append(target)
                    step = self.rule_step(node, i, g_sym, target, k if several else None)
                    self.steps.append(step)
                    rule_steps.append((step, node, i))
            for v in g.variables:
                if requires[v.id]:
                    finish(v)
        for step, node, i in rule_steps:
            step.applied, step.result, step.unsimplified = simplify_step(step.applied, self.simplify_seconds)
            _refuse_undefined(step.result, f"step {step.index} ({step.target})", node, g.source)
            step.general = self.general_rule(node, i)
            step.rule = self.general_rule(node, i, self.names_in_document())
        for step in self.steps:
            if step.kind == "sum":
                step.result = sympy.Add(*step.applied.args)
        if self.layers:
            from .layers import fuse_layers

            fuse_layers(self, requires, simplify_step)
            for step in (s for s in self.steps if s.layer is not None):
                _refuse_undefined(step.result, f"step {step.index} ({step.target})", None, g.source)

        gradients = self.final_gradients(adjoint, seed)
        output_expr = self.output_expression(out)
        named = [(f"the value of {out.name}", output_expr)] + [
            (f"the gradient of {n}", d.expr) for n, d in gradients.items()
        ]
        for what, expr in named:
            if isinstance(expr, sympy.Basic) and expr.has(*UNDEFINED):
                _refuse_undefined(expr, what, self.first_undefined(), g.source)
        notes = self.notes(gradients)
        variables = [Variable(v.name, v.shape, requires[v.id], self.domains[v.name]) for v in g.variables]
        edges = [(a.name, n.name) for n in g.op_nodes for a in n.inputs if not a.is_const]
        return Derivation(
            source=g.source,
            output=out.name,
            output_shape=out.shape,
            output_expr=output_expr,
            variables=variables,
            dims=g.dims,
            forward=forward,
            seed=seed,
            backward=self.steps,
            gradients=gradients,
            symbols=self.symbols,
            edges=edges,
            adjoint_of=self.adjoint_of,
            notes=notes,
            program=list(g.statements),
            named_adjoints=self.named_adjoints,
            graph=g,
        )

    def notes(self, gradients: dict[str, Gradient]) -> list[str]:
        """The parse's notes, and what is shown as built because simplifying or expanding ran out of time."""
        notes = list(self.graph.notes)
        for step in self.steps:
            if step.unsimplified:
                why = step.unsimplified
                notes.append(f"step {step.index} ({step.target}) is shown as built, not simplified: {why}")
        for grad in gradients.values():
            if grad.unsimplified:
                notes.append(f"the gradient of {grad.name} is shown as built, not simplified: {grad.unsimplified}")
        if self.expansions_timed_out:
            notes.append(
                "some results are left in terms of the named steps: writing them out in the inputs took longer "
                f"than {self.simplify_seconds:g} s (--simplify-budget)"
            )
        return notes

    def first_undefined(self) -> Node | None:
        """The first op whose value, written in the inputs, SymPy finds undefined (`x - x` under a
        log): the place to show when an expanded gradient is."""
        for node in self.graph.op_nodes:
            full = self.expand(self.sym[node.id])
            if full is not None and full.has(*UNDEFINED):
                return node
        return None

    def output_expression(self, out: Node) -> Expr:
        """The output in terms of the inputs, or its own definition when that is too large."""
        full = self.expand(self.sym[out.id])
        if full is not None:  # (0 is a full answer too)
            return full
        return self._definitions.get(self.sym[out.id], self.sym[out.id])

    def requires_grad(self) -> dict[int, bool]:
        """PyTorch's requires_grad: a wanted leaf, or an op with such an input."""
        req: dict[int, bool] = {}
        for n in self.graph.nodes:
            if n.kind == "var":
                # Integer class indices cannot carry a gradient (torch: a LongTensor).
                req[n.id] = n.name in self.wanted and not self.domains[n.name].startswith("class_index")
            else:
                req[n.id] = any(not a.is_const and req[a.id] for a in n.inputs)
        return req

    def forward_step(self, node: Node) -> ForwardStep:
        args = [self.symbol_of(a) for a in node.inputs]
        expr = node.op.sympy(args, [a.shape for a in node.inputs], node.params)
        ranks = tuple(len(a.shape) for a in node.inputs)
        consts = tuple(a.is_const for a in node.inputs)
        return ForwardStep(
            name=node.name,
            op=node.op.name,
            expr=expr,
            shape=node.shape,
            grad_fn=node.op.grad_fn_name(ranks, consts, node.params),
            line=node.place.line if node.place else None,
            col=node.place.col if node.place else None,
        )

    def make_seed(self, out: Node) -> Seed:
        name = self.fresh(f"grad_{out.name}")
        self.symbols.add(name, out.shape, bar_text(out.name), bar_latex(out.name))
        self.adjoint_of[name] = out.name
        return Seed(name=name, shape=out.shape, is_one=out.shape == ())

    def adjoint_symbol(self, node: Node, partial: int | None = None) -> str:
        base = f"grad_{node.name}" + (f"_{partial}" if partial else "")
        name = self.fresh(base)
        text, latex = bar_text(node.name), bar_latex(node.name)
        if partial:
            text += f"⁽{partial}⁾".translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
            latex = f"{{{latex}^{{({partial})}}}}"  # braced: a later ᵀ or power stays valid LaTeX
        self.symbols.add(name, node.shape, text, latex)
        self.adjoint_of[name] = node.name
        return name

    def rule_step(self, node: Node, i: int, g_sym: Expr, target: str, partial: int | None) -> BackwardStep:
        op = node.op
        inp = node.inputs[i]
        shapes = tuple(a.shape for a in node.inputs)
        ctx = Ctx(
            g_sym, tuple(self.symbol_of(a) for a in node.inputs), self.sym[node.id], shapes, node.shape, node.params
        )
        applied = op.backward[i](ctx)
        if op.elementwise and inp.shape != node.shape:
            applied = sum_to(applied, node.shape, inp.shape)
        # result and rule are filled in after the sweep, outside evaluate(False)
        return BackwardStep(
            index=len(self.steps) + 1,
            target=target,
            of=inp.name,
            kind="rule",
            node=node.name,
            op=op.name,
            rule=None,
            applied=applied,
            result=applied,
            partial=partial,
            input_index=i,
        )

    def names_in_document(self) -> set[str]:
        """Every name the derivation prints for the program: its variables, intermediates and dimensions."""
        return {n.name for n in self.graph.nodes} | {str(d) for d in self.graph.dims}

    def general_rule(self, node: Node, i: int, avoid: set[str] | None = None) -> Rule:
        """The op's rule for input i with generic names (a, b, y), at this node's shapes, with the sum
        over broadcast axes that the node's shapes need. With `avoid` (the program's names), a
        generic letter that is one of them is replaced by one that is not (`u = exp(s) ⇒ s̄ = ū u`
        where the program has x and y): a rule never reads as a claim about the program's own
        variables."""
        op = node.op
        letters = self.rule_letters(node, avoid or set())
        key = (
            op.name,
            i,
            tuple(str(a.value) if a.is_const else a.shape for a in node.inputs),
            node.shape,
            tuple(sorted(node.params.items())),
            tuple(sorted(letters.items())),
        )
        if key in self._rules:
            return self._rules[key]
        self._rules[key] = rule = self._make_rule(node, i, letters)
        return rule

    def rule_letters(self, node: Node, avoid: set[str]) -> dict[str, str]:
        """Each generic role of the op's rule (`a`, `y`) -> the letter it is printed as."""
        op = node.op
        roles = [op.arg_names[j] if j < len(op.arg_names) else f"x{j}" for j in range(len(node.inputs))]
        roles.append(op.out_name)
        letters: dict[str, str] = {}
        used = set(roles) - avoid
        for role in roles:
            if role not in avoid:
                letters[role] = role
                continue
            pool = SPARE_UPPER if role[:1].isupper() else SPARE_LOWER
            spare = next((c for c in pool if c not in avoid and c not in used), None)
            if spare is None:  # every spare letter is a program name: number the role instead
                spare = next(f"{role}{k}" for k in range(1, 10_000) if f"{role}{k}" not in avoid | used)
            letters[role] = spare
            used.add(spare)
        return letters

    def _make_rule(self, node: Node, i: int, letters: dict[str, str]) -> Rule:
        op = node.op
        self.rule_count += 1
        tag = f"_r{self.rule_count}_"
        args = []
        for j, a in enumerate(node.inputs):
            if a.is_const:
                args.append(a.value)
                continue
            role = op.arg_names[j] if j < len(op.arg_names) else f"x{j}"
            shown = letters.get(role, role)
            self.symbols.add(tag + role, a.shape, shown, latex_name(shown))
            args.append(sb.var(tag + role))
        out = letters.get(op.out_name, op.out_name)
        # the output's internal name: y (which orders its adjoint first in a product, ȳ y), unless an
        # input's role is y (pick(P, y)), whose symbol it would then be
        o = "_out" if "y" in op.arg_names[: len(node.inputs)] else "y"
        self.symbols.add(tag + o, node.shape, out, latex_name(out))
        self.symbols.add(tag + "g" + o, node.shape, bar_text(out), bar_latex(out))
        role = op.arg_names[i] if i < len(op.arg_names) else f"x{i}"
        shown = letters.get(role, role)
        self.symbols.add(tag + "g" + role, node.inputs[i].shape, bar_text(shown), bar_latex(shown))
        self.adjoint_of[tag + "g" + o] = tag + o
        self.adjoint_of[tag + "g" + role] = tag + role
        shapes = tuple(a.shape for a in node.inputs)
        y = sb.var(tag + o)
        rhs = op.backward[i](Ctx(sb.var(tag + "g" + o), tuple(args), y, shapes, node.shape, node.params))
        if op.elementwise and node.inputs[i].shape != node.shape:
            rhs = sum_to(rhs, node.shape, node.inputs[i].shape)  # the rule the step's result comes from
        forward = op.sympy(args, shapes, node.params)
        return Rule(y, forward, sb.var(tag + "g" + role), rhs)

    # --- final gradients -----------------------------------------------------------------------

    def final_gradients(self, adjoint: dict[int, Expr], seed: Seed) -> dict[str, Gradient]:
        definitions = {sb.var(s.target): s.result for s in self.steps}
        self._definitions.update(definitions)
        out = {}
        for v in self.graph.variables:
            if v.id not in adjoint:
                continue
            named = adjoint[v.id]
            full = self.expand(named)
            if full is None:
                out[v.name] = Gradient(v.name, definitions.get(named, named), v.shape, in_inputs=False)
            else:
                expr, why = simplify(full, self.simplify_seconds, rebuild=False)
                out[v.name] = Gradient(v.name, expr, v.shape, unsimplified=why)
        self.add_named_forms(out, adjoint)
        return out

    def add_named_forms(self, gradients: dict[str, Gradient], adjoint: dict[int, Expr]) -> None:
        """Each gradient's named form (None where it would be in the inputs anyway), and the adjoints they refer to."""
        named = {i: a.name for i, a in adjoint.items() if a.is_Symbol}  # (the adjoint of a scalar output is 1)
        user = [n for n in self.graph.op_nodes if n.user_named]
        keep = {n.name for n in user} | {named[n.id] for n in user if n.id in named}
        leaves = {v.name: named[v.id] for v in self.graph.variables if v.name in gradients and v.id in named}
        forms = named_forms(
            self.forward,
            self.steps,
            keep,
            list(leaves.values()),
            self.simplify_seconds,
            _expand,
            tidy,
            Printer("text", self.symbols),
        )
        if forms is None:
            self.expansions_timed_out = True
            return
        inputs = {v.name for v in self.graph.variables} | {self.seed.name}
        for name, symbol in leaves.items():
            form = forms.gradients.get(symbol)
            g = gradients[name]
            if form is None or form == g.expr or {s.name for s in form.free_symbols} <= inputs and g.in_inputs:
                continue  # written in the inputs anyway: the expanded form is the one to show
            g.named = form
        used = set()
        for g in gradients.values():
            if g.named is not None:
                used |= {s.name for s in g.named.free_symbols}
        shown = {}
        for symbol, form in reversed(forms.adjoints.items()):  # those a shown form refers to, transitively
            if symbol in used:
                shown[symbol] = form
                used |= {s.name for s in form.free_symbols}
        partial = {s.target: s.partial for s in self.steps}
        self.named_adjoints = [
            NamedAdjoint(
                symbol, self.adjoint_of[symbol], shown[symbol], self.symbols.table[symbol].shape, partial.get(symbol)
            )
            for symbol in forms.adjoints
            if symbol in shown
        ]

    def expand(self, expr: Expr) -> Expr | None:
        """Every named intermediate and adjoint replaced by its definition, recursively;
        None when the result would be too large to read."""
        if _estimated_size(expr, self._definitions, self._estimates) > ESTIMATE_MARGIN * MAX_EXPANDED_SIZE:
            return None  # far too large: not worth building (most gradients of a deep network)
        budget = TimeBudget(self.simplify_seconds)  # SymPy's constructors can take long too (tanh of tanh …)
        try:
            with budget:
                full = _expand(expr, self._definitions, self._expanded, MAX_EXPANDED_SIZE, self._expanded_sizes)
        except TooLarge:
            return None
        except BudgetExpired as err:
            if err.budget is not budget:
                raise
            self.expansions_timed_out = True
            return None
        size = self._expanded_sizes.get(expr, 1)  # _expand measured it (a leaf has none: 1)
        return full if size <= MAX_EXPANDED_SIZE else None


UNDEFINED = (sympy.zoo, sympy.nan, sympy.oo, -sympy.oo, sympy.I)


def _refuse_undefined(expr: Expr, what: str, node: Node | None, source: str) -> None:
    """A derivative that SymPy works out to ∞, NaN or a complex number (`log(0)` of a constant that
    is 0 only when simplified, `x/(x - x)`) is refused at the op it comes from: it has no finite
    real value to print or verify."""
    if isinstance(expr, sympy.Basic) and expr.has(*UNDEFINED):
        kind = "complex" if expr.has(sympy.I) and not expr.has(*UNDEFINED[:4]) else "infinite or undefined"
        place = node.place if node is not None else None
        raise DomainError(
            f"{what} is {kind} (a division by zero, or a log or power outside its domain): "
            f"the formula has no finite real {'value' if what.startswith('the value') else 'derivative'} here",
            place,
            source,
        )


def loss_targets(graph: Graph) -> set[str]:
    """The variables used only as the targets of loss functions (each op's `targets`: cross-entropy's,
    mse's second argument, onehot's class labels). PyTorch's targets do not require grad: without
    --wrt they get no gradient."""
    targets: set[str] = set()
    others: set[str] = set()
    for node in graph.op_nodes:
        for i, a in enumerate(node.inputs):
            if a in graph.variables:
                (targets if i in node.op.targets else others).add(a.name)
    return targets - others


def infer_domains(graph: Graph) -> dict[str, str]:
    """Where each variable is drawn, from the ops that use it: positive if a log/sqrt/… needs it,
    SPD under logdet, invertible under inv/det, class indices or probabilities as targets.
    One backward pass over the graph for all variables."""
    demands: dict[int, set[str]] = {}
    for node in reversed(graph.op_nodes):
        wants_here = demands.get(node.id, set())
        for i, a in enumerate(node.inputs):
            if a.is_const:
                continue
            need = set()
            declared = node.op.domain[i] if node.op.domain else None
            if declared == "pow_base":
                exponent = node.inputs[1]
                if not (exponent.is_const and exponent.value.is_integer):
                    need.add("positive")
                elif exponent.value.is_negative:
                    need.add("nonzero")
            elif declared == "targets":
                logits = node.inputs[0].shape
                need.add(f"class_index:{logits[-1]}" if len(a.shape) == len(logits) - 1 else "probability")
            elif declared is not None and (demanded := node.op.domains[i].demand(node, i) or "").startswith(INDEX):
                need.add(demanded)  # integer indices: onehot's classes, an embedding table's rows …
            elif declared in ("positive", "nonzero", "spd", "invertible"):
                need.add(declared)
            if "positive" in wants_here and node.op.positive_through:
                need.add("positive")
            if need:
                demands.setdefault(a.id, set()).update(need)
    return {v.name: _domain(demands.get(v.id, set())) for v in graph.variables}


def _domain(wants: set[str]) -> str:
    for kind in ("spd", "invertible", "probability"):
        if kind in wants:
            return kind
    for kind in wants:
        if kind.startswith("class_index"):
            return kind
    if "positive" in wants:
        return "positive"
    return "nonzero" if "nonzero" in wants else "real"
