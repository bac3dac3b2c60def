"""Verification: the same graph built in torch, compared with the symbolic derivation.

At several random float64 points (inside each op's domain; distinct, non-square sizes for the
symbolic dimensions) the parsed graph is run as torch operations and backpropagated by
autograd — leaves' ``.grad`` and every intermediate's ``retain_grad()``. Independently, the
derivation's *symbolic* expressions are evaluated numerically by backstep's own evaluator (no
autograd): every forward step, every backward step, every final gradient (expanded, and in the
named form the documents show, with the named adjoints it refers to). Each pair must agree.
"""

from __future__ import annotations

import math

from .model import Check, Derivation, Verification
from .numeric import (
    DRAW_SCALES,
    MAX_ELEMENTS,
    TOLERANCE,
    check_point_size,
    draw_point,
    draw_seed,
    nonfinite,
    overflow_error,
    point_sizes,
    run_steps,
    step_text,
    torch_module,
)

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
    sizes = point_sizes(derivation)
    check_point_size(derivation, sizes, max_elements)
    report = Verification(points=points, dtype="float64", sizes=sizes, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    errors: dict[tuple[str, str], list[float]] = {}  # (kind, name) -> [abs err, rel err, fails]

    def compare(kind: str, name: str, symbolic, autograd) -> None:
        symbolic = torch.broadcast_to(symbolic, autograd.shape) if symbolic.shape != autograd.shape else symbolic
        diff = (symbolic - autograd).abs()
        abs_err = float(diff.max()) if diff.numel() else 0.0
        scale = float(autograd.abs().max()) if autograd.numel() else 0.0
        ok = TOLERANCE.close(torch, symbolic, autograd)
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
                torch, generator, derivation, sizes, point, scale, by_name, pending
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


def _try_point(torch, generator, derivation, sizes, point, scale, by_name, pending):
    """One point: torch's forward and backward, backstep's own evaluation; the comparisons to make
    go to `pending`. Returns (leaves, nodes, seed value, None), or (…, what is not finite) when
    torch's values, autograd's gradients or backstep's forward values are not all finite there."""
    graph = derivation.graph
    leaves, nodes = draw_point(torch, generator, derivation, sizes, point, scale)
    seed_value = draw_seed(torch, generator, derivation, sizes)
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
    run = run_steps(derivation, env, sizes)
    for step, value in run.forward():
        number = nonfinite(torch, value)
        if number is not None:
            return leaves, nodes, seed_value, f"value {number} at step {step_text(derivation, step)}"
        pending.append(("forward", step.name, value, nodes[by_name[step.name].id].detach()))
    for step, value in run.backward():
        tensor = nodes[by_name[step.of].id]
        # A value autograd does not track (the output of a comparison or step) has no .grad.
        if step.partial is None and tensor.requires_grad:
            pending.append(("adjoint", step.of, value, _grad(torch, tensor)))
    # (a gradient in terms of the inputs is evaluated knowing only the inputs: see StepRun.gradients)
    for name, value in run.gradients():
        pending.append(("gradient", name, value, _grad(torch, leaves[name])))
    # The named forms the documents show, at the steps' values: each must agree with autograd too.
    for name, gradient in derivation.gradients.items():
        if gradient.named is not None:
            pending.append(("gradient", name, run.evaluator(gradient.named), _grad(torch, leaves[name])))
    for adjoint in derivation.named_adjoints:  # (a partial contribution is checked within its gradient)
        tensor = nodes[by_name[adjoint.of].id]
        if adjoint.partial is None and tensor.requires_grad:
            pending.append(("adjoint", adjoint.of, run.evaluator(adjoint.expr), _grad(torch, tensor)))
    return leaves, nodes, seed_value, None


def _grad(torch, tensor):
    """The gradient autograd left on a tensor; zeros where autograd never reached it."""
    if tensor.grad is None:
        return torch.zeros_like(tensor)
    return tensor.grad
