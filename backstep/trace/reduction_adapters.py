"""The tracer's adapters for torch's reductions over several axes and for the largest entry:
torch.sum/mean/var/std/logsumexp with dim=(0, 2, 3), torch.amax/amin, torch.max/min (of all
entries, along a dim as (values, indices), or of two tensors: maximum/minimum), torch.argmax/argmin
and torch.linalg.vector_norm / torch.norm with a dim.
"""

from __future__ import annotations

import torch

from ..ops.rules import fmt_axis
from .registry import SizeOf, Unmapped, adapts, adapts_method, only, spell
from .torch_ops import op_of


def function_of(node):
    """The torch function a call is: x.sum(...) is torch.sum(x, ...)."""
    return getattr(torch, node.target) if isinstance(node.target, str) else node.target


def axis_text(dim) -> str | None:
    """dim= as backstep's axis=: an integer, a tuple of them (a one-element one is its axis), or None
    for every axis (no dim, or an empty one: torch reduces every axis then)."""
    if dim is None:
        return None
    if isinstance(dim, (tuple, list)):
        if not dim:
            return None
        if not all(isinstance(d, int) and not isinstance(d, bool) for d in dim):
            raise Unmapped(f"with dim={dim!r}; backstep takes integers")
        return str(dim[0]) if len(dim) == 1 else fmt_axis(tuple(dim))
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise Unmapped(f"with dim={dim!r}; backstep takes an integer or a tuple of integers")
    return str(dim)


def reduction_text(op, x: str, dim, keep, extra: tuple[str, ...] = ()) -> str:
    parts = [x]
    axis = axis_text(dim)
    if axis is not None:
        parts.append(f"axis={axis}")
    parts += list(extra)
    if keep:
        parts.append("keepdims=True")
    return spell(op, parts)


# --- sum, mean, logsumexp ------------------------------------------------------------------------


@adapts(torch.sum, torch.mean)
def sum_or_mean(w, node, args, kw) -> str:
    target = function_of(node)
    if kw.get("dtype") is not None:
        raise Unmapped("with a dtype")
    dim = args[1] if len(args) > 1 else kw.get("dim", kw.get("axis"))
    keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
    return reduction_text(op_of(target), w.arg(node, args[0]), dim, keep)


@adapts(torch.logsumexp)
def logsumexp(w, node, args, kw) -> str:
    dim = args[1] if len(args) > 1 else kw.get("dim")
    keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
    return reduction_text(op_of(torch.logsumexp), w.arg(node, args[0]), dim, keep)


# --- var, std ------------------------------------------------------------------------------------


@adapts(torch.var, torch.std)
def spread(w, node, args, kw) -> str:
    """torch.var / torch.std: (x, dim, *, correction, keepdim) and the older (x, [dim,] unbiased, keepdim)."""
    target = function_of(node)
    rest = list(args[1:])
    if rest and isinstance(rest[0], bool):  # torch.var(x, False): unbiased without a dim
        rest.insert(0, None)
    dim = rest[0] if rest else kw.get("dim")
    unbiased = rest[1] if len(rest) > 1 else kw.get("unbiased")
    keep = rest[2] if len(rest) > 2 else kw.get("keepdim", False)
    correction = kw.get("correction")
    if unbiased is not None and correction is not None:
        raise Unmapped("with both unbiased= and correction=")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    if not isinstance(correction, int) or isinstance(correction, bool):
        raise Unmapped(f"with correction={correction!r}; backstep takes an integer")
    extra = () if correction == 1 else (f"correction={correction}",)
    return reduction_text(op_of(target), w.arg(node, args[0]), dim, keep, extra)


# --- the largest and smallest entry, and where it is ---------------------------------------------


@adapts(torch.amax, torch.amin)
def amax(w, node, args, kw) -> str:
    target = function_of(node)
    dim = args[1] if len(args) > 1 else kw.get("dim")
    keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
    return reduction_text(op_of(target), w.arg(node, args[0]), dim, keep)


@adapts(torch.argmax, torch.argmin)
def argmax(w, node, args, kw) -> str:
    target = function_of(node)
    dim = args[1] if len(args) > 1 else kw.get("dim")
    keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
    if isinstance(dim, (tuple, list)):
        raise Unmapped("over several axes; torch's argmax takes one dim")
    return reduction_text(op_of(target), w.arg(node, args[0]), dim, keep)


class ValuesAndIndices(SizeOf):
    """torch.max(x, dim): a (values, indices) pair, read by [0] / .values (max) and [1] / .indices
    (argmax); held by the walk like a size, never written as a statement of its own."""

    def __init__(self, node, axis: int, keep: bool, values, indices, x: str):
        super().__init__(node, axis)
        self.keep, self.values, self.indices, self.x = keep, values, indices, x

    def text(self, which: str) -> str:
        target = self.values if which == "values" else self.indices
        return reduction_text(op_of(target), self.x, self.axis, self.keep)


@adapts(torch.max, torch.min)
def max_or_min(w, node, args, kw):
    """torch.max(x) (every entry), torch.max(x, dim[, keepdim]) ((values, indices)) and
    torch.max(a, b) of two tensors (the elementwise maximum)."""
    is_max = function_of(node) is torch.max
    other = args[1] if len(args) > 1 else kw.get("other")
    if isinstance(other, torch.fx.Node):
        maximum = op_of(torch.maximum if is_max else torch.minimum)
        return spell(maximum, [w.arg(node, args[0]), w.arg(node, other)])
    only({k: v for k, v in kw.items() if k not in ("dim", "keepdim", "other")})
    x = w.arg(node, args[0])
    dim = other if other is not None else kw.get("dim")
    if dim is None:
        return reduction_text(op_of(torch.amax if is_max else torch.amin), x, None, False)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise Unmapped(f"with dim={dim!r}; torch.max takes one dim")
    keep = args[2] if len(args) > 2 else kw.get("keepdim", False)
    values, indices = (torch.amax, torch.argmax) if is_max else (torch.amin, torch.argmin)
    return ValuesAndIndices(args[0], dim, bool(keep), values, indices, x)


@adapts_method(torch.Tensor.max, torch.Tensor.min)
def max_or_min_method(w, node, args, kw):
    return max_or_min(w, node, args, kw)


def values_or_indices(w, args) -> str | None:
    """The values or indices of torch.max(x, dim): `result[0]`, `result.indices` (the subscript and
    the attribute adapters ask this first); None for anything else."""
    base = w.value.get(args[0]) if isinstance(args[0], torch.fx.Node) else None
    if not isinstance(base, ValuesAndIndices):
        return None
    if args[1] in (0, "values"):
        return base.text("values")
    if args[1] in (1, "indices"):
        return base.text("indices")
    return None


# --- the 2-norm along axes -----------------------------------------------------------------------


@adapts(torch.linalg.norm, torch.norm, torch.linalg.vector_norm)
def norm(w, node, args, kw) -> str:
    """The 2-norm of every entry, or along a dim (torch.linalg.vector_norm(x, dim=k)); a matrix
    norm of a dim pair (torch.linalg.norm(x, dim=(0, 1))) is the Frobenius norm, the same."""
    vector = node.target is torch.linalg.vector_norm
    order = args[1] if len(args) > 1 else kw.get("ord", kw.get("p"))
    dim = args[2] if len(args) > 2 else kw.get("dim")
    keep = args[3] if len(args) > 3 else kw.get("keepdim", False)
    if order not in (None, 2, 2.0) and not (order == "fro" and not vector):
        raise Unmapped(f"with the order {order!r}; backstep's norm is the 2-norm")
    if kw.get("dtype") is not None:
        raise Unmapped("with a dtype")
    return reduction_text(op_of(torch.norm), w.arg(node, args[0]), dim, keep)
