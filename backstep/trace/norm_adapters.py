"""The normalisation layers the tracer knows: nn.LayerNorm and F.layer_norm, nn.BatchNorm1d/2d and
F.batch_norm, as backstep's layer_norm and batch_norm (ops/norms.py).

backstep's batch_norm is the training-mode layer, normalised by the batch's own statistics. A
BatchNorm module in eval mode that tracks running statistics normalises by those instead, a
different function of x: it is refused, as F.batch_norm with training=False is. In training mode
torch also updates the running statistics, which does not change the output. layer_norm
normalises the last axis only: a normalized_shape of several axes is refused. A layer without
its affine parameters scales by 1 and shifts by 0. This module imports torch: the walk imports
it only when it traces.
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .registry import Unmapped, adapts, spell
from .torch_ops import op_of


def spelled(op, x: str, scale: str | None, shift: str | None, eps) -> str:
    """The layer in backstep's language; eps only where it is not the default."""
    operands = [x, "1" if scale is None else scale, "0" if shift is None else shift]
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise Unmapped(f"with eps={eps!r}; backstep takes a positive number")
    default = op.param("eps").default
    if float(eps) != default:
        operands.append(f"eps={float(eps)!r}")
    return spell(op, operands)


def last_axis_only(w, x: str, normalized_shape) -> None:
    """layer_norm over the last axis: a normalized_shape of one size, x's last where that is known."""
    sizes = tuple(normalized_shape) if isinstance(normalized_shape, (tuple, list)) else (normalized_shape,)
    if len(sizes) != 1 or not isinstance(sizes[0], int):
        raise Unmapped(
            f"with normalized_shape={tuple(sizes)!r}; backstep's layer_norm normalises the last axis only, "
            "normalized_shape=(D,)"
        )
    known = w.annotations.get(x)
    if known and isinstance(known[-1], int) and known[-1] != sizes[0]:
        raise Unmapped(f"with normalized_shape=({sizes[0]},) on an input whose last axis has {known[-1]} entries")


def affine(w, node, target: str, tensor) -> str | None:
    return None if tensor is None else w.parameter(f"{node.target}.{target}", tensor, node)


@adapts(nn.LayerNorm)
def layer_norm_module(w, node, mod, x):
    last_axis_only(w, x, mod.normalized_shape)
    scale, shift = affine(w, node, "weight", mod.weight), affine(w, node, "bias", getattr(mod, "bias", None))
    return spelled(op_of(F.layer_norm), x, scale, shift, mod.eps)


@adapts(F.layer_norm)
def layer_norm_function(w, node, args, kw):
    names = ["input", "normalized_shape", "weight", "bias", "eps"]
    p = dict(zip(names, args))
    p.update(kw)
    x = w.arg(node, p["input"])
    last_axis_only(w, x, p.get("normalized_shape"))
    scale = None if p.get("weight") is None else w.arg(node, p["weight"])
    shift = None if p.get("bias") is None else w.arg(node, p["bias"])
    return spelled(op_of(F.layer_norm), x, scale, shift, p.get("eps", 1e-5))


@adapts(nn.BatchNorm1d, nn.BatchNorm2d)
def batch_norm_module(w, node, mod, x):
    # torch's own rule: batch statistics while training, or where no running statistics are kept
    uses_batch_stats = mod.training or (mod.running_mean is None and mod.running_var is None)
    if not uses_batch_stats:
        raise Unmapped(
            "in eval mode normalises by its running statistics; backstep's batch_norm is the training-mode "
            "layer: call model.train(), or create it with track_running_stats=False"
        )
    rank = 4 if isinstance(mod, nn.BatchNorm2d) else 2  # backstep's batch_norm takes no (N, C, L)
    known = w.annotations.get(x)
    if known is not None and len(known) != rank:
        raise Unmapped(f"on an input of rank {len(known)}; backstep takes it on inputs of rank {rank}")
    scale, shift = affine(w, node, "weight", mod.weight), affine(w, node, "bias", mod.bias)
    return spelled(op_of(F.batch_norm), x, scale, shift, mod.eps)


@adapts(F.batch_norm)
def batch_norm_function(w, node, args, kw):
    names = ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"]
    p = dict(zip(names, args))
    p.update(kw)
    if not p.get("training", False):
        raise Unmapped(
            "with training=False normalises by the running statistics; backstep's batch_norm is the "
            "training-mode layer: give training=True"
        )
    x = w.arg(node, p["input"])
    scale = None if p.get("weight") is None else w.arg(node, p["weight"])
    shift = None if p.get("bias") is None else w.arg(node, p["bias"])
    return spelled(op_of(F.batch_norm), x, scale, shift, p.get("eps", 1e-5))
