"""Points to evaluate at: random values inside each input's domain, the sizes the symbolic
dimensions take, and the tolerances two evaluations are compared with.

Every numeric comparison backstep makes (verification against torch autograd, ``backstep check``,
``backstep codegen --against``) draws its points here: float64 values inside each variable's
domain, redrawn until every op's input is inside the op's domain (away from kinks and poles), at
distinct, non-square sizes for the symbolic dimensions (so that a missing transpose cannot hide).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import DomainError
from ..ops import DOMAINS, ONE_HOT_ROWS
from ..shapes import SAMPLE_SIZES, concrete, free_sizes, sample_sizes  # noqa: F401  (re-exported: defined with the shapes)
from .evaluate import concrete_params, const_value

# How often a point is drawn again before backstep gives up on finding one inside every domain.
MAX_DRAWS = 200
# Where a drawn point overflows, it is drawn again, nearer 0 (the plain domains only): these scales.
DRAW_SCALES = (1.0, 1.0, 0.1, 0.01, 0.001)
# A second set of sizes, each different from the first set's size of the same dimension, so that a
# factor such as 1/n (a mean) can be told from a constant.
SECOND_SIZES = [3, 4, 7, 5, 6, 2, 9, 8, 11, 13, 10, 14, 12, 16, 17, 18, 19]


# --- tolerances ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tolerance:
    """When two float64 arrays agree: `torch.allclose` with the absolute tolerance scaled by the
    largest magnitude of the reference (at least 1), so that large values are compared relatively."""

    rtol: float
    atol: float

    def close(self, torch, value, reference) -> bool:
        scale = float(reference.abs().max()) if reference.numel() else 0.0
        return bool(torch.allclose(value, reference, rtol=self.rtol, atol=self.atol * max(1.0, scale)))


# backstep's symbolic values against torch autograd (verification, check): both float64.
TOLERANCE = Tolerance(1e-7, 1e-9)
# A user's autograd.Function against the derived one (codegen --against): the user's may compute differently.
AGAINST_TOLERANCE = Tolerance(1e-6, 1e-8)


# --- sizes ---------------------------------------------------------------------------------------------


def point_sizes(derivation) -> dict[str, int]:
    """The sizes a derivation is evaluated at: those of its --at values, else SAMPLE_SIZES."""
    return derivation.sizes or sample_sizes(derivation.dims)


def size_sets(dims: list[str], taken: Iterable[int] = ()) -> list[dict[str, int]]:
    """Two sets of distinct sizes for the dimensions (one set when there are none), neither using a
    size in `taken` (the fixed sizes of the formula): SAMPLE_SIZES' order, then SECOND_SIZES'."""
    taken = set(taken)
    first = free_sizes(taken)
    beyond = (s for s in itertools.count(20) if s not in taken)
    second = itertools.chain((s for s in SECOND_SIZES if s not in taken), beyond)
    sets = [dict(zip(dims, first))]
    if dims:
        sets.append(dict(zip(dims, second)))
    return sets


# --- values inside a domain ----------------------------------------------------------------------------


def draw(
    torch, generator, shape: tuple[int, ...], domain: str, sizes: dict[str, int] | None = None, scale: float = 1.0
):
    """A random array inside a domain, in float64; `scale` < 1 narrows the plain domains (real,
    positive, nonnegative, nonzero) towards 0, to find a point where a function does not overflow."""
    value = _draw(torch, generator, shape, domain, sizes)
    if scale != 1.0 and domain in ("real", "positive", "nonnegative", "nonzero"):
        return scale * value
    return value


def _draw(torch, generator, shape, domain, sizes):
    u = torch.rand(shape, generator=generator, dtype=torch.float64)
    if domain.startswith("class_index"):
        classes = domain.split(":", 1)[1]
        count = int(classes) if classes.isdigit() else (sizes or {})[classes]
        return with_a_repeat(torch.floor(u * count).clamp(max=count - 1))
    if domain in ("spd", "invertible", "symmetric", "orthogonal") and (len(shape) != 2 or shape[0] != shape[1]):
        raise DomainError(f"a {domain} matrix must be square, not of shape {shape}")
    if domain == "spd":
        m = 2.0 * u - 1.0
        return m @ m.T / shape[0] + torch.eye(shape[0], dtype=torch.float64)
    if domain == "invertible":  # general and non-symmetric, but well conditioned
        return 2.0 * u - 1.0 + (1.0 + shape[0] ** 0.5) * torch.eye(shape[0], dtype=torch.float64)
    if domain == "symmetric":
        m = 2.0 * u - 1.0
        return (m + m.T) / 2
    if domain == "orthogonal":
        q, r = torch.linalg.qr(2.0 * u - 1.0)
        return q * torch.sign(torch.diagonal(r))
    if domain == "probability":
        return torch.softmax(4.0 * u - 2.0, dim=-1)
    if domain == ONE_HOT_ROWS:
        index = torch.argmax(u, dim=-1, keepdim=True)
        return torch.zeros(shape, dtype=torch.float64).scatter_(-1, index, 1.0)
    if domain == "positive":
        return 0.5 + 1.5 * u
    if domain == "nonnegative":
        return 2.0 * u
    if domain == "nonzero":
        sign = torch.where(torch.rand(shape, generator=generator, dtype=torch.float64) < 0.5, -1.0, 1.0)
        return sign * (0.5 + 1.5 * u)
    return 4.0 * u - 2.0


def with_a_repeat(indices):
    """Integer indices in which some value occurs twice (the last entry is set to the first where none
    does): a row picked twice must get the sum of both gradients, the scatter-add a check must see."""
    flat = indices.reshape(-1)
    if flat.numel() >= 2 and flat.unique().numel() == flat.numel():
        flat[-1] = flat[0]
    return indices


def in_domain(torch, domain: str | None, value) -> bool:
    """Is an op's input value inside the op's declared domain (away from kinks and poles)? The test is
    the domain's own (Domain.contains, in the op table); a domain without one takes every value."""
    known = DOMAINS.get(domain) if domain is not None else None
    return known is None or known.contains is None or known.contains(torch, value)


def guarded(torch, node, domain: str | None, value) -> bool:
    """A value positive by construction (maximum(q, 1e-12), clamp(x, min=1e-6), exp(x) ⊙ w with w
    positive, a softmax) is inside a domain that asks for positive or nonzero values even where it is
    tiny: the program means it, and the gradient through it is finite there."""
    if domain not in ("positive", "nonzero") or not positive_by_construction(node):
        return False
    return bool((value > 0).all())


def positive_by_construction(node) -> bool:
    """Whether the node's value is positive whatever its variables (its op's positive_when)."""
    if node.is_const:
        return bool(node.value.is_positive)
    op = getattr(node, "op", None)
    return op is not None and op.positive_when is not None and op.positive_when(node, positive_by_construction)


def op_input_domain(node, i: int) -> str | None:
    """The domain an op asks of its i-th input, at this node (pow's base depends on its exponent)."""
    declared = node.op.domain[i] if node.op.domain else None
    if declared == "pow_base":
        exponent = node.inputs[1]
        if exponent.is_const and exponent.value.is_integer:
            return "nonzero" if exponent.value.is_negative else None
        return "positive"
    return declared


# --- a point: every variable, and the graph run in torch ---------------------------------------------


def draw_leaves(torch, generator, derivation, sizes: dict[str, int], scale: float = 1.0, at=None, rounded=False):
    """A float64 value for every variable, inside its domain (or its value in `at`), requiring grad as
    the derivation says; `scale` < 1 narrows the plain domains towards 0 (see `draw`), `rounded`
    rounds the drawn values to one decimal (a counterexample one can read)."""
    leaves = {}
    for v in derivation.variables:
        if at is not None:
            value = torch.tensor(at[v.name], dtype=torch.float64)
        else:
            value = draw(torch, generator, concrete(v.shape, sizes), v.domain, sizes, scale)
            if rounded:
                value = torch.round(value * 10) / 10
        leaves[v.name] = value.requires_grad_(v.requires_grad)
    return leaves


def draw_seed(torch, generator, derivation, sizes: dict[str, int], rounded: bool = False):
    """The upstream gradient of the output: 1 for a scalar output, else drawn in the reals."""
    if derivation.seed.is_one:
        return torch.ones((), dtype=torch.float64)
    value = draw(torch, generator, concrete(derivation.seed.shape, sizes), "real")
    return torch.round(value * 10) / 10 if rounded else value


def run_graph(torch, graph, leaves: dict, sizes: dict[str, int]):
    """The forward pass of the parsed graph in torch (each intermediate retains its grad); returns
    (the tensor of each node id, None) or (…, what left a domain: the op's input and where)."""
    nodes = {}
    for n in graph.nodes:
        if n.kind == "var":
            nodes[n.id] = leaves[n.name]
            continue
        args = []
        for i, a in enumerate(n.inputs):
            value = const_value(torch, a, sizes) if a.is_const else nodes[a.id]
            domain = op_input_domain(n, i)
            if not in_domain(torch, domain, value) and not guarded(torch, a, domain, value):
                where = f" (line {n.place.line}, column {n.place.col})" if n.place else ""
                return nodes, f"the input of {n.op.syntax} at {n.name}{where} must be {domain.replace('_', ' ')}"
            args.append(value)
        t = n.op.torch(torch, args, concrete_params(n.params, sizes))
        if t.requires_grad:
            t.retain_grad()
        nodes[n.id] = t
    return nodes, None


def draw_point(torch, generator, derivation, sizes: dict[str, int], point: int = 0, scale: float = 1.0):
    """Leaves inside their domains, redrawn until every op's input is inside the op's domain (the
    derivation's --at values at point 0, if it has them); returns (leaves, the tensor of each node)."""
    at = derivation.at if point == 0 and derivation.at else None
    for _ in range(MAX_DRAWS):
        leaves = draw_leaves(torch, generator, derivation, sizes, scale, at)
        nodes, bad = run_graph(torch, derivation.graph, leaves, sizes)
        if bad is None:
            return leaves, nodes
        if at is not None:
            raise DomainError(f"the --at point is outside the domain: {bad}")
    raise DomainError(f"could not draw a point inside every function's domain in {MAX_DRAWS} tries: {bad}")


def overflow_error(what: str, at_given: bool = False) -> DomainError:
    """The refusal when no point drawn has finite values: the input's range, not a bug in backstep."""
    if at_given:
        return DomainError(f"the function is not finite at the --at point ({what}); verification needs finite values")
    verb = "overflows" if "inf" in what else "is not finite"
    return DomainError(
        f"the function {verb} at every point drawn ({what}); verification needs finite values "
        "— use --no-verify or rescale"
    )
