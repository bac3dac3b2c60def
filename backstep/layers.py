"""Layers written by hand, shown as one backward step each (``--compact``).

A student writes the affine layer as ``X @ W + b`` and cross-entropy as softmax, log and a pick
(or max-subtraction, exp, a sum and a log, as Karpathy's exercise does); a textbook derives each
as one step: z̄ = (softmax(z) − onehot(t))/N. Here a *region* of the graph — the forward steps from
some value `z` up to a node `o`, every one of them used only inside the region — is recognised as
an op of the table when it computes the same function of its inputs. Its backward steps are then
replaced by that op's own rule at `o`: one step per input, the op's textbook formula, and the rule
printed beside it is the op's.

Recognition is by value, not by spelling: the region and the op are evaluated at random points
(float64, in the inputs' domains and stretched far beyond them: see SCALES) and must agree to
1e-9. Two different functions agreeing there is a coincidence of measure zero, and a threshold
inside the region (a guard, a clamp) is crossed; the steps are verified against autograd afterwards
in any case (each fused result is an intermediate's adjoint, compared with its `.grad`).

Only ``--compact`` does this: without it every forward step keeps its backward step.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import sympy

from .graph import Graph, Node
from .model import Layer
from .numeric.sampling import size_sets
from .ops import OPS, Op
from .ops.spec import ONE_HOT_ROWS, TARGETS_DOMAIN
from .shapes import ShapeEnv, ShapeMismatch, concrete

# The ops a hand-written region may be recognised as: those whose block says how (Op.hand_written).
LAYER_OPS = tuple(op for op in sorted(OPS.values(), key=lambda op: op.name) if op.hand_written is not None)
MAX_REGION = 24  # forward steps in one region at most (the search stays linear in the graph)
# The points a region is compared with its op at: the inputs' domains drawn as verification draws
# them, then stretched 30 and 1,000 times, so that a threshold inside the region (a guard such as
# clamp(p, min=1e-12), a clamp of the logits) is crossed at some point: the region is then not the
# op, whose rule would be wrong where the threshold acts. A point where the region's value is not
# finite (exp overflowing where the op's stable form does not) is skipped; two must compare.
SCALES = (1.0, 1.0, 30.0, 1000.0)
TOLERANCE = 1e-9


@dataclass
class Region:
    out: Node
    nodes: list[Node]  # the region's op nodes, in topological order (out last)
    inputs: list[Node]  # what it reads from outside: variables, other steps and constants


@dataclass
class Match:
    region: Region
    op: Op
    args: list[Node]  # the op's inputs, in its order (constants included)
    params: dict


def find_layers(graph: Graph, requires: dict[int, bool], domains: dict[str, str]) -> list[Match]:
    """The hand-written layers of the graph, disjoint, the regions nearest the output first."""
    import torch

    consumers: dict[int, list[Node]] = {}
    for n in graph.op_nodes:
        for a in n.inputs:
            consumers.setdefault(a.id, []).append(n)
    fixed = {d for n in graph.nodes for d in n.shape if isinstance(d, int)}
    sets = size_sets(list(graph.dims), fixed)  # two sets of sizes: a region that is the op at one only is not
    taken: set[int] = set()
    found = []
    for out in reversed(graph.op_nodes):
        if out.id in taken or not requires[out.id]:
            continue
        for region in _regions(out, consumers, taken):
            match = _recognise(torch, _with_labels(region, consumers), requires, domains, sets)
            match = match or _recognise(torch, region, requires, domains, sets)
            if match is not None and _fusable(match, consumers, requires):
                found.append(match)
                taken |= {n.id for n in region.nodes}
                break
    return found


def _regions(out: Node, consumers: dict[int, list[Node]], taken: set[int]):
    """The regions that end at `out`, largest first: for each value `z` the region reads, the steps
    between z and out. A step that is used outside the region, or is in another, ends the search."""
    ancestors: list[Node] = []  # op nodes above out, nearest first, up to MAX_REGION
    seen = {out.id}
    frontier = [out]
    while frontier and len(ancestors) < MAX_REGION:
        node = frontier.pop(0)
        ancestors.append(node)
        for a in node.inputs:
            if a.kind == "op" and a.id not in seen:
                seen.add(a.id)
                frontier.append(a)
    within = {n.id for n in ancestors}
    all_nodes = [a for n in ancestors for a in n.inputs if a.kind == "op"]
    candidates = {a.id: a for n in ancestors for a in n.inputs if not a.is_const}
    regions = []
    for z in candidates.values():
        memo = {n.id: False for n in all_nodes if n.id not in within}  # (beyond the search: an input)
        nodes = [n for n in ancestors if _reads(n, z, memo)]
        if len(nodes) < 2 or any(n.id in taken for n in nodes):
            continue
        ids = {n.id for n in nodes}
        if any(c.id not in ids for n in nodes if n is not out for c in consumers.get(n.id, [])):
            continue  # a step used outside the region: its adjoint is needed on its own
        inputs = list({a.id: a for n in nodes for a in n.inputs if a.id not in ids}.values())
        if z not in inputs:
            continue
        nodes.sort(key=lambda n: n.id)
        regions.append(Region(out, nodes, inputs))
    regions.sort(key=lambda r: -len(r.nodes))
    return regions


def _fusable(match: Match, consumers: dict[int, list[Node]], requires: dict[int, bool]) -> bool:
    """Whether the op's steps can stand in for the region's: each input's adjoint comes all from the
    region, or from one edge into it (a partial contribution beside others); not several edges into
    the region and others besides (their partial contributions could not be one step)."""
    ids = {n.id for n in match.region.nodes}
    for a in match.args:
        if a.is_const or not requires[a.id]:
            continue
        inside = sum(1 for n in match.region.nodes for i in n.inputs if i is a)
        outside = sum(1 for c in consumers.get(a.id, []) if c.id not in ids for i in c.inputs if i is a)
        if outside and inside > 1:
            return False
    return True


def _with_labels(region: Region, consumers: dict[int, list[Node]]) -> Region:
    """The region with the one-hot rows it reads made inside it (`onehot(t, C)` used only there): a
    cross-entropy is then of the class indices t, as the textbook writes it, not of onehot(t)."""
    ids = {n.id for n in region.nodes}
    made = [
        a
        for a in region.inputs
        if a.kind == "op"
        and a.op.makes == ONE_HOT_ROWS
        and a.inputs[0].kind == "var"
        and all(c.id in ids for c in consumers.get(a.id, []))
    ]
    if not made:
        return region
    inputs = [a for a in region.inputs if a not in made]
    inputs += [m.inputs[0] for m in made if m.inputs[0] not in inputs]
    return Region(region.out, sorted(region.nodes + made, key=lambda n: n.id), inputs)


def _reads(node: Node, z: Node, memo: dict) -> bool:
    """Whether node's value depends on z."""
    if node.id in memo:
        return memo[node.id]
    memo[node.id] = result = any(a is z or (a.kind == "op" and _reads(a, z, memo)) for a in node.inputs)
    return result


def _recognise(torch, region: Region, requires, domains, sets) -> Match | None:
    """The first op of LAYER_OPS that computes what the region does, with its arguments, or None."""
    variables = [a for a in region.inputs if not a.is_const]
    if not any(requires[a.id] for a in variables):
        return None
    if any(n.op.has_thresholds for n in region.nodes):
        return None  # a guard or a kink inside: equal near 0, perhaps not where it acts
    constants = [a for a in region.inputs if a.is_const]
    ops_inside = {n.op.name for n in region.nodes}
    for op in LAYER_OPS:
        if not ops_inside & op.hand_written.made_of:
            continue  # (a cheap test first: the region has none of the ops the layer is made of)
        for args, params in _candidates(op, variables, constants):
            if not all(_in_op_domain(op, i, a, domains, requires) for i, a in enumerate(args)):
                continue
            try:
                shape = op.shape(ShapeEnv(), [a.shape for a in args], params)
            except (ShapeMismatch, ValueError, TypeError, KeyError, IndexError):
                continue
            if tuple(shape) != tuple(region.out.shape):
                continue
            if _same_function(torch, region, op, args, params, domains, sets):
                return Match(region, op, args, params)
    return None


def _candidates(op: Op, variables: list[Node], constants: list[Node]):
    """(arguments, parameters) to try: the region's variables in every order, with the parameter
    values the op's block proposes (eps among the region's small positive constants)."""
    if len(variables) != op.arity:
        return
    small = sorted({float(c.value) for c in constants if c.value.is_number and 0 < float(c.value) < 0.01})
    for args in itertools.permutations(variables):
        for params in op.hand_written.params(tuple(len(a.shape) for a in args), small):
            yield list(args), {**op.params, **params}


# cross_entropy's targets are class indices or rows summing to 1, which its rule relies on: a region's
# input is taken as them only where it is known to be (a variable so declared, onehot's or softmax's rows).
TARGET_DOMAINS = ("class_index", "probability", ONE_HOT_ROWS)


def _in_op_domain(op: Op, i: int, arg: Node, domains: dict[str, str], requires: dict[int, bool]) -> bool:
    """Whether arg is known to lie where the op's input i must (any value, where it declares nothing).
    Targets that need a gradient are refused: the region is compared with the op on the targets'
    domain only (rows summing to 1), where equal values do not make equal gradients."""
    declared = op.domains[i] if i < len(op.domains) else None
    if declared is not TARGETS_DOMAIN:
        return True
    if requires[arg.id]:
        return False
    if arg.kind == "var":
        return domains.get(arg.name, "real").startswith(TARGET_DOMAINS)
    return arg.kind == "op" and arg.op.makes in TARGET_DOMAINS


def _draw_domain(op: Op, args: list[Node], a: Node, domains: dict[str, str]) -> str:
    """Where to draw the region's input `a`: its own domain (a variable), the domain the op's rule
    needs (an op making targets), or anywhere."""
    if a.kind == "var":
        return domains.get(a.name, "real")
    if a in args and a.kind == "op" and a.op.makes is not None:
        i = args.index(a)
        if i < len(op.domains) and op.domains[i] is TARGETS_DOMAIN:
            return a.op.makes
    return "real"


def _same_function(torch, region: Region, op: Op, args, params, domains, sets) -> bool:
    """Whether the region and op(args, params) agree at the points of SCALES, at each set of sizes."""
    from .numeric.evaluate import concrete_params, const_value
    from .numeric.sampling import draw

    generator = torch.Generator().manual_seed(20261201)
    compared = 0
    for sizes, scale in itertools.product(sets, SCALES):
        values = {}
        for a in region.inputs:
            if a.is_const:
                values[a.id] = const_value(torch, a, sizes)
                continue
            domain = _draw_domain(op, args, a, domains)
            values[a.id] = draw(torch, generator, concrete(a.shape, sizes), domain, sizes, scale)
        try:
            with torch.no_grad():
                for n in region.nodes:
                    inputs = [const_value(torch, a, sizes) if a.is_const else values[a.id] for a in n.inputs]
                    values[n.id] = n.op.torch(torch, inputs, concrete_params(n.params, sizes))
                want = values[region.out.id]
                got = op.torch(torch, [values[a.id] for a in args], concrete_params(params, sizes))
        except Exception:  # noqa: BLE001 (a region op refusing the values: not this layer)
            return False
        if not torch.is_tensor(got) or tuple(got.shape) != tuple(want.shape):
            return False
        if not torch.isfinite(want).all():
            continue
        if not torch.allclose(got.to(torch.float64), want.to(torch.float64), rtol=TOLERANCE, atol=TOLERANCE):
            return False
        compared += 1
    return compared >= 2 * len(sets)


# --- the steps -----------------------------------------------------------------------------------


def fuse_layers(sweep, requires: dict[int, bool], simplify_step) -> None:
    """Replace the backward steps of each hand-written layer by the steps of its op (in place on
    the sweep: `sweep.steps`, renumbered)."""
    matches = find_layers(sweep.graph, requires, sweep.domains)
    for match in matches:
        _fuse(sweep, match, requires, simplify_step)
    for number, step in enumerate(sweep.steps, start=1):
        step.index = number


def _fuse(sweep, match: Match, requires, simplify_step) -> None:
    region, op = match.region, match.op
    inside = {n.name for n in region.nodes}
    internal = inside - {region.out.name}
    steps = sweep.steps
    replaced = [s for s in steps if s.node in inside or s.of in internal]
    targets: dict[int, tuple[str, int | None]] = {}  # each argument's id -> (its target, partial)
    dropped_sums = []
    for a in match.args:
        if a.is_const or not requires[a.id]:
            continue
        from_region = [s for s in replaced if s.of == a.name and s.kind == "rule"]
        elsewhere = [s for s in steps if s.of == a.name and s.kind == "rule" and s not in from_region]
        if not elsewhere:  # all of a's adjoint comes from the layer: the layer's step defines it
            total = sweep.adjoint[a.id]
            targets[a.id] = (total.name, None)
            dropped_sums += [s for s in steps if s.of == a.name and s.kind == "sum"]
        elif len(from_region) == 1:
            targets[a.id] = (from_region[0].target, from_region[0].partial)
        else:
            return  # several contributions from the layer and others besides: left as the steps are
    node = replace(region.out, op=op, inputs=list(match.args), params=dict(match.params))
    g_sym = sweep.adjoint[region.out.id]
    layer = Layer(
        tuple(n.name for n in region.nodes),
        op.sympy([sweep.symbol_of(a) for a in match.args], [a.shape for a in match.args], match.params),
    )
    fused = []
    avoid = sweep.names_in_document()
    for i in reversed(range(len(match.args))):
        a = match.args[i]
        if a.id not in targets:
            continue
        target, partial = targets[a.id]
        with sympy.evaluate(False):
            step = sweep.rule_step(node, i, g_sym, target, partial)
        step.applied, step.result, step.unsimplified = simplify_step(step.applied, sweep.simplify_seconds)
        step.general = sweep.general_rule(node, i)
        step.rule = sweep.general_rule(node, i, avoid)
        step.layer = layer
        fused.append(step)
    gone = {id(s) for s in replaced + dropped_sums}
    first = min(k for k, s in enumerate(steps) if id(s) in gone)
    kept = [s for s in steps if id(s) not in gone]
    before = sum(1 for s in steps[:first] if id(s) not in gone)
    sweep.steps[:] = kept[:before] + fused + kept[before:]
