"""Verification: the same graph built in torch, compared with the symbolic derivation.

At several random float64 points (inside each op's domain; distinct, non-square sizes for the
symbolic dimensions) the parsed graph is run as torch operations and backpropagated by
autograd — leaves' ``.grad`` and every intermediate's ``retain_grad()``. Independently, the
derivation's *symbolic* expressions are evaluated numerically by backstep's own evaluator (no
autograd): every forward step, every backward step, every final gradient. Each pair must agree.
"""

from __future__ import annotations

import math

from .errors import DomainError
from .model import Check, Derivation, Verification
from .numeric import (
    DRAW_SCALES,
    MAX_ELEMENTS,
    Evaluator,
    check_point_size,
    concrete_params,
    draw,
    in_domain,
    nonfinite,
    op_input_domain,
    overflow_error,
    step_text,
    torch_module,
)
from .shapes import concrete, sample_sizes

MAX_DRAWS = 200
RTOL, ATOL = 1e-7, 1e-9
# The error recorded where backstep's value is not finite (inf would not print, nor be valid JSON).
NONFINITE_ERROR = 1e308


def verify(derivation: Derivation, points: int = 3, seed: int = 0, max_elements: int = MAX_ELEMENTS) -> Verification:
    """Compare the derivation with torch autograd at `points` random points.

    Refused (a BackstepError, before anything is allocated) when one point's arrays would hold
    more than `max_elements` numbers in one array or 12.5 × `max_elements` in all; and when the
    function is not finite at any point drawn (after redrawing nearer 0): the input's range, not
    a bug in backstep. Any other disagreement is a failed check in the report."""
    torch = torch_module()
    graph = derivation.graph
    sizes = derivation.sizes or sample_sizes(derivation.dims)
    check_point_size(derivation, sizes, max_elements)
    report = Verification(points=points, dtype="float64", sizes=sizes, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    requires = {v.name: v.requires_grad for v in derivation.variables}
    domains = {v.name: v.domain for v in derivation.variables}
    errors: dict[tuple[str, str], list[float]] = {}  # (kind, name) -> [abs err, rel err, fails]

    def compare(kind: str, name: str, symbolic, autograd) -> None:
        symbolic = torch.broadcast_to(symbolic, autograd.shape) if symbolic.shape != autograd.shape else symbolic
        diff = (symbolic - autograd).abs()
        abs_err = float(diff.max()) if diff.numel() else 0.0
        scale = float(autograd.abs().max()) if autograd.numel() else 0.0
        ok = bool(torch.allclose(symbolic, autograd, rtol=RTOL, atol=ATOL * max(1.0, scale)))
        finite = bool(torch.isfinite(symbolic).all())
        ok = ok and finite
        if not math.isfinite(abs_err):  # (torch's values are finite here: backstep's is not)
            abs_err = NONFINITE_ERROR
        entry = errors.setdefault((kind, name), [0.0, 0.0, 0, 0])
        entry[0] = max(entry[0], abs_err)
        entry[1] = max(entry[1], abs_err / scale if scale else abs_err)
        entry[2] += 0 if ok else 1
        entry[3] += 0 if finite else 1

    by_name = {n.name: n for n in graph.nodes}
    for point in range(points):
        at_given = point == 0 and bool(derivation.at)
        for scale in DRAW_SCALES:
            pending: list[tuple] = []
            leaves, nodes, seed_value, bad = _try_point(
                torch, generator, graph, derivation, sizes, domains, requires, point, scale, by_name, pending
            )
            if bad is None or at_given:
                break
        if bad is not None:
            raise overflow_error(bad, at_given)
        for comparison in pending:
            compare(*comparison)
        if point == 0:
            _record_grad_fns(torch, report, derivation, nodes, by_name)

    def detail(fails: int, infinite: int) -> str:
        if not fails:
            return ""
        where = f" ({infinite} not finite in backstep's value)" if infinite else ""
        return f"{fails} of {points} points differ{where}"

    def checks(kind: str) -> list[Check]:
        return [
            Check(name, fails == 0, abs_err, min(rel_err, NONFINITE_ERROR), kind, detail(fails, infinite))
            for (k, name), (abs_err, rel_err, fails, infinite) in errors.items()
            if k == kind
        ]

    report.forward = checks("forward")
    report.adjoints = checks("adjoint")
    report.gradients = checks("gradient")
    return report


def torch_grad_fn_name(tensor) -> str | None:
    """The name torch gives the autograd node that made `tensor` (None: autograd does not track it)."""
    return tensor.grad_fn.name() if tensor.grad_fn is not None else None


def _record_grad_fns(torch, report: Verification, derivation: Derivation, nodes, by_name) -> None:
    """Each forward step's grad_fn as the installed torch names it. The op table's name is the
    documented expectation; a torch that names a node otherwise (another version's name for a 1-d
    `linear`, say) gets a note, not a failure, and its name is the one shown."""
    for step in derivation.forward:
        tensor = nodes[by_name[step.name].id]
        actual = torch_grad_fn_name(tensor)
        if step.grad_fn is None and actual is None:
            continue
        report.grad_fns.append(Check(step.name, True, 0.0, 0.0, "grad_fn", f"declared {step.grad_fn}, torch {actual}"))
        if not tensor.requires_grad:
            continue  # not tracked here (no gradient needed through it): torch names nothing
        report.grad_fn_names[step.name] = actual
        if actual != step.grad_fn:
            report.notes.append(
                f"torch {torch.__version__} names the grad_fn of {step.name} {actual}, where backstep's op table "
                f"expects {step.grad_fn} (a different name, not a failure)"
            )


def _try_point(torch, generator, graph, derivation, sizes, domains, requires, point, scale, by_name, pending):
    """One point: torch's forward and backward, backstep's own evaluation; the comparisons to make
    go to `pending`. Returns (leaves, nodes, seed value, None), or (…, what is not finite) when
    torch's values, autograd's gradients or backstep's forward values are not all finite there."""
    leaves, nodes = _draw_point(torch, generator, graph, derivation, sizes, domains, requires, point, scale)
    seed_value = (
        torch.ones((), dtype=torch.float64)
        if derivation.seed.is_one
        else draw(torch, generator, concrete(derivation.seed.shape, sizes), "real")
    )
    steps = {step.name: step for step in derivation.forward}
    for n in graph.nodes:
        number = nonfinite(torch, nodes[n.id])
        if number is not None:
            where = f"step {step_text(derivation, steps[n.name])}" if n.name in steps else n.name
            return leaves, nodes, seed_value, f"value {number} at {where}"
    out = nodes[graph.output.id]
    if out.requires_grad:
        out.backward(gradient=seed_value)
    for n in reversed(graph.nodes):
        number = nonfinite(torch, nodes[n.id].grad) if nodes[n.id].requires_grad else None
        if number is not None:
            return leaves, nodes, seed_value, f"value {number} in autograd's gradient of {n.name}"

    env = {name: t.detach() for name, t in leaves.items()}
    env[derivation.seed.name] = seed_value
    evaluator = Evaluator(env, sizes)
    for step in derivation.forward:
        value = evaluator(step.expr)
        number = nonfinite(torch, value)
        if number is not None:
            return leaves, nodes, seed_value, f"value {number} at step {step_text(derivation, step)}"
        env[step.name] = value
        pending.append(("forward", step.name, value, nodes[by_name[step.name].id].detach()))
    for step in derivation.backward:
        shape = concrete(derivation.symbols.table[step.target].shape, sizes)
        value = torch.broadcast_to(evaluator(step.result), shape)
        env[step.target] = value
        tensor = nodes[by_name[step.of].id]
        # A value autograd does not track (the output of a comparison or step) has no .grad.
        if step.partial is None and tensor.requires_grad:
            pending.append(("adjoint", step.of, value, _grad(torch, tensor)))
    # The gradients in terms of the inputs, by an evaluator that knows only the inputs (one for all of them).
    fresh = Evaluator({k: v for k, v in env.items() if k in leaves or k == derivation.seed.name}, sizes)
    for name, grad in derivation.gradients.items():
        value = fresh(grad.expr) if grad.in_inputs else evaluator(grad.expr)
        pending.append(("gradient", name, value, _grad(torch, leaves[name])))
    return leaves, nodes, seed_value, None


def _grad(torch, tensor):
    """The gradient autograd left on a tensor; zeros where autograd never reached it."""
    if tensor.grad is None:
        return torch.zeros_like(tensor)
    return tensor.grad


def _draw_point(torch, generator, graph, derivation, sizes, domains, requires, point: int, scale: float = 1.0):
    """Leaves inside their domains, redrawn until every op's input is inside the op's domain;
    `scale` narrows the plain domains towards 0 (see `draw`)."""
    at = derivation.at if point == 0 and derivation.at else None
    for _ in range(MAX_DRAWS):
        leaves = {}
        for v in graph.variables:
            if at is not None:
                value = torch.tensor(at[v.name], dtype=torch.float64)
            else:
                value = draw(torch, generator, concrete(v.shape, sizes), domains[v.name], sizes, scale)
            leaves[v.name] = value.requires_grad_(requires[v.name])
        nodes, bad = _run(torch, graph, leaves, sizes)
        if bad is None:
            return leaves, nodes
        if at is not None:
            raise DomainError(f"the --at point is outside the domain: {bad}")
    raise DomainError(f"could not draw a point inside every function's domain in {MAX_DRAWS} tries: {bad}")


def const_value(torch, node, sizes):
    """A number as a Python float (so torch names its grad_fn as for a literal); an array as a tensor."""
    value = Evaluator({}, sizes)(node.value)
    return float(value) if not node.shape else value


def _run(torch, graph, leaves, sizes):
    """The forward pass in torch; returns (tensor of each node, None) or (…, what left a domain)."""
    nodes = {}
    for n in graph.nodes:
        if n.kind == "var":
            nodes[n.id] = leaves[n.name]
            continue
        args = []
        for i, a in enumerate(n.inputs):
            value = const_value(torch, a, sizes) if a.is_const else nodes[a.id]
            domain = op_input_domain(n, i)
            if not in_domain(torch, domain, value):
                where = f" (line {n.place.line}, column {n.place.col})" if n.place else ""
                return nodes, f"the input of {n.op.syntax} at {n.name}{where} must be {domain.replace('_', ' ')}"
            args.append(value)
        t = n.op.torch(torch, args, concrete_params(n.params, sizes))
        if t.requires_grad:
            t.retain_grad()
        nodes[n.id] = t
    return nodes, None
