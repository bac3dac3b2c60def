"""Verification: the same graph built in torch, compared with the symbolic derivation.

At several random float64 points (inside each op's domain; distinct, non-square sizes for the
symbolic dimensions) the parsed graph is run as torch operations and backpropagated by
autograd — leaves' ``.grad`` and every intermediate's ``retain_grad()``. Independently, the
derivation's *symbolic* expressions are evaluated numerically by backstep's own evaluator (no
autograd): every forward step, every backward step, every final gradient. Each pair must agree.
"""

from __future__ import annotations

from .errors import DomainError
from .model import Check, Derivation, Verification
from .numeric import Evaluator, concrete_params, draw, in_domain, op_input_domain, torch_module
from .shapes import SAMPLE_SIZES, concrete

MAX_DRAWS = 200
RTOL, ATOL = 1e-7, 1e-9


def sample_sizes(dims: list[str], fixed: dict[str, int] | None = None) -> dict[str, int]:
    sizes = dict(fixed or {})
    free = iter([s for s in SAMPLE_SIZES if s not in sizes.values()] + list(range(16, 100)))
    for d in dims:
        if d not in sizes:
            sizes[d] = next(free)
    return sizes


def verify(derivation: Derivation, points: int = 3, seed: int = 0) -> Verification:
    torch = torch_module()
    graph = derivation.graph
    sizes = derivation.sizes or sample_sizes(derivation.dims)
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
        ok = ok and bool(torch.isfinite(symbolic).all())
        entry = errors.setdefault((kind, name), [0.0, 0.0, 0])
        entry[0] = max(entry[0], abs_err)
        entry[1] = max(entry[1], abs_err / scale if scale else abs_err)
        entry[2] += 0 if ok else 1

    for point in range(points):
        leaves, nodes = _draw_point(torch, generator, graph, derivation, sizes, domains, requires, point)
        out = nodes[graph.output.id]
        seed_value = (
            torch.ones((), dtype=torch.float64)
            if derivation.seed.is_one
            else draw(torch, generator, concrete(derivation.seed.shape, sizes), "real")
        )
        if out.requires_grad:
            out.backward(gradient=seed_value)

        env = {name: t.detach() for name, t in leaves.items()}
        env[derivation.seed.name] = seed_value
        evaluator = Evaluator(env, sizes)
        by_name = {n.name: n for n in graph.nodes}
        for step in derivation.forward:
            value = evaluator(step.expr)
            env[step.name] = value
            compare("forward", step.name, value, nodes[by_name[step.name].id].detach())
        for step in derivation.backward:
            shape = concrete(derivation.symbols.table[step.target].shape, sizes)
            value = torch.broadcast_to(evaluator(step.result), shape)
            env[step.target] = value
            tensor = nodes[by_name[step.of].id]
            # A value autograd does not track (the output of a comparison or step) has no .grad.
            if step.partial is None and tensor.requires_grad:
                compare("adjoint", step.of, value, _grad(torch, tensor))
        for name, grad in derivation.gradients.items():
            fresh = Evaluator({k: v for k, v in env.items() if k in leaves or k == derivation.seed.name}, sizes)
            value = fresh(grad.expr) if grad.in_inputs else evaluator(grad.expr)
            compare("gradient", name, value, _grad(torch, leaves[name]))
        if point == 0:
            for step in derivation.forward:
                actual = nodes[by_name[step.name].id].grad_fn
                actual_name = actual.name() if actual is not None else None
                if step.grad_fn is not None or actual_name is not None:
                    ok = actual_name == step.grad_fn or not nodes[by_name[step.name].id].requires_grad
                    report.grad_fns.append(
                        Check(step.name, ok, 0.0, 0.0, "grad_fn", f"declared {step.grad_fn}, torch {actual_name}")
                    )

    def checks(kind: str) -> list[Check]:
        return [
            Check(name, fails == 0, abs_err, rel_err, kind, f"{fails} of {points} points differ" if fails else "")
            for (k, name), (abs_err, rel_err, fails) in errors.items()
            if k == kind
        ]

    report.forward = checks("forward")
    report.adjoints = checks("adjoint")
    report.gradients = checks("gradient")
    return report


def _grad(torch, tensor):
    """The gradient autograd left on a tensor; zeros where autograd never reached it."""
    if tensor.grad is None:
        return torch.zeros_like(tensor)
    return tensor.grad


def _draw_point(torch, generator, graph, derivation, sizes, domains, requires, point: int):
    """Leaves inside their domains, redrawn until every op's input is inside the op's domain."""
    at = derivation.at if point == 0 and derivation.at else None
    for _ in range(MAX_DRAWS):
        leaves = {}
        for v in graph.variables:
            if at is not None:
                value = torch.tensor(at[v.name], dtype=torch.float64)
            else:
                value = draw(torch, generator, concrete(v.shape, sizes), domains[v.name], sizes)
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
