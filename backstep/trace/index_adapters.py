"""The torch spellings of picking by integer arrays, as backstep text: nn.Embedding and F.embedding
(embedding(ix, E)), and torch.gather of one entry per row (pick(P, y)).

Only what the op table means is written: an embedding with padding_idx, max_norm or
scale_grad_by_freq changes its gradient (or its table) and is refused; a gather is read where its
index is one integer per row along the last axis, `P.gather(-1, y.unsqueeze(-1))` (or `y.view(-1, 1)`,
`y[:, None]`), which is pick(P, y) with that axis kept. This module imports torch: the walk imports
it only when it traces.
"""

from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import SizeOf, Unmapped, adapts, adapts_method, spell
from .torch_ops import op_of, op_of_module

# What torch's embedding does beyond picking rows, with the value at which it does nothing more.
EMBEDDING_DEFAULTS = {"padding_idx": None, "max_norm": None, "norm_type": 2.0, "scale_grad_by_freq": False}


def plain_embedding(settings: dict) -> None:
    """Refuse the embedding settings that change what is picked or its gradient."""
    for key, default in EMBEDDING_DEFAULTS.items():
        value = settings.get(key, default)
        if value != default and not (key == "norm_type" and settings.get("max_norm") is None):
            raise Unmapped(
                f"with {key}={value!r}; backstep's embedding is the plain lookup E[ix] (no padding_idx, "
                "max_norm or scale_grad_by_freq): drop it"
            )


@adapts(nn.Embedding)
def embedding_module(w, node, mod, x):
    plain_embedding(
        {
            "padding_idx": mod.padding_idx,
            "max_norm": mod.max_norm,
            "norm_type": mod.norm_type,
            "scale_grad_by_freq": mod.scale_grad_by_freq,
        }
    )
    table = w.parameter(f"{node.target}.weight", mod.weight, node)
    return spell(op_of_module(mod), [x, table])


@adapts(F.embedding)
def embedding_function(w, node, args, kw):
    names = ["input", "weight", "padding_idx", "max_norm", "norm_type", "scale_grad_by_freq", "sparse"]
    p = dict(zip(names, args))
    p.update(kw)
    plain_embedding(p)
    return spell(op_of(F.embedding), [w.arg(node, p["input"]), w.arg(node, p["weight"])])


# --- gather: one entry per row -------------------------------------------------------------------


# fx's targets for these spellings: the torch function, or the tensor method's name (call_method)
UNSQUEEZE = (torch.unsqueeze, torch.Tensor.unsqueeze.__name__)
RESHAPE = (torch.reshape, torch.Tensor.reshape.__name__, torch.Tensor.view.__name__)
GATHER = (torch.gather, torch.Tensor.gather.__name__)


def rows_index(index):
    """The fx node y that `index` lays out as one integer per row of a matrix, y (N,) as (N, 1):
    y.unsqueeze(1), y.unsqueeze(-1), y.view(-1, 1), y.reshape(-1, 1) or y[:, None]; else None."""
    if not isinstance(index, torch.fx.Node) or not index.args:
        return None
    target, args = index.target, list(index.args)
    if target in UNSQUEEZE:
        dim = args[1] if len(args) > 1 else index.kwargs.get("dim")
        return args[0] if dim in (1, -1) else None
    if target in RESHAPE:
        sizes = args[1:] if len(args) > 2 else list(args[1]) if len(args) == 2 else []
        return args[0] if list(sizes) == [-1, 1] else None
    if target is operator.getitem and len(args) == 2 and args[1] == (slice(None), None):
        return args[0]
    return None


def gathered_rows(w, node, args, kw):
    """(P, y) of P.gather(1, y.unsqueeze(1)) with y an input of shape (N,): one entry of each row."""
    p = dict(zip(["input", "dim", "index"], args))
    p.update(kw)
    if p.get("sparse_grad"):
        raise Unmapped("with sparse_grad=True")
    y = rows_index(p.get("index"))
    shape = w.annotations.get(w.value.get(y)) if y is not None else None
    if p.get("dim") not in (1, -1) or shape is None or len(shape) != 1:
        raise Unmapped(
            "except as one entry per row of a matrix, P.gather(1, y.unsqueeze(1)) with y an input of shape (N,) "
            "(NumPy's P[np.arange(N), y]), which backstep writes pick(P, y)"
        )
    return w.arg(node, p["input"]), w.arg(node, y)


@adapts(torch.gather)
def gather(w, node, args, kw):
    picked = spell(op_of(torch.gather), list(gathered_rows(w, node, args, kw)))
    return f"{op_of(torch.unsqueeze).syntax}({picked}, axis=1)"  # torch keeps the gathered axis: (N, 1)


@adapts_method(torch.Tensor.gather)
def gather_method(w, node, args, kw):
    return gather(w, node, args, kw)


@adapts_method(torch.Tensor.squeeze)
def squeeze(w, node, args, kw):
    """`.squeeze(1)` of a gather of one entry per row: pick(P, y), of shape (N,)."""
    x = args[0]
    dim = args[1] if len(args) > 1 else kw.get("dim")
    is_gather = isinstance(x, torch.fx.Node) and x.target in GATHER
    if not is_gather or dim not in (1, -1):
        raise Unmapped("except as .squeeze(1) of P.gather(1, y.unsqueeze(1)), which backstep writes pick(P, y)")
    return spell(op_of(torch.gather), list(gathered_rows(w, x, list(x.args), dict(x.kwargs))))


# --- P[torch.arange(N), y]: one entry per row, by advanced indexing ----------------------------------


class Arange(SizeOf):
    """`torch.arange(n)`: the row numbers 0 … n−1, usable only to pick one entry per row (P[arange, y])."""

    count: object = None  # n: an int, or the SizeOf it was given


# What torch.arange(n) may also be given: they change where it lives, not its values.
ARANGE_KEYWORDS = {"dtype", "device", "layout", "pin_memory", "requires_grad"}


@adapts(torch.arange)
def arange(w, node, args, kw):
    if len(args) != 1 or set(kw) - ARANGE_KEYWORDS:  # torch.arange(n) only: no start, end or stride
        raise Unmapped("except as torch.arange(n) in P[torch.arange(n), y] (one entry per row: pick(P, y))")
    count = w.value.get(args[0]) if isinstance(args[0], torch.fx.Node) else args[0]
    found = Arange(node, None)
    found.count = count
    return found


def rows_pick(w, node, args) -> str | None:
    """`P[torch.arange(N), y]` as pick(P, y), where arange counts P's rows (P.shape[0], y.shape[0] or the
    annotated size); None where the subscript is not of that form. (join_adapters.getitem asks this first.)"""
    if len(args) != 2 or not isinstance(args[1], tuple) or len(args[1]) != 2:
        return None
    rows, y = args[1]
    found = w.value.get(rows) if isinstance(rows, torch.fx.Node) else None
    if not isinstance(found, Arange) or not isinstance(y, torch.fx.Node):
        return None
    source = args[0]
    count = found.count
    shapes = [w.annotations.get(w.value.get(t)) for t in (source, y)]  # known for inputs and parameters
    if isinstance(count, SizeOf):
        counted = w.annotations.get(w.value.get(count.node)) if count.axis == 0 else None
        counts_rows = count.axis == 0 and (count.node in (source, y) or any(s and counted[:1] == s[:1] for s in shapes))
    else:
        counts_rows = isinstance(count, int) and any(s and s[0] == count for s in shapes)
    if not counts_rows:
        raise Unmapped("with a torch.arange that is not P's number of rows: write P[torch.arange(P.shape[0]), y]")
    return spell(op_of(torch.gather), [w.arg(node, source), w.arg(node, y)])
